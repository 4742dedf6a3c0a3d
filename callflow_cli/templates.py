"""`callflow templates check|push|render`, and the authoring checks behind them: what `check` and `push`
report before anything goes live. Not deployed: the answer route only renders; problems found here never
reach a call."""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from jinja2 import TemplateSyntaxError, meta, nodes

from callflow_cli import branches
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
from chalicelib.answer.steps import StepEffects
from chalicelib.answer.store import ROUTES_NAME

CONTEXT_NAMES = frozenset({"headers", "call", "sip", "step", "job", "url", "result", "optout"})


def _undefined_names(ast: nodes.Template) -> list[tuple[int, str]]:
    missing = meta.find_undeclared_variables(ast) - CONTEXT_NAMES
    found: dict[str, int] = {}
    for node in ast.find_all(nodes.Name):
        if node.name in missing and node.ctx == "load":
            found.setdefault(node.name, node.lineno)
    return sorted((line, name) for name, line in found.items())


_SAMPLE_OBJECT = f"'{branches.__name__}.Sample object' has no attribute"


def _line_of(problem: str) -> int:
    head, _, _ = problem.partition(":")
    return int(head[5:]) if head.startswith("line ") and head[5:].isdigit() else 0


def validate_template(
    name: str,
    source: str | bytes,
    templates: Collection[str] | None = None,
    notes: list[str] | None = None,
) -> list[str]:
    """Problems with a template as "line N: message" (empty when it is fine to push).

    It is rendered once per combination of the values its own comparisons name (and once with no values),
    so every branch's XML is checked. `templates`: the names a literal `url('X')` may point at (None: not
    followed). `notes` collects what the check could not do in full."""
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
    analysis = branches.analyse(ast)  # first: find_undeclared_variables folds constants in the AST
    found = [
        (line, f"undefined variable {variable!r} (use headers., call. or sip.)")
        for line, variable in _undefined_names(ast)
    ]
    found += analysis.problems
    if templates is not None:
        found += [
            (line, f"url({target!r}) names no template")
            for target, line in analysis.targets.items()
            if target not in templates
        ]
    try:
        template = compile_template(source)
    except TemplateError as exc:
        return [*problems, str(exc)]
    combos, total = branches.combinations(analysis, source)
    if total > len(combos) and notes is not None:
        notes.append(f"{plural(total, 'combination')} of compared values; {len(combos)} of them rendered")
    seen: set[tuple[int, str]] = set()
    for combo in combos:
        ctx = branches.context(name, combo, StepEffects())
        where = combo.describe(analysis.shown)
        suffix = f" (in the XML rendered {where})" if where else " (in the rendered XML)"
        try:
            output = render(template, ctx)
        except TemplateError as exc:
            text = str(exc) if str(exc).startswith("line ") else f"line 1: {exc}"
            line, message = _line_of(text), text.partition(": ")[2].replace(_SAMPLE_OBJECT, "no value for")
            if (line, message) not in seen:
                seen.add((line, message))
                found.append((line, message + (f" ({where})" if where else "")))
            continue
        xml_problems = plivo_xml.problems(output)
        if not xml_problems:
            continue
        lines = branches.output_lines(template, ast, branches.context(name, combo, StepEffects()))
        for problem in xml_problems:
            out_line, message = _line_of(problem), problem.partition(": ")[2]
            line = lines(out_line) or out_line
            if (line, message) not in seen:
                seen.add((line, message))
                found.append((line, message + suffix))
    found.sort(key=lambda item: item[0])
    problems.extend(f"line {line}: {message}" for line, message in found)
    return problems


# --------------------------------------------------------------------------- commands


def _template_files(directory: Path) -> tuple[dict[str, Path], Path | None]:
    if not directory.is_dir():
        raise UserError(f"{directory} is not a directory")
    found = {path.stem: path for path in sorted(directory.glob("*.xml")) if path.is_file()}
    routes = directory / "routes.json"
    return found, routes if routes.is_file() else None


def _file_problems(
    path: Path, name: str, source: bytes, names: Collection[str] | None, notes: list[str]
) -> list[str]:
    found = []
    for problem in validate_template(name, source, names, notes):
        line, _, message = problem.partition(": ")
        if line.startswith("line "):
            found.append(f"{path}:{line[5:]}: {message}")
        else:
            found.append(f"{path}: {problem}")
    return found


def check_directory(
    directory: Path, notes: list[str] | None = None
) -> tuple[dict[str, bytes], bytes | None, list[str]]:
    """Validate every template and routes.json in `directory`; each literal `url('X')` must name one of them.

    Returns (sources by name, routes.json bytes or None, problems as `file:line: message`)."""
    from chalicelib.answer.routes import RoutesError, parse_routes

    notes = [] if notes is None else notes
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
        file_notes: list[str] = []
        problems += _file_problems(path, name, source, files, file_notes)
        notes += [f"{path}: {note}" for note in file_notes]
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


