"""`callflow calls add|import|list|cancel`: call jobs from a terminal or a CSV file, checked with the
launcher's own validate_job (build_job), so what the CLI accepts the launcher dials."""

from __future__ import annotations

import csv
import json
import sys
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from callflow_cli.errors import UserError
from callflow_cli.templates import pairs as _pairs
from chalicelib import resources
from chalicelib.calls.jobs import STATUSES

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


def _repo():
    """The job repository, after checking CALLS_TABLE (a clearer first error than a missing region)."""
    resources.settings().require("calls_table")
    return resources.job_repository()


@click.group("calls")
def group() -> None:
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


@group.command("add")
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


@group.command("import")
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


@group.command("list")
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


@group.command("cancel")
@click.argument("call_id")
def calls_cancel(call_id: str) -> None:
    """Cancel a pending call job."""
    from chalicelib.calls.jobs import JobError

    try:
        _repo().cancel(call_id)
    except JobError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"cancelled {call_id}")
