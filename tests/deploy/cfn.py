"""Resolve the few CloudFormation intrinsics our policy and merge template use, with real names.

The IAM test must run the very policy that ships, so it takes `.chalice/policy-<stage>.json` (written with
CloudFormation references) and substitutes what CloudFormation would. An unknown reference is an error,
so a policy naming something the template does not define fails the test instead of passing silently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_SUB_VAR = re.compile(r"\$\{([^}!][^}]*)\}")


class UnresolvedReference(KeyError):
    pass


def _lookup(names: Mapping[str, str], key: str) -> str:
    if key not in names:
        raise UnresolvedReference(key)
    return names[key]


def resolve(node: Any, names: Mapping[str, str]) -> Any:
    """`node` with Ref, Fn::GetAtt and Fn::Sub replaced; `names` maps "Res", "Res.Attr", "AWS::Region"..."""
    if isinstance(node, list):
        return [resolve(item, names) for item in node]
    if not isinstance(node, dict):
        return node
    if set(node) == {"Ref"}:
        return _lookup(names, node["Ref"])
    if set(node) == {"Fn::GetAtt"}:
        res, attr = node["Fn::GetAtt"]
        return _lookup(names, f"{res}.{attr}")
    if set(node) == {"Fn::Sub"}:
        value = node["Fn::Sub"]
        local: dict[str, str] = {}
        if isinstance(value, list):
            value, extra = value
            local = {k: resolve(v, names) for k, v in extra.items()}
        return _SUB_VAR.sub(lambda m: local.get(m.group(1)) or _lookup(names, m.group(1)), value)
    if any(key.startswith("Fn::") for key in node):
        raise UnresolvedReference(next(iter(node)))
    return {key: resolve(value, names) for key, value in node.items()}