def check_file(path: Path, notes: list[str]) -> list[str]:
    """Validate one template; its `url('X')` targets are looked up among the .xml files beside it."""
    if not path.is_file():
        raise UserError(f"{path} is not a file or a directory")
    name = path.stem
    if path.suffix != ".xml" or not is_template_name(name):
        return [f"{path}:1: file name {path.name!r} is not a template name ([A-Za-z0-9], at most 64) + .xml"]
    beside = {other.stem for other in path.parent.glob("*.xml") if other.is_file()}
    source = path.read_bytes()
    if beside - {name}:
        return _file_problems(path, name, source, beside, notes)
    problems = _file_problems(path, name, source, None, notes)
    try:
        targets = branches.url_targets(environment().parse(source.decode("utf-8")))
    except (TemplateSyntaxError, UnicodeDecodeError):
        targets = set()
    for target in sorted(targets - {name}):
        notes.append(f"{path}: url({target!r}) cannot be checked: no other templates beside it")
    return problems


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
@click.argument("target", metavar="DIR|FILE", type=click.Path(path_type=Path))
def templates_check(target: Path) -> None:
    """Validate every template and routes.json in DIR, or one template FILE (nothing is uploaded).

    Each template is rendered under every branch its own comparisons select, and each literal url('X')
    must name a template beside it."""
    notes: list[str] = []
    if target.is_dir():
        sources, routes, problems = check_directory(target, notes)
        what = plural(len(sources), "template") + (" and routes.json" if routes is not None else "")
    else:
        problems = check_file(target, notes)
        what = str(target)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    if problems:
        _echo_problems(problems)
        raise UserError(f"{plural(len(problems), 'problem')} found")
    click.echo(f"{what} OK")


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


def _load_job(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        job = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not a JSON file ({exc})") from None
    if not isinstance(job, dict):
        raise UserError(f"{path} must hold one JSON object (a job item, as `calls show ID --json` prints)")
    return job


@group.command("render")
@click.argument("name", required=False)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="K=V",
    help="a Plivo parameter of the call, e.g. Digits=1, X-PH-CustomerName=Ann or From=14155550100",
)
@click.option("--step", metavar="STEP", help="render as the conversation step STEP (/answer?step=STEP)")
@click.option(
    "--job", "job_file", type=click.Path(path_type=Path), metavar="FILE.json", help="the job item (`job`)"
)
def templates_render(
    name: str | None, params: tuple[str, ...], step: str | None, job_file: Path | None
) -> None:
    """Print the XML a call gets from template NAME (or step STEP), with the given Plivo parameters.

    What the step would record (its input, `result()`, `optout()`) is printed after the XML, on stderr."""
    from chalicelib.answer import steps
    from chalicelib.answer.pipeline import answer
    from chalicelib.answer.render import answer_context
    from chalicelib.answer.store import StoreUnavailable, TemplateBroken, TemplateMissing

    if name and step and name != step:
        raise UserError(f"NAME {name!r} and --step {step!r} name different templates (give one)")
    name = name or step
    if not name:
        raise UserError("give the template NAME (or --step STEP)")
    if not is_template_name(name):
        raise UserError(f"{name!r} is not a template name ([A-Za-z0-9], at most 64 characters)")
    job = _load_job(job_file)
    settings = resources.settings()
    settings.require("template_bucket")
    call = {**branches.PLIVO_BASICS, "CallUUID": str(uuid.uuid4())}
    call.update(pairs(params, "--param"))
    call["X-PH-Template"] = name
    call_id = str(job.get("call_id") or "") if job else ""
    base = f"{settings.public_base_url}/answer" if settings.public_base_url else branches.CHECK_BASE_URL
    effects = steps.StepEffects()

    def url(target: str, /, **query: Any) -> str:
        return steps.step_url(base, target, call_id or None, query)

    context = answer_context(call)
    context.update(step=name, url=url, result=effects.set_result, optout=effects.set_opt_out)
    if job is not None:
        context["job"] = job
    store = resources.template_store()
    problem = None
    xml = ""
    try:
        xml = render(store.template(name), context)
        problem = plivo_xml.first_problem(xml)
    except TemplateMissing:
        raise UserError(f"template {name!r} not found in s3://{store.bucket}/{store.prefix}") from None
    except StoreUnavailable as exc:
        raise UserError(f"cannot read the template store: {exc}") from None
    except (TemplateBroken, TemplateError) as exc:
        problem = str(exc)
    if problem:
        # What a call gets instead: the runtime's own fallback.
        click.echo(answer(store, settings, call).xml, nl=False)
        raise UserError(
            f"template {name!r} does not render valid Plivo XML ({problem}); "
            "a call gets the fallback printed above"
        )
    click.echo(xml, nl=False)
    if step:
        given = steps.action_input(call)
        shown = ", ".join(f"{k}={v!r}" for k, v in given.items())
        click.echo(
            f"records responses.{name}: {shown}" if given else "records no input (none given)", err=True
        )
    if effects.result:
        click.echo(f"sets result: {effects.result}", err=True)
    if effects.opt_out:
        click.echo("opts the number out (do-not-call)", err=True)


# --------------------------------------------------------------------------- the live store


@dataclass(frozen=True)
class LiveObject:
    filename: str  # Name.xml or routes.json
    key: str
    size: int
    modified: datetime


