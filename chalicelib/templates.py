"""Answer templates: names, routes.json, compiling, rendering and checking. Pure: no S3, no clock.

Templates are Jinja2 rendered in an immutable sandbox with XML autoescaping, so a caller's name or a
SIP header can never add or close a verb.
"""

from __future__ import annotations

import json
import re
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import ChainableUndefined, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from chalicelib import plivo_xml

TEMPLATE_NAME_RE = re.compile(r"\A[A-Za-z0-9]{1,64}\Z")
HEADER_NAME_RE = TEMPLATE_NAME_RE  # the SPEC gives names and header values one character set
MAX_SOURCE_BYTES = plivo_xml.MAX_BYTES
CONTEXT_NAMES = frozenset({"headers", "call", "sip"})
HEADER_PREFIX = "x-ph-"
SIP_PREFIX = "sip-h-"
_TEMPLATE_FILE = "<template>"

# Characters XML 1.0 cannot carry at all; a caller-controlled value containing one would break the document.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class TemplateError(Exception):
    """A template cannot be compiled or rendered; the message says why (with the line when known)."""


class RoutesError(Exception):
    """routes.json is not valid; the message says where."""


def is_template_name(name: object) -> bool:
    return isinstance(name, str) and TEMPLATE_NAME_RE.match(name) is not None


class CaseInsensitive(Mapping[str, str]):
    """Read-only mapping whose lookups ignore case (`headers.customerid` finds `CustomerId`)."""

    __slots__ = ("_data", "_lower")

    def __init__(self, data: dict[str, str]) -> None:
        self._data = data
        self._lower = {key.lower(): value for key, value in data.items()}

    def __getitem__(self, key: str) -> str:
        try:
            return self._data[key]
        except KeyError:
            return self._lower[key.lower()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (key in self._data or key.lower() in self._lower)

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"CaseInsensitive({self._data!r})"


def answer_context(params: Mapping[str, str]) -> dict[str, Any]:
    """The template context: `headers` (X-PH-*), `call` (everything), `sip` (SIP-H-*)."""
    headers: dict[str, str] = {}
    sip: dict[str, str] = {}
    for key, value in params.items():
        if len(key) > 5 and key[0] in "XxSs":
            lower = key[:6].lower()
            if lower.startswith(HEADER_PREFIX):
                headers[key[5:]] = value
            elif lower == SIP_PREFIX:
                sip[key[6:]] = value
    return {"headers": CaseInsensitive(headers), "call": dict(params), "sip": CaseInsensitive(sip)}


# ---------------------------------------------------------------- routes.json

@dataclass(frozen=True)
class Rule:
    when: tuple[tuple[str, str], ...]  # (header name, value); names matched case-insensitively
    template: str

    def matches(self, headers: Mapping[str, str]) -> bool:
        for name, value in self.when:
            if headers.get(name) != value:
                return False
        return True


@dataclass(frozen=True)
class Routes:
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
        raise RoutesError("routes.json must be a JSON object with \"default\" and/or \"rules\"")
    unknown = sorted(set(data) - {"default", "rules"})
    if unknown:
        raise RoutesError(f"routes.json has unknown key(s): {', '.join(unknown)}")
    default = data.get("default")
    if default is not None and not is_template_name(default):
        raise RoutesError(f"routes.json default {default!r} is not a template name ([A-Za-z0-9]{{1,64}})")
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        raise RoutesError("routes.json \"rules\" must be a list")
    rules = []
    for number, raw in enumerate(raw_rules, start=1):
        where = f"routes.json rule {number}"
        if not isinstance(raw, dict) or set(raw) != {"when", "template"}:
            raise RoutesError(f"{where} must be an object with exactly \"when\" and \"template\"")
        if not is_template_name(raw["template"]):
            raise RoutesError(f"{where}: template {raw['template']!r} is not a template name")
        when = raw["when"]
        if not isinstance(when, dict):
            raise RoutesError(f"{where}: \"when\" must be an object of header name -> value")
        pairs = []
        for name, value in when.items():
            if name.lower().startswith(HEADER_PREFIX):
                name = name[len(HEADER_PREFIX):]
            if not HEADER_NAME_RE.match(name):
                raise RoutesError(f"{where}: header name {name!r} must be letters and digits")
            if not isinstance(value, str):
                raise RoutesError(f"{where}: value of {name!r} must be a string, not {json.dumps(value)}")
            pairs.append((name, value))
        rules.append(Rule(tuple(pairs), raw["template"]))
    return Routes(default, tuple(rules))


# ---------------------------------------------------------------- compile and render

def _finalize(value: Any) -> Any:
    if value is None:
        return ""
    if type(value) is str:
        return _NOT_XML.sub("", value)
    return value


_env: ImmutableSandboxedEnvironment | None = None


def environment() -> ImmutableSandboxedEnvironment:
    """One shared sandbox, created on first use."""
    global _env
    if _env is None:
        _env = ImmutableSandboxedEnvironment(
            autoescape=True,
            undefined=ChainableUndefined,
            finalize=_finalize,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=False,
            cache_size=0,
        )
    return _env


def compile_template(source: str):
    """Compile once per template version; raises TemplateError with the line of a syntax error."""
    try:
        return environment().from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"line {exc.lineno}: {exc.message}") from None
    except Exception as exc:  # noqa: BLE001 - any compile failure is a broken template
        raise TemplateError(f"line 1: cannot compile: {exc}") from None


