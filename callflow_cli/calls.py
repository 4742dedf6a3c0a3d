"""`callflow calls add|import|list|show|cancel`: call jobs from a terminal or a CSV file, checked with the
launcher's own validate_job (build_job), so what the CLI accepts the launcher dials."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from callflow_cli.errors import UserError, plural
from chalicelib import resources
from chalicelib.calls.call_body import encodable
from chalicelib.calls.jobs import STATUSES

if TYPE_CHECKING:
    from chalicelib.calls.jobs import JobRepository

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
DATA_COLUMN_PREFIX = "data."
ID_RULE = "1 to 128 characters from A-Z, a-z, 0-9 and . _ : -"
_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_EPOCH = re.compile(r"[0-9]+(?:\.[0-9]+)?")  # ASCII only: '²'.isdigit() is True, float('²') is an error
_ALNUM = re.compile(r"[A-Za-z0-9]+")
LATEST_DUE_AT = 253402300800  # 10000-01-01T00:00:00Z: past it no clock can show the time
MAX_CELL_BYTES = 16 * 1024  # no one cell may hold more than the whole of `data` may
# Characters str.splitlines (and so spreadsheets and scripts built on it) treats as line breaks, though CSV
# does not: a cell holding one means different rows to different readers, so the row is refused.
ODD_LINE_BREAKS = {
    "\x0b": "a vertical tab",
    "\x0c": "a form feed",
    "\x1c": "a file separator (U+001C)",
    "\x1d": "a group separator (U+001D)",
    "\x1e": "a record separator (U+001E)",
    "\x85": "a NEL (U+0085)",
    "\u2028": "a line separator (U+2028)",
    "\u2029": "a paragraph separator (U+2029)",
}
HEADER_HINT = (
    "SIP header values are Plivo's [A-Za-z0-9] only (Plivo drops anything else): put rich values such as "
    "spaces, dates or URLs in data instead (--data NAME=VALUE, or a data.<Name> CSV column)"
)


def _repo() -> JobRepository:
    """The job repository, after checking CALLS_TABLE (a clearer first error than a missing region)."""
    resources.settings().require("calls_table")
    return resources.job_repository()


@click.group("calls")
def group() -> None:
    """Enqueue, list and cancel outbound call jobs."""


def _shown(text: str) -> str:
    """A user's value in a message: quoted, and cut when it is long (the message stays one short line)."""
    return repr(text) if len(text) <= 60 else f"{text[:40]!r}... ({len(text)} characters)"


def _parse_time(text: str, tz: str | None) -> float:
    """ISO 8601 → epoch seconds; a time without offset is read in `tz` (or UTC)."""
    from chalicelib.calls.schedule import WindowError, zone

    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"time {_shown(text)} is not ISO 8601 (e.g. 2026-12-01T09:30 or 2026-12-01T09:30:00+01:00)"
        ) from None
    if moment.tzinfo is None:
        try:
            moment = moment.replace(tzinfo=zone(tz) if tz else UTC)
        except WindowError as exc:
            raise ValueError(str(exc)) from None
    return moment.timestamp()


def _due_at(when: object, tz: str | None, now: float, notes: list[str] | None) -> float:
    """`at` (epoch seconds or ISO 8601) → epoch seconds; a time in the past means now, with a note."""
    text = str(when).strip()
    try:
        due = float(text) if _EPOCH.fullmatch(text) else _parse_time(text, tz)
    except (OverflowError, OSError):
        due = math.inf
    if not (math.isfinite(due) and 0 <= due < LATEST_DUE_AT):
        raise ValueError(f"time {_shown(text)} is out of range (before 1970 or after 9999)")
    if due < now:
        if notes is not None:
            notes.append(f"time {_shown(text)} is in the past: the call is due now")
        return now
    return due


def _duplicate_headers(names: Iterable[str]) -> str | None:
    """The first header name given twice, compared as Plivo compares them (case-insensitively)."""
    seen: dict[str, str] = {}
    for name in names:
        key = name.casefold()
        if key in seen:
            same = f"{seen[key]!r}" if seen[key] == name else f"{seen[key]!r} and {name!r}"
            return f"header {same} given twice (Plivo treats header names case-insensitively): give it once"
        seen[key] = name
    return None


