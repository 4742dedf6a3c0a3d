"""Authoring checks for templates: what `callflow templates check` and `push` report before anything goes
live. Not deployed: the answer route only renders; problems found here never reach a call."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from jinja2 import TemplateSyntaxError, meta, nodes

from chalicelib.answer import plivo_xml
from chalicelib.answer.render import (
    MAX_SOURCE_BYTES,
    TemplateError,
    compile_template,
    environment,
    render,
)
from chalicelib.answer.routes import is_template_name

CONTEXT_NAMES = frozenset({"headers", "call", "sip"})


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
