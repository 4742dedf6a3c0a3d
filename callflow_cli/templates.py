"""`callflow templates check|push|render`, and the authoring checks behind them: what `check` and `push`
report before anything goes live. Not deployed: the answer route only renders; problems found here never
reach a call."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import click
from jinja2 import TemplateSyntaxError, meta, nodes

from callflow_cli.errors import UserError, plural
from chalicelib import resources
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


# --------------------------------------------------------------------------- commands


def _template_files(directory: Path) -> tuple[dict[str, Path], Path | None]:
    if not directory.is_dir():
        raise UserError(f"{directory} is not a directory")
    found = {path.stem: path for path in sorted(directory.glob("*.xml")) if path.is_file()}
    routes = directory / "routes.json"
    return found, routes if routes.is_file() else None


def check_directory(directory: Path) -> tuple[dict[str, bytes], bytes | None, list[str]]:
    """Validate every template and routes.json in `directory`.

    Returns (sources by name, routes.json bytes or None, problems as `file:line: message`)."""
    from chalicelib.answer.routes import RoutesError, parse_routes

    files, routes_path = _template_files(directory)
    problems: list[str] = []
    sources: dict[str, bytes] = {}
    if not files:
        problems.append(f"{directory}: no templates (*.xml) to push")
    for name, path in files.items():
        source = path.read_bytes()
        sources[name] = source
        if not is_template_name(name):
            problems.append(f"{path}:1: file name {name!r} is not a template name ([A-Za-z0-9], at most 64)")
            continue
        for problem in validate_template(name, source):
            line, _, message = problem.partition(": ")
            if line.startswith("line "):
                problems.append(f"{path}:{line[5:]}: {message}")
            else:
                problems.append(f"{path}: {problem}")
    routes_source = None
    if routes_path is not None:
        routes_source = routes_path.read_bytes()
        try:
            routes = parse_routes(routes_source)
        except RoutesError as exc:
            problems.append(f"{routes_path}: {exc}")
        else:
            named = [("default", routes.default)] if routes.default else []
            named += [(f"rule {i}", rule.template) for i, rule in enumerate(routes.rules, start=1)]
            for where, target in named:
                if target not in files:
                    problems.append(
                        f"{routes_path}: {where} names template {target!r}, which is not in {directory}"
                    )
    return sources, routes_source, problems


def pairs(values: Iterable[str], what: str) -> dict[str, str]:
    """`K=V` options → a dict; a later K wins (see calls.header_pairs for headers, where it is refused)."""
    result: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise UserError(f"{what} {value!r} must look like NAME=VALUE")
        result[key] = text
    return result


def _echo_problems(problems: list[str]) -> None:
    for problem in problems:
        click.echo(problem, err=True)


@click.group("templates")
def group() -> None:
    """Check, upload and preview answer templates."""


@group.command("check")
@click.argument("directory", type=click.Path(path_type=Path))
def templates_check(directory: Path) -> None:
    """Validate every template and routes.json in DIRECTORY (nothing is uploaded)."""
    sources, routes, problems = check_directory(directory)
    if problems:
        _echo_problems(problems)
        raise UserError(f"{plural(len(problems), 'problem')} found")
    extra = " and routes.json" if routes is not None else ""
    click.echo(f"{plural(len(sources), 'template')}{extra} OK")


@group.command("push")
@click.argument("directory", type=click.Path(path_type=Path))
def templates_push(directory: Path) -> None:
    """Validate DIRECTORY, then upload its templates and routes.json (nothing if anything is invalid)."""
    sources, routes, problems = check_directory(directory)
    if problems:
        _echo_problems(problems)
        raise UserError(f"{plural(len(problems), 'problem')} found; nothing uploaded")
    settings = resources.settings()
    bucket = settings.require("template_bucket")
    s3 = resources.s3_client()
    s3.head_bucket(Bucket=bucket)
    for name, source in sorted(sources.items()):
        s3.put_object(
            Bucket=bucket,
            Key=f"{settings.template_prefix}{name}.xml",
            Body=source,
            ContentType="application/xml",
        )
    if routes is not None:
        s3.put_object(
            Bucket=bucket,
            Key=f"{settings.template_prefix}routes.json",
            Body=routes,
            ContentType="application/json",
        )
    extra = " and routes.json" if routes is not None else ""
    click.echo(
        f"uploaded {plural(len(sources), 'template')}{extra} to s3://{bucket}/{settings.template_prefix}"
    )


@group.command("render")
@click.argument("name")
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="K=V",
    help="a Plivo parameter of the call, e.g. X-PH-CustomerName=Ann or From=14155550100",
)
def templates_render(name: str, params: tuple[str, ...]) -> None:
    """Print the XML a call gets from template NAME, with the given Plivo parameters."""
    from chalicelib.answer.pipeline import render_answer
    from chalicelib.answer.render import answer_context
    from chalicelib.answer.store import StoreUnavailable, TemplateBroken, TemplateMissing

    if not is_template_name(name):
        raise UserError(f"{name!r} is not a template name ([A-Za-z0-9], at most 64 characters)")
    settings = resources.settings()
    settings.require("template_bucket")
    call = {
        "From": "14155550100",
        "To": "14155550199",
        "CallUUID": str(uuid.uuid4()),
        "Direction": "outbound",
        "Event": "StartApp",
        "CallStatus": "in-progress",
    }
    call.update(pairs(params, "--param"))
    call["X-PH-Template"] = name
    store = resources.template_store()
    problem = None
    try:
        xml = render(store.template(name), answer_context(call))
        problem = plivo_xml.first_problem(xml)
    except TemplateMissing:
        raise UserError(f"template {name!r} not found in s3://{store.bucket}/{store.prefix}") from None
    except StoreUnavailable as exc:
        raise UserError(f"cannot read the template store: {exc}") from None
    except (TemplateBroken, TemplateError) as exc:
        problem = str(exc)
    click.echo(render_answer(store, settings, call), nl=False)
    if problem:
        raise UserError(
            f"template {name!r} does not render valid Plivo XML ({problem}); "
            "a call gets the fallback printed above"
        )
