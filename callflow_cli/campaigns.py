"""`callflow campaigns ...` and `callflow dnc ...`: create and steer campaigns, keep the do-not-call list,
and report what happened."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from callflow_cli.campaign_rules import CampaignError
from callflow_cli.errors import UserError, plural
from chalicelib.calls.call_body import encodable
from chalicelib.calls.campaigns import MAX_WEIGHT, Campaign, CampaignState, is_campaign_name

# A pause or a do-not-call entry is in force once the command returns: the launcher re-reads campaign states
# and the list at most CHECK_MAX_AGE seconds before each dial, so the command waits a little longer than that.
from chalicelib.calls.gate import CHECK_MAX_AGE

if TYPE_CHECKING:
    from callflow_cli.report import Stats
    from chalicelib.calls.campaign_store import CampaignJobs, CampaignStore

DEFAULT_GRACE_SECONDS = CHECK_MAX_AGE + 1.0
# Read at each wait, so a test can set it to 0 (monkeypatch) without touching the production default.
GRACE_SECONDS = DEFAULT_GRACE_SECONDS


def _grace() -> None:
    """Wait until every launcher pass in flight has re-checked states and the list (see gate.py)."""
    if GRACE_SECONDS > 0:
        time.sleep(GRACE_SECONDS)


PARALLEL_WRITES = 16  # job writes in flight at once while pausing, resuming or stopping


def _each_job(jobs: Iterable[Mapping[str, Any]], write: Callable[[str], bool]) -> int:
    """Apply a conditional write to each job read, several in flight and a bounded number queued: one at a
    time, a campaign of 10 000 pending jobs took a minute to pause on DynamoDB; this way a few seconds.
    How many writes changed their job."""
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    changed = 0
    with ThreadPoolExecutor(PARALLEL_WRITES, thread_name_prefix="steer") as pool:
        queued: set[Future[bool]] = set()
        for job in jobs:
            queued.add(pool.submit(write, str(job["call_id"])))
            if len(queued) >= 4 * PARALLEL_WRITES:
                finished, queued = wait(queued, return_when=FIRST_COMPLETED)
                changed += sum(f.result() for f in finished)
        changed += sum(f.result() for f in queued)
    return changed


def _store() -> CampaignStore:
    from chalicelib import resources

    return resources.campaign_store()


def _jobs() -> CampaignJobs:
    from chalicelib import resources

    return resources.campaign_jobs()


def _from_aws(exc: BaseException) -> bool:
    """botocore's timeouts and connection errors subclass OSError (through requests): not a file's fault."""
    from botocore.exceptions import BotoCoreError

    return isinstance(exc, BotoCoreError)


def _campaign_or_fail(name: str) -> Campaign:
    if not is_campaign_name(name):
        shown = name if encodable(name) else name.encode("utf-8", "replace").decode("utf-8")
        raise UserError(f"campaign {shown!r} does not exist (names are [A-Za-z0-9-]{{1,64}})")
    campaign = _store().get(name)
    if campaign is None:
        raise UserError(f"campaign {name!r} does not exist (callflow campaigns list shows them)")
    return campaign


def _whole(text: str | None, option: str, low: int, high: int) -> int | None:
    """An option's whole number in [low, high], or one clear line (click's own check exits 2 with usage)."""
    if text is None:
        return None
    value = text.strip()
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        raise UserError(f"{option} {text!r} must be a whole number from {low} to {high}")
    return int(value)


def _weight(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= MAX_WEIGHT):
        raise UserError(f"--weight {text!r}: weight must be a number above 0 and at most {MAX_WEIGHT}")
    return value


def _retries(texts: Iterable[str]) -> dict[str, tuple[int, ...]]:
    from callflow_cli import campaign_rules as rules

    found: dict[str, tuple[int, ...]] = {}
    for text in texts:
        outcome, delays = rules.parse_retry(text)
        if outcome in found:
            raise CampaignError(f"--retry {outcome} given twice: give it once, e.g. {outcome}=300,900")
        found[outcome] = delays
    return found


@click.group("campaigns")
def campaigns() -> None:
    """Create, pause, resume, stop and report campaigns."""


@campaigns.command("create")
@click.argument("name")
@click.option("--window", help="local calling hours HH:MM-HH:MM (default CALL_WINDOW)")
@click.option("--tz", help="IANA time zone of the campaign's callees and of its blackout dates")
@click.option("--days", help="weekdays it may call, e.g. mon-fri or mon,wed,fri")
@click.option("--blackout", multiple=True, metavar="YYYY-MM-DD", help="a date it may not call (repeatable)")
@click.option("--max-attempts", metavar="N", help="attempts per job, 1 to 100 (default MAX_ATTEMPTS)")
@click.option("--retry", multiple=True, metavar="OUTCOME=S,S", help="retry delays per outcome; empty: never")
@click.option("--machine-detection", help="hangup, or voicemail:<Template>")
@click.option("--from", "caller_id", help="caller id for jobs that give none")
@click.option(
    "--weight", default="1", show_default=True, help="share of the account's CPS (above 0, at most 1000)"
)
def campaigns_create(
    name: str,
    window: str | None,
    tz: str | None,
    days: str | None,
    blackout: tuple[str, ...],
    max_attempts: str | None,
    retry: tuple[str, ...],
    machine_detection: str | None,
    caller_id: str | None,
    weight: str,
) -> None:
    """Create campaign NAME ([A-Za-z0-9-]{1,64}) with its calling rules."""
    from callflow_cli import campaign_rules as rules
    from chalicelib.calls.campaign_store import CampaignExists
    from chalicelib.calls.numbers import NumberError, normalize

    for option, value in (("name", name), ("--window", window), ("--tz", tz), ("--days", days)):
        if value is not None and not encodable(value):
            raise UserError(f"{option} is not valid text (it holds bytes that are not UTF-8)")
    try:
        campaign = Campaign(
            name=name,
            window=window,
            tz=tz,
            days=rules.parse_days(days) if days is not None else None,
            blackout=tuple(sorted({rules.parse_date(d) for d in blackout})),
            max_attempts=_whole(max_attempts, "--max-attempts", 1, 100),
            retry=_retries(retry),
            machine_detection=machine_detection,
            caller_id=normalize(caller_id) if caller_id is not None else None,
            weight=_weight(weight),
        )
    except (CampaignError, NumberError) as exc:
        raise UserError(str(exc)) from None
    problems = campaign.problems()
    if problems:
        raise UserError("; ".join(problems))
    try:
        _store().create(campaign)
    except CampaignExists as exc:
        raise UserError(str(exc)) from None
    click.echo(f"created campaign {name} (active)")


@campaigns.command("list")
@click.option("--json", "as_json", is_flag=True, help="a JSON array of the campaigns")
def campaigns_list(as_json: bool) -> None:
    """Every campaign with its state."""
    found = sorted(_store().all(), key=lambda c: c.name)
    if as_json:
        click.echo(json.dumps([c.to_item() for c in found], default=_json_default, indent=2))
        return
    if not found:
        click.echo("no campaigns")
    for c in found:
        click.echo(f"{c.name:<24} {c.state:<8} weight {c.weight:g}")


def _json_default(value: Any) -> Any:
    from decimal import Decimal

    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(type(value).__name__)


def _rules_lines(c: Campaign) -> list[str]:
    from callflow_cli.campaign_rules import format_days

    lines = [f"campaign {c.name}: {c.state}", f"  weight            {c.weight:g}"]
    shown = {
        "window": c.window,
        "tz": c.tz,
        "days": format_days(c.days) if c.days is not None else None,
        "blackout": ", ".join(c.blackout) or None,
        "max attempts": c.max_attempts,
        "machine detection": c.machine_detection,
        "from": c.caller_id,
    }
    lines += [f"  {k:<17} {v}" for k, v in shown.items() if v is not None]
    for outcome, delays in sorted(c.retry.items()):
        lines.append(f"  retry {outcome:<11} {','.join(map(str, delays)) or 'never'}")
    return lines


@campaigns.command("show")
@click.argument("name")
def campaigns_show(name: str) -> None:
    """The rules, the state and live counts (status, outcome, result) with a progress bar."""
    from callflow_cli import report

    campaign = _campaign_or_fail(name)
    stats = report.Stats()
    for job in _jobs().jobs(name):
        stats.add(job)
    for line in _rules_lines(campaign):
        click.echo(line)
    click.echo(f"  jobs              {stats.total}")
    click.echo("  progress          " + report.progress_bar(stats.done, stats.total))
    for title, counts in (("status", stats.status), ("outcome", stats.outcome), ("result", stats.result)):
        if counts:
            click.echo(f"  {title:<17} " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))


def _steer(name: str, state: CampaignState, allowed: tuple[CampaignState, ...]) -> CampaignState:
    from chalicelib.calls.campaign_store import CampaignNotFound

    _campaign_or_fail(name)  # a name no campaign can have is one line, before any write
    try:
        return _store().set_state(name, state, allowed)
    except CampaignNotFound as exc:
        raise UserError(str(exc)) from None
    except ValueError as exc:
        raise UserError(str(exc)) from None


@campaigns.command("pause")
@click.argument("name")
def campaigns_pause(name: str) -> None:
    """No call of NAME starts once this returns; its pending jobs wait, and cost the launcher no reads."""
    _steer(name, CampaignState.PAUSED, (CampaignState.ACTIVE, CampaignState.PAUSED))
    jobs = _jobs()
    parked = _each_job(jobs.pending(name), jobs.park)
    _grace()  # a launcher pass in flight sees the new state before its next dial
    click.echo(f"paused campaign {name}; {plural(parked, 'pending job')} wait")


@campaigns.command("resume")
@click.argument("name")
def campaigns_resume(name: str) -> None:
    """NAME's jobs are dialled again from the next launcher pass."""
    _steer(name, CampaignState.ACTIVE, (CampaignState.PAUSED, CampaignState.ACTIVE))
    jobs = _jobs()
    released = _each_job(jobs.pending(name, parked=True), jobs.unpark)
    click.echo(f"resumed campaign {name}; {plural(released, 'job')} back in the queue")


