"""`callflow`: manage templates and call jobs from a terminal, against whatever AWS the environment names.

`AWS_ENDPOINT_URL` points it at the local stack (`make run` prints the exports); without it, it talks to
real AWS with the usual credential chain. Every user mistake and every AWS failure ends in one readable
line and a non-zero exit, never a traceback. Not deployed (the Lambda never imports it): it is the only
module allowed to use click.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from chalicelib import resources
from chalicelib.calls.jobs import STATUSES
from chalicelib.settings import ConfigError

PLACEHOLDER_BASE = "https://callflow.invalid"
OPTIONAL_FIELDS = (
    "tz",
    "window",
    "max_attempts",
    "caller_name",
    "answer_url",
    "answer_method",
    "ring_timeout",
    "time_limit",
    "machine_detection",
)
JOB_FIELDS = ("call_id", "to", "from", "at", "due_at", *OPTIONAL_FIELDS)
HEADER_COLUMN_PREFIXES = ("X-PH-", "header.")


class UserError(click.ClickException):
    """One line for the user; exit code 1."""


# --------------------------------------------------------------------------- errors → one line


def _aws_message(exc: BaseException) -> str | None:
    """A readable line for the AWS failures a user can cause or fix, else None."""
    from botocore import exceptions as bx

    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectTimeoutError | bx.ReadTimeoutError):
        if endpoint:
            return f"cannot reach AWS at {endpoint} (is the local stack running? start it with `make run`)"
        return f"cannot reach AWS: {exc}"
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return "no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    if isinstance(exc, bx.NoRegionError):
        return "no AWS region: set AWS_DEFAULT_REGION (e.g. us-east-1)"
    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        settings = resources.settings()
        if code in ("NoSuchBucket",) or (code in ("404", "NotFound") and "HeadBucket" in str(exc)):
            return f"bucket {settings.template_bucket!r} does not exist (TEMPLATE_BUCKET)"
        if code == "ResourceNotFoundException":
            return f"table {settings.calls_table!r} does not exist (CALLS_TABLE)"
        if code in (
            "AccessDenied",
            "AccessDeniedException",
            "403",
            "UnrecognizedClientException",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "ExpiredToken",
            "ExpiredTokenException",
        ):
            return f"AWS refused the request ({code}): check your credentials and permissions"
        return f"AWS error {code}: {error.get('Message') or exc}"
    if isinstance(exc, bx.BotoCoreError):
        return f"AWS error: {exc}"
    return None


class _Group(click.Group):
    """Turns expected failures raised anywhere below into one line and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except ConfigError as exc:
            raise UserError(str(exc)) from None
        except Exception as exc:
            message = _aws_message(exc)
            if message is None:
                raise
            raise UserError(message) from None


def _fresh_resources() -> None:
    """The CLI reads the environment as it is now (tests and scripts change it between calls)."""
    resources.reset()


# --------------------------------------------------------------------------- templates


def _template_files(directory: Path) -> tuple[dict[str, Path], Path | None]:
    if not directory.is_dir():
        raise UserError(f"{directory} is not a directory")
    found = {path.stem: path for path in sorted(directory.glob("*.xml")) if path.is_file()}
    routes = directory / "routes.json"
    return found, routes if routes.is_file() else None


def check_directory(directory: Path) -> tuple[dict[str, bytes], bytes | None, list[str]]:
    """Validate every template and routes.json in `directory`.

    Returns (sources by name, routes.json bytes or None, problems as `file:line: message`)."""
    from callflow_cli.templates import validate_template
    from chalicelib.answer.routes import RoutesError, is_template_name, parse_routes

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
            for where, name in named:
                if name not in files:
                    problems.append(
                        f"{routes_path}: {where} names template {name!r}, which is not in {directory}"
                    )
    return sources, routes_source, problems


@click.group(cls=_Group)
def main() -> None:
    """callflow: templated Plivo answer XML and scheduled outbound calls."""
    _fresh_resources()


@main.group()
def templates() -> None:
    """Check, upload and preview answer templates."""


def _report(problems: list[str]) -> None:
    for problem in problems:
        click.echo(problem, err=True)
    count = len(problems)
    raise UserError(f"{count} problem{'s' if count != 1 else ''} found; nothing uploaded")


@templates.command("check")
@click.argument("directory", type=click.Path(path_type=Path))
def templates_check(directory: Path) -> None:
    """Validate every template and routes.json in DIRECTORY (nothing is uploaded)."""
    sources, routes, problems = check_directory(directory)
    if problems:
        for problem in problems:
            click.echo(problem, err=True)
        raise UserError(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} found")
    extra = " and routes.json" if routes is not None else ""
    click.echo(f"{len(sources)} template{'s' if len(sources) != 1 else ''}{extra} OK")