def _error_line(exc: BaseException) -> int:
    line = 0
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == _TEMPLATE_FILE:
            line = frame.lineno or line
    return line


def render(template, context: Mapping[str, Any], limit: int = plivo_xml.MAX_BYTES) -> str:
    """Render, stopping as soon as the output is certainly over `limit` characters."""
    parts = []
    size = 0
    try:
        for chunk in template.generate(context):
            size += len(chunk)
            if size > limit:
                raise TemplateError(f"rendered output is over {limit} bytes")
            parts.append(chunk)
    except TemplateError:
        raise
    except Exception as exc:  # noqa: BLE001 - the sandbox can raise anything a template provokes
        raise TemplateError(f"line {_error_line(exc)}: render failed: {type(exc).__name__}: {exc}") from None
    return "".join(parts)


# ---------------------------------------------------------------- checking (CLI)

class _Placeholder(Mapping[str, str]):
    """Answers every lookup with a plausible value, so `check` can render without a real call."""

    def __getitem__(self, key: str) -> str:
        return "Sample"

    def __contains__(self, key: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _undefined_names(ast: nodes.Template) -> list[tuple[int, str]]:
    missing = meta.find_undeclared_variables(ast) - CONTEXT_NAMES
    found: dict[str, int] = {}
    for node in ast.find_all(nodes.Name):
        if node.name in missing and node.ctx == "load":
            found.setdefault(node.name, node.lineno)
    return sorted((line, name) for name, line in found.items())


def validate_template(name: str, source: str | bytes) -> list[str]:
    """Problems with a template as "line N: message" (empty when it is fine to push)."""
    problems = []
    if not is_template_name(name):
        problems.append(f"line 1: template name {name!r} must match [A-Za-z0-9]{{1,64}}")
    if isinstance(source, bytes):
        try:
            source = source.decode("utf-8")
        except UnicodeDecodeError as exc:
            return [*problems, f"line 1: not UTF-8 ({exc.reason} at byte {exc.start})"]
    if len(source.encode("utf-8")) > MAX_SOURCE_BYTES:
        return [*problems, f"line 1: template is over {MAX_SOURCE_BYTES} bytes"]
    env = environment()
    try:
        ast = env.parse(source)
    except TemplateSyntaxError as exc:
        return [*problems, f"line {exc.lineno}: {exc.message}"]
    for line, variable in _undefined_names(ast):
        problems.append(f"line {line}: undefined variable {variable!r} (use headers., call. or sip.)")
    try:
        template = compile_template(source)
        placeholder = _Placeholder()
        output = render(template, {"headers": placeholder, "call": placeholder, "sip": placeholder})
    except TemplateError as exc:
        return [*problems, str(exc) if str(exc).startswith("line ") else f"line 1: {exc}"]
    problems.extend(f"{p} (in the rendered XML)" for p in plivo_xml.problems(output))
    return problems


BUILTIN_FALLBACK = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Response>\n"
    "  <Speak>We are sorry, we cannot take your call right now. Please try again later. Goodbye.</Speak>\n"
    "  <Hangup/>\n"
    "</Response>\n"
)