def build_job(
    fields: Mapping[str, Any],
    headers: Mapping[str, str],
    now: float,
    data: Mapping[str, str] | None = None,
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """A job item from user input, validated by the launcher's own check (validate_job); ValueError if bad.

    `fields` may hold `campaign`; `data` fills the job's data map; a time in the past is taken as `now`
    and said in `notes` (when given), so the caller can tell the user."""
    from chalicelib.calls.call_body import JobInvalid, validate_job

    for name, value in fields.items():
        if isinstance(value, str) and not encodable(value):
            raise ValueError(f"{name} is not valid text (it holds bytes that are not UTF-8)")
    call_id = fields.get("call_id")
    if call_id in (None, ""):
        call_id = str(uuid.uuid4())
    elif not (isinstance(call_id, str) and _ID.fullmatch(call_id)):
        raise ValueError(f"id {_shown(str(call_id))} must be {ID_RULE}")
    duplicate = _duplicate_headers(headers)
    if duplicate:
        raise ValueError(duplicate)
    job: dict[str, Any] = {
        "call_id": call_id,
        "status": "pending",
        "to": str(fields.get("to") or "").removeprefix("+"),
        "from": str(fields.get("from") or "").removeprefix("+"),
        "headers": dict(headers),
    }
    if fields.get("campaign") not in (None, ""):
        job["campaign"] = fields["campaign"]
    if data:
        job["data"] = dict(data)
    optional = {name: fields.get(name) for name in OPTIONAL_FIELDS if fields.get(name) not in (None, "")}
    try:
        job.update(validate_job({**job, **optional}))
    except JobInvalid as exc:
        rich = any(isinstance(v, str) and v and not _ALNUM.fullmatch(v) for v in headers.values())
        raise ValueError(f"{exc} ({HEADER_HINT})" if rich else str(exc)) from None
    when = fields.get("at") or fields.get("due_at")
    job["due_at"] = now if when in (None, "") else _due_at(when, job.get("tz"), now, notes)
    return job


def _pairs(values: Iterable[str], option: str, what: str) -> dict[str, str]:
    """`K=V` options → a dict; a name given twice is refused (for headers, in any letter case)."""
    result: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise UserError(f"{option} {value!r} must look like NAME=VALUE")
        if key in result:
            raise UserError(f"{what} {key!r} given twice: give it once")
        result[key] = text
    return result


def _campaign_state(campaign: str | None) -> str | None:
    """The state of the campaign new jobs join (None: no campaign); a missing or stopped one is refused,
    since its jobs would never be dialled."""
    if not campaign:
        return None
    from chalicelib.calls.call_body import data_problems

    problem = data_problems({"campaign": campaign})
    if problem:
        raise UserError(f"--campaign: {problem[0]}")
    found = resources.campaign_store().get(campaign)
    if found is None:
        raise UserError(
            f"campaign {campaign!r} does not exist (create it first: callflow campaigns create {campaign})"
        )
    if found.state == "stopped":
        raise UserError(f"campaign {campaign!r} is stopped: its calls are never dialled")
    return str(found.state)


def _parked(job: dict[str, Any]) -> dict[str, Any]:
    """The job as `campaigns pause` leaves a pending job: never due until `campaigns resume`."""
    from chalicelib.calls.campaign_store import PARKED_DUE_AT

    return {**job, "paused_due_at": job["due_at"], "due_at": PARKED_DUE_AT}


def _park_if_paused_since(campaign: str | None, state: str | None, call_ids: Sequence[str]) -> None:
    """A pause that ran while these jobs were being written may have missed them: park them now."""
    if not campaign or state != "active" or not call_ids:
        return
    now = resources.campaign_store().get(campaign)
    if now is not None and now.state == "paused":
        jobs = resources.campaign_jobs()
        for call_id in call_ids:
            jobs.park(call_id)


@group.command("add")
@click.option(
    "--to", "to", required=True, help="destination: digits (E.164, a leading + is dropped) or a sip: URI"
)
@click.option("--from", "from_", required=True, help="caller id digits")
@click.option(
    "--header",
    "headers",
    multiple=True,
    metavar="K=V",
    help="custom SIP header (X-PH-K), both [A-Za-z0-9]; once per name, in any letter case",
)
@click.option(
    "--data",
    "data",
    multiple=True,
    metavar="K=V",
    help="a per-call value for templates (job.data.K): any text, at most 16 KB in all",
)
@click.option("--campaign", help="the campaign the call belongs to, [A-Za-z0-9-]{1,64}")
@click.option("--at", "at", help="earliest time to dial, ISO 8601 (default now; no offset = in --tz)")
@click.option("--tz", help="IANA time zone of the callee, for the calling window")
@click.option("--id", "call_id", help=f"job id, {ID_RULE} (default a new UUID); an existing id is refused")
@click.option("--window", help="calling hours HH:MM-HH:MM in --tz (default CALL_WINDOW)")
@click.option("--max-attempts", type=int, help="attempts including retries (default MAX_ATTEMPTS)")
@click.option("--caller-name", help="caller name shown to the callee (at most 50 characters)")
@click.option("--answer-url", help="answer URL for this call (default PUBLIC_BASE_URL/answer)")
@click.option("--machine-detection", help="hangup, or voicemail:<Template> (default: the campaign's)")
def calls_add(
    to: str,
    from_: str,
    headers: tuple[str, ...],
    data: tuple[str, ...],
    campaign: str | None,
    at: str | None,
    tz: str | None,
    call_id: str | None,
    window: str | None,
    max_attempts: int | None,
    caller_name: str | None,
    answer_url: str | None,
    machine_detection: str | None,
) -> None:
    """Enqueue one call."""
    from chalicelib.calls.jobs import JobError

    fields = {
        "to": to,
        "from": from_,
        "at": at,
        "tz": tz,
        "call_id": call_id,
        "campaign": campaign,
        "window": window,
        "max_attempts": max_attempts,
        "caller_name": caller_name,
        "answer_url": answer_url,
        "machine_detection": machine_detection,
    }
    notes: list[str] = []
    try:
        job = build_job(
            fields,
            _pairs(headers, "--header", "header"),
            datetime.now(UTC).timestamp(),
            data=_pairs(data, "--data", "data"),
            notes=notes,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    repo = _repo()
    state = _campaign_state(campaign)
    try:
        repo.add(_parked(job) if state == "paused" else job)
    except JobError as exc:
        raise UserError(str(exc)) from None
    _park_if_paused_since(campaign, state, [job["call_id"]])
    for note in notes:
        click.echo(f"note: --at {note.removeprefix('time ')}", err=True)
    waits = f"; campaign {campaign} is paused: it waits for campaigns resume" if state == "paused" else ""
    click.echo(f"added {job['call_id']} (due {_when(job['due_at'])}){waits}")


# --------------------------------------------------------------------------- CSV


class FileProblem(ValueError):
    """The file as a whole cannot be imported (encoding, header row): one line, nothing imported."""

    def __init__(self, message: str, line: int | None = 1) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True)
class Column:
    kind: str  # "field", "header", "data", or "blank" (a column with no name: its cells must be empty)
    name: str
    title: str  # as written in the header row


def parse_columns(titles: Sequence[str]) -> list[Column]:
    """The header row → what each column fills; FileProblem naming every column that cannot be used."""
    columns: list[Column] = []
    unknown: list[str] = []
    for raw in titles:
        title = raw.strip()
        prefix = next((p for p in (*HEADER_COLUMN_PREFIXES, DATA_COLUMN_PREFIX) if title.startswith(p)), None)
        if not title:
            columns.append(Column("blank", "", raw))
        elif title in JOB_FIELDS:
            columns.append(Column("field", title, raw))
        elif prefix and title[len(prefix) :]:
            kind = "data" if prefix == DATA_COLUMN_PREFIX else "header"
            columns.append(Column(kind, title[len(prefix) :], raw))
        else:
            unknown.append(title)
    if unknown:
        names = ", ".join(u if u.isprintable() and len(u) <= 60 else _shown(u) for u in unknown)
        raise FileProblem(
            f"unknown column(s) {names} (known: {', '.join(JOB_FIELDS)}, X-PH-<Name> or header.<Name>, "
            "data.<Name>)"
        )
    if not any(c.kind != "blank" for c in columns):
        raise FileProblem("empty header row (expected at least to,from)")
    seen: dict[tuple[str, str], Column] = {}
    for number, column in enumerate(columns, start=1):
        if column.kind == "blank":
            continue
        key = (column.kind, column.name.casefold() if column.kind == "header" else column.name)
        if key in seen:
            first = seen[key]
            where = f"column {columns.index(first) + 1} and {number}"
            if first.title.strip() == column.title.strip():
                raise FileProblem(f"column {column.title.strip()!r} appears twice ({where})")
            titles = f"{first.title.strip()!r} and {column.title.strip()!r}"
            raise FileProblem(
                f"columns {titles} both name header {first.name!r} "
                f"({where}; Plivo treats header names case-insensitively)"
            )
        seen[key] = column
    missing = [name for name in ("to", "from") if ("field", name) not in seen]
    if missing:
        raise FileProblem(f"missing column(s) {', '.join(missing)}")
    return columns


def row_input(
    columns: Sequence[Column], cells: Sequence[str]
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """One record → (fields, headers, data), blank cells left out; ValueError saying what is wrong."""
    if len(cells) > len(columns) and any(cell.strip() for cell in cells[len(columns) :]):
        raise ValueError(
            f"{len(cells)} cells but only {len(columns)} columns (quote a cell that holds a comma)"
        )
    fields: dict[str, str] = {}
    headers: dict[str, str] = {}
    data: dict[str, str] = {}
    for number, (column, cell) in enumerate(zip(columns, cells, strict=False), start=1):
        where = f"column {column.title.strip()!r}" if column.kind != "blank" else f"column {number} (no name)"
        odd = next((name for char, name in ODD_LINE_BREAKS.items() if char in cell), None)
        if odd:
            raise ValueError(
                f"{where} holds {odd}, which other tools read as a line break; remove it from the cell"
            )
        size = len(cell.encode("utf-8", "surrogatepass"))
        if size > MAX_CELL_BYTES:
            raise ValueError(f"{where} holds {size} bytes (a cell may hold at most {MAX_CELL_BYTES})")
        text = cell.strip()
        if not text:
            continue  # a blank optional cell is an absent field
        if column.kind == "blank":
            raise ValueError(f"{where} holds {_shown(text)}: give the column a name, or empty the cell")
        {"field": fields, "header": headers, "data": data}[column.kind][column.name] = text
    return fields, headers, data


def csv_records(handle: Iterable[str]) -> Iterator[tuple[int, list[str] | str]]:
    """(first line, cells) per CSV record, or (first line, problem) for one the csv module cannot read.

    `handle` must be read with newline='' (so only CR/LF end a record, as in CSV) and csv.field_size_limit
    must exceed the longest field."""
    reader = csv.reader(handle)
    end = 0
    while True:
        start = end + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            end = reader.line_num
            yield start, f"cannot read this row as CSV ({exc})"
            continue
        end = reader.line_num
        yield start, cells


def read_csv(raw: bytes) -> tuple[list[Column], list[tuple[int, list[str] | str]]]:
    """A CSV file's bytes → its columns and its records (see csv_records); FileProblem if unusable."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise FileProblem(f"not UTF-8 ({exc.reason} at byte {exc.start}); save it as UTF-8", line) from None
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, len(text) + 1))  # no field can be longer than the file
    try:
        records = list(csv_records(io.StringIO(text, newline="")))
    finally:
        csv.field_size_limit(limit)
    while records and records[0][1] == []:
        records.pop(0)
    if not records:
        raise FileProblem("empty file (expected a header row with at least to,from)", None)
    line, titles = records[0]
    if isinstance(titles, str):
        raise FileProblem(titles, line)
    try:
        columns = parse_columns(titles)
    except FileProblem as exc:
        exc.line = line
        raise
    return columns, records[1:]


@group.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--campaign", help="the campaign every row belongs to, [A-Za-z0-9-]{1,64}")
def calls_import(file: Path, campaign: str | None) -> None:
    """Enqueue every row of FILE.csv (UTF-8; columns: to, from, and optional call_id, at, tz, window,
    max_attempts, caller_name, answer_url, answer_method, ring_timeout, time_limit, machine_detection,
    X-PH-<Name> or header.<Name> headers, data.<Name> values). A blank cell is an absent field. A bad row
    is reported by line number and skipped; the others are imported."""
    from chalicelib.calls.call_body import data_problems
    from chalicelib.calls.jobs import JobError

    problem = data_problems({"campaign": campaign})
    if problem:
        raise UserError(f"--campaign: {problem[0]}")
    repo = _repo()
    state = _campaign_state(campaign)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{file}: no such file") from None
    except OSError as exc:
        raise UserError(f"{file}: cannot read ({exc.strerror or exc})") from None
    try:
        columns, records = read_csv(raw)
    except FileProblem as exc:
        where = f"{file}:{exc.line}" if exc.line is not None else str(file)
        raise UserError(f"{where}: {exc}") from None
    records = [
        (line, cells) for line, cells in records if isinstance(cells, str) or any(c.strip() for c in cells)
    ]
    now = datetime.now(UTC).timestamp()
    imported_ids: list[str] = []
    bad: list[str] = []
    past: list[int] = []
    with click.progressbar(
        records, label=f"importing {file.name}", file=sys.stderr, show_pos=True
    ) as progress:
        for line, cells in progress:
            notes: list[str] = []
            try:
                if isinstance(cells, str):
                    raise ValueError(cells)
                fields, headers, data = row_input(columns, cells)
                if campaign:
                    fields["campaign"] = campaign
                job = build_job(fields, headers, now, data=data, notes=notes)
                repo.add(_parked(job) if state == "paused" else job)
                imported_ids.append(job["call_id"])
                if notes:
                    past.append(line)
            except (ValueError, JobError) as exc:
                bad.append(f"{file}:{line}: {exc}")
    _park_if_paused_since(campaign, state, imported_ids)
    imported = len(imported_ids)
    for message in bad:
        click.echo(message, err=True)
    if past:
        shown = ", ".join(map(str, past[:10])) + (", ..." if len(past) > 10 else "")
        click.echo(
            f"note: {plural(len(past), 'row')} had a time in the past, taken as now (line {shown})",
            err=True,
        )
    click.echo(
        f"imported {plural(imported, 'call')}" + (f", {plural(len(bad), 'bad row')} skipped" if bad else "")
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
@click.option("--campaign", help="only the jobs of this campaign (oldest due first)")
@click.option("--json", "as_json", is_flag=True, help="a JSON array of the job items as stored")
def calls_list(status: str | None, campaign: str | None, as_json: bool) -> None:
    """List call jobs."""
    items = _listed(status, campaign)
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
                _when(item.get("paused_due_at", item.get("due_at"))),  # a paused campaign's real due time
                str(item.get("to", "")),
                str(item.get("attempts", 0)),
                str(result)[:60],
            )
        )
    if len(rows) == 1:
        where = [f"with status {status}"] if status else []
        where += [f"in campaign {campaign}"] if campaign else []
        click.echo(" ".join(["no calls", *where]))
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]).rstrip())


def _listed(status: str | None, campaign: str | None) -> Iterator[dict[str, Any]]:
    """The jobs `calls list` shows, as stored: a campaign's through its index, else the whole table or
    one status's index."""
    if campaign is None:
        return (dict(job) for job in _repo().list(status=status))
    from chalicelib.calls.call_body import data_problems

    problem = data_problems({"campaign": campaign})
    if problem:
        raise UserError(f"--campaign: {problem[0]}")
    resources.settings().require("calls_table")
    jobs = resources.campaign_jobs().jobs(campaign)
    return (job for job in jobs if status is None or job.get("status") == status)


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


# Fields `calls show` prints in its own sections; everything else a producer wrote is listed at the end.
_SHOWN = {
    "call_id", "status", "to", "from", "campaign", "due_at", "attempts", "max_attempts", "created_at",
    "updated_at", "claimed_at", "request_uuid", "api_id", "call_uuid", "call_status", "outcome",
    "hangup_cause",
    "hangup_cause_name", "hangup_cause_code", "hangup_source", "duration", "bill_duration", "answer_time",
    "end_time", "machine", "machine_detection", "last_error", "last_step", "responses", "result", "data",
    "headers", "history", "attempt_history", "stir_verification", "stir_attestation",
}  # fmt: skip
_RESPONSE_ORDER = ("Digits", "Speech", "SpeechConfidenceScore", "InputType", "RecordUrl", "DialStatus")


def _text(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def _show_lines(item: Mapping[str, Any]) -> list[str]:
    """A job as a person reads it: who and when, each attempt, the steps served and what was said."""
    lines: list[str] = []

    def row(label: str, value: Any) -> None:
        if value not in (None, "", {}, []):
            lines.append(f"{label:<14}{value}")

    row("call", item.get("call_id"))
    row("status", item.get("status"))
    row("to", item.get("to"))
    row("from", item.get("from"))
    row("campaign", item.get("campaign"))
    row("due", _when(item["due_at"]) if "due_at" in item else None)
    attempts = item.get("attempts", 0)
    limit = item.get("max_attempts")
    row("attempts", f"{attempts} of {limit}" if limit is not None else attempts)
    for i, attempt in enumerate(item.get("history") or item.get("attempt_history") or [], start=1):
        if isinstance(attempt, Mapping):
            parts = [f"{k}={_text(v)}" for k, v in attempt.items()]
            row(f"  attempt {attempt.get('attempt', i)}", ", ".join(parts))
    row("request_uuid", item.get("request_uuid"))
    row("call_uuid", item.get("call_uuid"))
    row("api_id", item.get("api_id"))
    row("detection", item.get("machine_detection"))
    if "machine" in item:
        row("machine", "yes (answered by a machine)" if item["machine"] else "no")
    outcome = item.get("outcome")
    if outcome:
        cause = item.get("hangup_cause_name") or item.get("hangup_cause")
        code = item.get("hangup_cause_code")
        detail = [f"{cause}" + (f" ({code})" if code not in (None, "") else "")] if cause else []
        if item.get("hangup_source"):
            detail.append(f"hung up by {item['hangup_source']}")
        row("outcome", outcome + (f": {', '.join(detail)}" if detail else ""))
    if item.get("duration") is not None or item.get("bill_duration") is not None:
        row("duration", f"{item.get('duration', '-')} s (billed {item.get('bill_duration', '-')} s)")
    row("answered", item.get("answer_time"))
    row("ended", item.get("end_time"))
    row("stir", item.get("stir_verification") or item.get("stir_attestation"))
    row("last_error", item.get("last_error"))
    row("updated", _when(item["updated_at"]) if "updated_at" in item else None)
    data = item.get("data")
    if isinstance(data, Mapping) and data:
        lines.append("data")
        lines += [f"  {k} = {_text(v)}" for k, v in sorted(data.items())]
    headers = item.get("headers")
    if isinstance(headers, Mapping) and headers:
        lines.append("headers")
        lines += [f"  {k} = {_text(v)}" for k, v in sorted(headers.items())]
    responses = item.get("responses")
    if item.get("last_step") or responses:
        lines.append("steps" + (f" (last served: {item['last_step']})" if item.get("last_step") else ""))
    if isinstance(responses, Mapping):
        timed = sorted(
            responses.items(),
            key=lambda pair: float(pair[1].get("at", 0)) if isinstance(pair[1], Mapping) else 0.0,
        )
        for step, given in timed:
            if not isinstance(given, Mapping):
                lines.append(f"  {step}: {_text(given)}")
                continue
            at = _when(given["at"]) if "at" in given else "-"
            keys = [k for k in _RESPONSE_ORDER if k in given]
            keys += sorted(k for k in given if k not in keys and k not in ("at", "CallUUID"))
            said = ", ".join(
                f"{k}={_text(given[k])!r}" if k == "Speech" else f"{k}={_text(given[k])}" for k in keys
            )
            lines.append(f"  {at}  {step}: {said or '(no input)'}")
    row("result", item.get("result") or ("none" if responses else None))
    others = sorted(k for k in item if k not in _SHOWN)
    if others:
        lines.append("other fields")
        lines += [f"  {k} = {_text(item[k])}" for k in others]
    return lines


@group.command("show")
@click.argument("call_id")
@click.option("--json", "as_json", is_flag=True, help="the job item as stored")
def calls_show(call_id: str, as_json: bool) -> None:
    """Show one call job: its attempts, the steps served, what the caller pressed or said, the result."""
    item = _repo().get(call_id)
    if item is None:
        raise UserError(f"no call job {_shown(call_id)} (callflow calls list shows them)")
    if as_json:
        click.echo(json.dumps(item, indent=2, default=str, sort_keys=True))
        return
    for line in _show_lines(item):
        click.echo(line)
