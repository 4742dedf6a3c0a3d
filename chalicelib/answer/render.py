"""Answer templates: the context, compiling and rendering. Pure: no S3, no clock.

Templates are Jinja2 rendered in an immutable sandbox with XML autoescaping, so a caller's name or a
SIP header can never add or close a verb.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterator, Mapping
from typing import Any

from jinja2 import ChainableUndefined, Template, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from chalicelib.answer import plivo_xml
from chalicelib.answer.routes import HEADER_PREFIX

SIP_PREFIX = "sip-h-"
MAX_SOURCE_BYTES = plivo_xml.MAX_BYTES
_TEMPLATE_FILE = "<template>"

# Characters XML 1.0 cannot carry at all; a caller-controlled value containing one would break the document.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class TemplateError(Exception):
    """A template cannot be compiled or rendered; the message says why (with the line when known)."""


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


def compile_template(source: str) -> Template:
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


def render(template: Template, context: Mapping[str, Any], limit: int = plivo_xml.MAX_BYTES) -> str:
    """Render, stopping as soon as the output is certainly over `limit` characters."""
    parts: list[str] = []
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


BUILTIN_FALLBACK = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Response>\n"
    "  <Speak>We are sorry, we cannot take your call right now. Please try again later. Goodbye.</Speak>\n"
    "  <Hangup/>\n"
    "</Response>\n"
)