@campaigns.command("stop")
@click.argument("name")
def campaigns_stop(name: str) -> None:
    """NAME's pending jobs become cancelled; calls already placed finish."""
    _steer(name, CampaignState.STOPPED, tuple(CampaignState))
    reason = f"campaign {name} was stopped"
    jobs = _jobs()
    cancelled = _each_job(jobs.pending(name, parked=None), lambda call_id: jobs.cancel(call_id, reason))
    _grace()
    click.echo(f"stopped campaign {name}; {plural(cancelled, 'pending job')} cancelled")


@campaigns.command("report")
@click.argument("name")
@click.option("--csv", "csv_path", type=click.Path(path_type=Path, dir_okay=False), help="one row per job")
@click.option(
    "--html", "html_path", type=click.Path(path_type=Path, dir_okay=False), help="a page with charts"
)
def campaigns_report(name: str, csv_path: Path | None, html_path: Path | None) -> None:
    """Write NAME's report: --csv FILE (one row per job) and/or --html FILE (one self-contained page)."""
    from callflow_cli import report

    if not csv_path and not html_path:
        raise UserError("say where: --csv FILE and/or --html FILE")
    if csv_path and html_path and csv_path.resolve() == html_path.resolve():
        raise UserError(f"--csv and --html name the same file ({csv_path}): give two")
    campaign = _campaign_or_fail(name)
    from chalicelib import resources

    stats = report.Stats(default_tz=resources.settings().default_tz)
    jobs = _counted(_jobs().jobs(name), stats)  # streamed: one index page in memory at a time
    try:
        if csv_path:
            with csv_path.open("w", newline="", encoding="utf-8") as out:
                written = report.write_csv(out, jobs)
        else:
            written = sum(1 for _ in jobs)
        if html_path:
            html_path.write_text(report.render_html(campaign, stats), encoding="utf-8")
    except OSError as exc:
        if _from_aws(exc):  # botocore's timeouts are OSErrors too: the Group words them
            raise
        where = exc.filename or csv_path or html_path
        raise UserError(f"cannot write the report to {where}: {exc.strerror or exc}") from None
    where = " and ".join(str(p) for p in (csv_path, html_path) if p)
    click.echo(f"report of {name}: {plural(written, 'job')} -> {where}")