def _live(s3: Any, bucket: str, prefix: str) -> list[LiveObject]:
    """What is live under the prefix: templates and routes.json (anything else in the bucket is ignored)."""
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            filename = item["Key"][len(prefix) :]
            stem, dot, ext = filename.rpartition(".")
            if filename == ROUTES_NAME or (dot and ext == "xml" and is_template_name(stem)):
                found.append(
                    LiveObject(filename, item["Key"], int(item.get("Size", 0)), item["LastModified"])
                )
    return sorted(found, key=lambda obj: (obj.filename == ROUTES_NAME, obj.filename))


def _store_location() -> tuple[Any, str, str]:
    settings = resources.settings()
    bucket = settings.require("template_bucket")
    s3 = resources.s3_client()
    s3.head_bucket(Bucket=bucket)
    return s3, bucket, settings.template_prefix


def _modified(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@group.command("list")
def templates_list() -> None:
    """List the live templates (and routes.json): name, size, last change."""
    s3, bucket, prefix = _store_location()
    live = _live(s3, bucket, prefix)
    if not live:
        click.echo(f"no templates in s3://{bucket}/{prefix}")
        return
    rows = [("NAME", "SIZE", "CHANGED")]
    for obj in live:
        rows.append((obj.filename.removesuffix(".xml"), str(obj.size), _modified(obj.modified)))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for row in rows:
        click.echo(f"{row[0].ljust(widths[0])}  {row[1].rjust(widths[1])}  {row[2]}")


@group.command("pull")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="overwrite local files that differ from what is live")
def templates_pull(directory: Path, force: bool) -> None:
    """Download the live templates and routes.json into DIRECTORY, to edit and push back."""
    s3, bucket, prefix = _store_location()
    live = _live(s3, bucket, prefix)
    if not live:
        raise UserError(f"no templates in s3://{bucket}/{prefix}")
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{directory} is not a directory")
    bodies = {obj.filename: s3.get_object(Bucket=bucket, Key=obj.key)["Body"].read() for obj in live}
    changed = [
        name
        for name, body in bodies.items()
        if (directory / name).exists() and (directory / name).read_bytes() != body
    ]
    if changed and not force:
        for name in changed:
            click.echo(f"{directory / name}: differs from what is live", err=True)
        raise UserError(
            f"{plural(len(changed), 'local file')} would be overwritten; nothing written (--force)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    written = 0
    for name, body in bodies.items():
        target = directory / name
        if target.exists() and target.read_bytes() == body:
            continue
        target.write_bytes(body)
        written += 1
    templates = sum(1 for name in bodies if name != ROUTES_NAME)
    extra = " and routes.json" if ROUTES_NAME in bodies else ""
    click.echo(
        f"pulled {plural(templates, 'template')}{extra} from s3://{bucket}/{prefix} into {directory} "
        f"({written} written, {len(bodies) - written} unchanged)"
    )


def _references(s3: Any, bucket: str, live: list[LiveObject], name: str) -> list[str]:
    """Who still names template `name`: routes.json and the live templates whose url('NAME') points at it."""
    from chalicelib.answer.routes import RoutesError, parse_routes

    found = []
    for obj in live:
        if obj.filename == f"{name}.xml":
            continue
        body = s3.get_object(Bucket=bucket, Key=obj.key)["Body"].read()
        if obj.filename == ROUTES_NAME:
            try:
                routes = parse_routes(body)
            except RoutesError:
                if name.encode() in body:
                    found.append(f"{ROUTES_NAME} (unreadable, and it mentions {name!r})")
                continue
            if routes.default == name:
                found.append(f"{ROUTES_NAME} (default)")
            found += [
                f"{ROUTES_NAME} (rule {i})"
                for i, rule in enumerate(routes.rules, start=1)
                if rule.template == name
            ]
            continue
        try:
            targets = branches.url_targets(environment().parse(body.decode("utf-8")))
        except (TemplateSyntaxError, UnicodeDecodeError):
            continue
        if name in targets:
            found.append(f"{obj.filename.removesuffix('.xml')} (url({name!r}))")
    return found


@group.command("delete")
@click.argument("name")
@click.option("--force", is_flag=True, help="delete even while routes.json or another template names it")
def templates_delete(name: str, force: bool) -> None:
    """Delete the live template NAME (refused while routes.json or another template's url() names it)."""
    if not is_template_name(name):
        raise UserError(f"{name!r} is not a template name ([A-Za-z0-9], at most 64 characters)")
    s3, bucket, prefix = _store_location()
    live = _live(s3, bucket, prefix)
    if not any(obj.filename == f"{name}.xml" for obj in live):
        raise UserError(f"template {name!r} not found in s3://{bucket}/{prefix}")
    users = _references(s3, bucket, live, name)
    if users and not force:
        raise UserError(f"template {name!r} is still named by {', '.join(users)}; not deleted (--force)")
    s3.delete_object(Bucket=bucket, Key=f"{prefix}{name}.xml")
    note = f" (still named by {', '.join(users)})" if users else ""
    click.echo(f"deleted {name} from s3://{bucket}/{prefix}{note}")
