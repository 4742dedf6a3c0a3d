"""Which template answers a call: template names and routes.json (rules on the call's headers). Pure."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import NamedTuple

TEMPLATE_NAME_RE = re.compile(r"\A[A-Za-z0-9]{1,64}\Z")
HEADER_NAME_RE = TEMPLATE_NAME_RE  # the SPEC gives names and header values one character set
HEADER_PREFIX = "x-ph-"


class RoutesError(Exception):
    """routes.json is not valid; the message says where."""


def is_template_name(name: object) -> bool:
    return isinstance(name, str) and TEMPLATE_NAME_RE.match(name) is not None


# NamedTuples rather than frozen dataclasses: as immutable, compared and printed alike, and a fifth of the
# cost to build (every dataclass on the answer's import path costs each cold start about half a millisecond).
class Rule(NamedTuple):
    when: tuple[tuple[str, str], ...]  # (header name, value); names matched case-insensitively
    template: str

    def matches(self, headers: Mapping[str, str]) -> bool:
        for name, value in self.when:
            if headers.get(name) != value:
                return False
        return True


class Routes(NamedTuple):
    default: str | None = None
    rules: tuple[Rule, ...] = ()

    def choose(self, headers: Mapping[str, str]) -> str | None:
        """Selection steps 2 and 3: the first matching rule, else the default (None: no route)."""
        for rule in self.rules:
            if rule.matches(headers):
                return rule.template
        return self.default or None


EMPTY_ROUTES = Routes()


def parse_routes(text: str | bytes) -> Routes:
    """Parse and validate routes.json, naming the first problem precisely."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RoutesError(f"routes.json is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RoutesError('routes.json must be a JSON object with "default" and/or "rules"')
    unknown = sorted(set(data) - {"default", "rules"})
    if unknown:
        raise RoutesError(f"routes.json has unknown key(s): {', '.join(unknown)}")
    default = data.get("default")
    if default is not None and not is_template_name(default):
        raise RoutesError(f"routes.json default {default!r} is not a template name ([A-Za-z0-9]{{1,64}})")
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        raise RoutesError('routes.json "rules" must be a list')
    rules = []
    for number, raw in enumerate(raw_rules, start=1):
        where = f"routes.json rule {number}"
        if not isinstance(raw, dict) or set(raw) != {"when", "template"}:
            raise RoutesError(f'{where} must be an object with exactly "when" and "template"')
        if not is_template_name(raw["template"]):
            raise RoutesError(f"{where}: template {raw['template']!r} is not a template name")
        when = raw["when"]
        if not isinstance(when, dict):
            raise RoutesError(f'{where}: "when" must be an object of header name -> value')
        pairs = []
        for name, value in when.items():
            if name.lower().startswith(HEADER_PREFIX):
                name = name[len(HEADER_PREFIX) :]
            if not HEADER_NAME_RE.match(name):
                raise RoutesError(f"{where}: header name {name!r} must be letters and digits")
            if not isinstance(value, str):
                raise RoutesError(f"{where}: value of {name!r} must be a string, not {json.dumps(value)}")
            pairs.append((name, value))
        rules.append(Rule(tuple(pairs), raw["template"]))
    return Routes(default, tuple(rules))