def _counted(jobs: Iterator[dict[str, Any]], stats: Stats) -> Iterator[dict[str, Any]]:
    for job in jobs:
        stats.add(job)
        yield job


# ---------------------------------------------------------------- do-not-call


@click.group("dnc")
def dnc() -> None:
    """The do-not-call list: numbers on it are never dialled."""


def _number(text: str) -> str:
    from chalicelib.calls.numbers import NumberError, normalize

    try:
        return normalize(text)
    except NumberError as exc:
        raise UserError(str(exc)) from None


@dnc.command("add")
@click.argument("number")
@click.option("--reason", help="why (kept with the number)")
def dnc_add(number: str, reason: str | None) -> None:
    """Add NUMBER: once this returns it is never dialled."""
    digits = _number(number)
    if reason is not None and not encodable(reason):
        raise UserError("--reason is not valid text (it holds bytes that are not UTF-8)")
    _store().dnc_add(digits, reason)
    _grace()  # a dial in flight has re-checked the list by now
    click.echo(f"{digits} is on the do-not-call list")


@dnc.command("remove")
@click.argument("number")
def dnc_remove(number: str) -> None:
    """Take NUMBER off the list: it may be dialled again."""
    digits = _number(number)
    if not _store().dnc_remove(digits):
        raise UserError(f"{digits} is not on the do-not-call list")
    click.echo(f"{digits} removed from the do-not-call list")