@templates.command("push")
@click.argument("directory", type=click.Path(path_type=Path))
def templates_push(directory: Path) -> None:
    """Validate DIRECTORY, then upload its templates and routes.json (nothing if anything is invalid)."""
    sources, routes, problems = check_directory(directory)
    if problems:
        _report(problems)
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
        f"uploaded {len(sources)} template{'s' if len(sources) != 1 else ''}{extra} "
        f"to s3://{bucket}/{settings.template_prefix}"
    )


def _pairs(values: Iterable[str], what: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise UserError(f"{what} {value!r} must look like NAME=VALUE")
        result[key] = text
    return result


@templates.command("render")
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
    from chalicelib.answer import plivo_xml
    from chalicelib.answer.pipeline import render_answer
    from chalicelib.answer.render import TemplateError, answer_context, render
    from chalicelib.answer.routes import is_template_name
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
    call.update(_pairs(params, "--param"))
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


# --------------------------------------------------------------------------- calls


def _repo():
    """The job repository, after checking CALLS_TABLE (a clearer first error than a missing region)."""
    resources.settings().require("calls_table")
    return resources.job_repository()


@main.group()
def calls() -> None:
    """Enqueue, list and cancel outbound call jobs."""


def _parse_time(text: str, tz: str | None) -> float:
    """ISO 8601 → epoch seconds; a time without offset is read in `tz` (or UTC)."""
    from chalicelib.calls.schedule import WindowError, zone

    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"time {text!r} is not ISO 8601 (e.g. 2026-12-01T09:30 or 2026-12-01T09:30:00+01:00)"
        ) from None
    if moment.tzinfo is None:
        try:
            moment = moment.replace(tzinfo=zone(tz) if tz else UTC)
        except WindowError as exc:
            raise ValueError(str(exc)) from None
    return moment.timestamp()


LATEST_DUE_AT = 253402300800  # 10000-01-01T00:00:00Z: past it no clock can show the time


def build_job(fields: Mapping[str, Any], headers: Mapping[str, str], now: float) -> dict[str, Any]:
    """A job item from user input, validated by the launcher's own check (validate_job); ValueError if bad."""
    from chalicelib.calls.call_body import JobInvalid, validate_job

    job: dict[str, Any] = {
        "call_id": fields.get("call_id") or str(uuid.uuid4()),
        "status": "pending",
        "to": fields.get("to") or "",
        "from": fields.get("from") or "",
        "headers": dict(headers),
    }
    optional = {name: fields.get(name) for name in OPTIONAL_FIELDS if fields.get(name) not in (None, "")}
    try:
        job.update(validate_job({**job, **optional}))
    except JobInvalid as exc:
        raise ValueError(str(exc)) from None
    when = fields.get("at") or fields.get("due_at")
    if when:
        text = str(when).strip()
        numeric = text.replace(".", "", 1).isdigit()
        job["due_at"] = float(text) if numeric else _parse_time(text, job.get("tz"))
        if not 0 <= job["due_at"] < LATEST_DUE_AT:
            raise ValueError(f"time {text!r} is out of range (before 1970 or after 9999)")
    else:
        job["due_at"] = now
    return job


@calls.command("add")
@click.option("--to", "to", required=True, help="destination: digits (E.164 without +) or a sip: URI")
@click.option("--from", "from_", required=True, help="caller id digits")
@click.option("--header", "headers", multiple=True, metavar="K=V", help="custom SIP header (X-PH-K)")
@click.option("--at", "at", help="earliest time to dial, ISO 8601 (default now; no offset = in --tz)")
@click.option("--tz", help="IANA time zone of the callee, for the calling window")
@click.option("--id", "call_id", help="job id (default a new UUID); an existing id is refused")
@click.option("--window", help="calling hours HH:MM-HH:MM in --tz (default CALL_WINDOW)")
@click.option("--max-attempts", type=int, help="attempts including retries (default MAX_ATTEMPTS)")
@click.option("--caller-name", help="caller name shown to the callee (at most 50 characters)")
@click.option("--answer-url", help="answer URL for this call (default PUBLIC_BASE_URL/answer)")
def calls_add(
    to: str,
    from_: str,
    headers: tuple[str, ...],
    at: str | None,
    tz: str | None,
    call_id: str | None,
    window: str | None,
    max_attempts: int | None,
    caller_name: str | None,
    answer_url: str | None,
) -> None:
    """Enqueue one call."""
    from chalicelib.calls.jobs import JobError

    fields = {
        "to": to,
        "from": from_,
        "at": at,
        "tz": tz,
        "call_id": call_id,
        "window": window,
        "max_attempts": max_attempts,
        "caller_name": caller_name,
        "answer_url": answer_url,
    }
    try:
        job = build_job(fields, _pairs(headers, "--header"), datetime.now(UTC).timestamp())
    except ValueError as exc:
        raise UserError(str(exc)) from None
    try:
        _repo().add(job)
    except JobError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"added {job['call_id']} (due {_when(job['due_at'])})")


