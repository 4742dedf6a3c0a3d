"""Resolve the few CloudFormation intrinsics our policy and merge template use, with real names.

The IAM test must run the very policy that ships, so it takes `.chalice/policy-<stage>.json` (written with
CloudFormation references) and substitutes what CloudFormation would. An unknown reference is an error,
so a policy naming something the template does not define fails the test instead of passing silently.

Conditions (`Fn::If`, `Fn::Equals`, `Fn::Not`, `Fn::And`, `Fn::Or`, `{"Condition": ...}`) are evaluated
from the template's `Conditions` with the given parameter values, as CloudFormation would; `AWS::NoValue`
removes the property (or list item) that holds it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_SUB_VAR = re.compile(r"\$\{([^}!][^}]*)\}")
_NO_VALUE = object()


class UnresolvedReference(KeyError):
    pass


def _lookup(names: Mapping[str, str], key: str) -> Any:
    if key == "AWS::NoValue":
        return _NO_VALUE
    if key not in names:
        raise UnresolvedReference(key)
    return names[key]


def conditions(template: Mapping[str, Any], names: Mapping[str, Any]) -> dict[str, bool]:
    """Every condition of `template`, evaluated with `names` (parameter values and pseudo parameters); a
    parameter not in `names` has its Default, as in a deploy that does not set it."""
    defaults = {k: v["Default"] for k, v in template.get("Parameters", {}).items() if "Default" in v}
    names = {**defaults, **names}
    defined = template.get("Conditions", {})
    done: dict[str, bool] = {}

    def evaluate(name: str, seen: tuple[str, ...] = ()) -> bool:
        if name in seen:
            raise ValueError(f"condition {name} refers to itself")
        if name not in done:
            if name not in defined:
                raise UnresolvedReference(f"Condition {name}")
            done[name] = _truth(defined[name], lambda n: evaluate(n, (*seen, name)), names)
        return done[name]

    return {name: evaluate(name) for name in defined}


def _truth(node: Any, condition: Any, names: Mapping[str, Any]) -> bool:
    if not isinstance(node, dict) or len(node) != 1:
        raise ValueError(f"not a condition: {node!r}")
    ((fn, args),) = node.items()
    if fn == "Condition":
        return bool(condition(args))
    if fn == "Fn::Equals":
        left, right = (resolve(a, names) for a in args)
        return str(left) == str(right)
    if fn == "Fn::Not":
        (inner,) = args
        return not _truth(inner, condition, names)
    if fn == "Fn::And":
        return all(_truth(a, condition, names) for a in args)
    if fn == "Fn::Or":
        return any(_truth(a, condition, names) for a in args)
    raise UnresolvedReference(fn)


def resolve(node: Any, names: Mapping[str, Any], when: Mapping[str, bool] | None = None) -> Any:
    """`node` with Ref, Fn::GetAtt, Fn::Sub (and, given `when`, Fn::If) replaced; `names` maps "Res",
    "Res.Attr", "AWS::Region"...; `when` maps condition names to their value (see `conditions`)."""
    value = _resolve(node, names, when)
    return None if value is _NO_VALUE else value


def _resolve(node: Any, names: Mapping[str, Any], when: Mapping[str, bool] | None) -> Any:
    if isinstance(node, list):
        items = [_resolve(item, names, when) for item in node]
        return [item for item in items if item is not _NO_VALUE]
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
            local = {k: _resolve(v, names, when) for k, v in extra.items()}
        return _SUB_VAR.sub(lambda m: local.get(m.group(1)) or _lookup(names, m.group(1)), value)
    if set(node) == {"Fn::If"} and when is not None:
        name, if_true, if_false = node["Fn::If"]
        if name not in when:
            raise UnresolvedReference(f"Condition {name}")
        return _resolve(if_true if when[name] else if_false, names, when)
    if any(key.startswith("Fn::") for key in node):
        raise UnresolvedReference(next(iter(node)))
    resolved = {key: _resolve(value, names, when) for key, value in node.items()}
    return {key: value for key, value in resolved.items() if value is not _NO_VALUE}