@dnc.command("list")
@click.option("--json", "as_json", is_flag=True, help="a JSON array of the entries")
def dnc_list(as_json: bool) -> None:
    """Every number on the list, with its reason."""
    entries = sorted(_store().dnc_list(), key=lambda e: e["number"])
    if as_json:
        click.echo(json.dumps(entries, default=_json_default, indent=2))
        return
    if not entries:
        click.echo("the do-not-call list is empty")
    for entry in entries:
        click.echo(entry["number"] + (f"  {entry['reason']}" if entry.get("reason") else ""))


def _import_rows(file: Path) -> Iterator[tuple[int, str, str | None, str | None]]:
    """(line, number, reason, problem): one number a line, or a CSV with a `number` column (and maybe
    `reason`), read a line at a time. Bytes that are not UTF-8 are kept as surrogates, so they fail their own
    line only; `problem` says why a line cannot be read at all (the csv module refused it)."""
    from callflow_cli.calls import csv_records

    with file.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        first = handle.readline()
        titles = next(csv_records([first]), (1, []))[1]
        header = [h.strip().lower() for h in titles] if isinstance(titles, list) else []
        if "number" in header:
            number_at = header.index("number")
            reason_at = header.index("reason") if "reason" in header else None
            for line_no, cells in csv_records(handle):
                if isinstance(cells, str):
                    yield line_no + 1, "", None, cells
                    continue
                if not any(c.strip() for c in cells):
                    continue
                number = cells[number_at].strip() if number_at < len(cells) else ""
                reason = cells[reason_at].strip() if reason_at is not None and reason_at < len(cells) else ""
                yield line_no + 1, number, reason or None, None
            return
        handle.seek(0)
        for line_no, line in enumerate(handle, start=1):
            text = line.strip()
            if text and not text.startswith("#"):
                yield line_no, text.split(",")[0].strip(), None, None


@dnc.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
def dnc_import(file: Path) -> None:
    """Add every number of FILE (one a line, or a CSV with a `number` column and an optional `reason`);
    a bad line is reported as FILE:LINE and the rest go in. Streamed: memory does not grow with the file."""
    from chalicelib.calls.numbers import NumberError, normalize

    bad = 0

    def numbers() -> Iterator[tuple[str, str | None]]:
        nonlocal bad
        for line_no, text, reason, problem in _import_rows(file):
            try:
                if problem is not None:
                    raise NumberError(problem)
                if not encodable(text) or (reason is not None and not encodable(reason)):
                    raise NumberError("the line holds bytes that are not UTF-8")
                yield normalize(text), reason
            except NumberError as exc:
                bad += 1
                click.echo(f"{file}:{line_no}: {exc}", err=True)

    try:
        added = _store().dnc_add_many(numbers())
    except FileNotFoundError:
        raise UserError(f"{file}: no such file") from None
    except OSError as exc:
        if _from_aws(exc):
            raise
        raise UserError(f"{file}: cannot read ({exc.strerror or exc})") from None
    _grace()
    click.echo(
        f"added {plural(added, 'number')} to the do-not-call list"
        + (f"; {plural(bad, 'bad line')} skipped" if bad else "")
    )
    if bad:
        sys.exit(1)