def _row_fields(row: Mapping[str, str | None]) -> tuple[dict[str, str], dict[str, str]]:
    fields: dict[str, str] = {}
    headers: dict[str, str] = {}
    for column, value in row.items():
        if column is None:
            raise ValueError("more cells than columns")
        text = (value or "").strip()
        for prefix in HEADER_COLUMN_PREFIXES:
            if column.startswith(prefix):
                if text:
                    headers[column[len(prefix) :]] = text
                break
        else:
            fields[column] = text
    return fields, headers


@calls.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
def calls_import(file: Path) -> None:
    """Enqueue every row of FILE.csv (columns: to, from, and optional call_id, at, tz, window,
    max_attempts, caller_name, answer_url, answer_method, X-PH-<Name> headers). A bad row is reported by
    line number and skipped; the others are imported."""
    from chalicelib.calls.jobs import JobError

    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{file}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{file}: cannot read ({exc})") from None
    reader = csv.DictReader(text.splitlines(keepends=True))
    columns = reader.fieldnames or []
    if not columns:
        raise UserError(f"{file}: empty file (expected a header row with at least to,from)")
    unknown = [c for c in columns if c not in JOB_FIELDS and not c.startswith(HEADER_COLUMN_PREFIXES)]
    if unknown:
        raise UserError(
            f"{file}:1: unknown column(s) {', '.join(unknown)} (known: {', '.join(JOB_FIELDS)}, X-PH-<Name>)"
        )
    missing = [c for c in ("to", "from") if c not in columns]
    if missing:
        raise UserError(f"{file}:1: missing column(s) {', '.join(missing)}")
    rows = []
    for row in reader:
        rows.append((reader.line_num, row))
    repo = _repo()
    now = datetime.now(UTC).timestamp()
    imported = 0
    bad: list[str] = []
    with click.progressbar(rows, label=f"importing {file.name}", file=sys.stderr, show_pos=True) as progress:
        for line, row in progress:
            try:
                fields, headers = _row_fields(row)
                repo.add(build_job(fields, headers, now))
                imported += 1
            except (ValueError, JobError) as exc:
                bad.append(f"{file}:{line}: {exc}")
    for message in bad:
        click.echo(message, err=True)
    click.echo(
        f"imported {imported} call{'s' if imported != 1 else ''}"
        + (f", {len(bad)} bad row{'s' if len(bad) != 1 else ''} skipped" if bad else "")
    )
    if bad:
        sys.exit(1)


def _when(epoch: Any) -> str:
    try:
        return datetime.fromtimestamp(float(epoch), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return "-"


@calls.command("list")
@click.option("--status", type=click.Choice(STATUSES), help="only jobs in this status (oldest due first)")
@click.option("--json", "as_json", is_flag=True, help="a JSON array of the job items as stored")
def calls_list(status: str | None, as_json: bool) -> None:
    """List call jobs."""
    items = _repo().list(status=status)
    if as_json:
        click.echo(json.dumps(list(items), indent=2, default=str))
        return
    rows = [("CALL_ID", "STATUS", "DUE", "TO", "ATTEMPTS", "RESULT")]
    for item in items:
        result = item.get("outcome") or item.get("last_error") or ""
        rows.append(
            (
                str(item.get("call_id", "")),
                str(item.get("status", "")),
                _when(item.get("due_at")),
                str(item.get("to", "")),
                str(item.get("attempts", 0)),
                str(result)[:60],
            )
        )
    if len(rows) == 1:
        click.echo("no calls" + (f" with status {status}" if status else ""))
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]).rstrip())


@calls.command("cancel")
@click.argument("call_id")
def calls_cancel(call_id: str) -> None:
    """Cancel a pending call job."""
    from chalicelib.calls.jobs import JobError

    try:
        _repo().cancel(call_id)
    except JobError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"cancelled {call_id}")


# --------------------------------------------------------------------------- launcher


@main.command("launch")
def launch_command() -> None:
    """Run one launcher pass here, exactly the code the scheduled Lambda runs."""
    from chalicelib import handlers

    settings = resources.settings()
    for field in ("calls_table", "plivo_auth_id", "public_base_url"):
        settings.require(field)
    if not (settings.plivo_auth_token or settings.plivo_auth_token_param):
        raise UserError("PLIVO_AUTH_TOKEN or PLIVO_AUTH_TOKEN_PARAM is not set")
    summary = handlers.launch()
    click.echo(json.dumps(summary))


if __name__ == "__main__":
    main(prog_name="callflow")
