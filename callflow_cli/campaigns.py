"""`callflow campaigns ...` and `callflow dnc ...`: create and steer campaigns, keep the do-not-call list,
and report what happened."""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from callflow_cli.errors import UserError
from chalicelib.calls.campaigns import Campaign, CampaignError, CampaignState

# A pause or a do-not-call entry is in force once the command returns: the launcher re-reads campaign states
# and the list at most CHECK_MAX_AGE seconds before each dial, so the command waits a little longer than that.
from chalicelib.calls.gate import CHECK_MAX_AGE

GRACE_SECONDS = CHECK_MAX_AGE + 1.0


def _store() -> Any:
    from chalicelib import resources

    return resources.campaign_store()


def _jobs() -> Any:
    from chalicelib import resources

    return resources.campaign_jobs()


def _campaign_or_fail(name: str) -> Campaign:
    campaign = _store().get(name)
    if campaign is None:
        raise UserError(f"campaign {name!r} does not exist (callflow campaigns list shows them)")
    return campaign


@click.group("campaigns")
def campaigns() -> None:
    """Create, pause, resume, stop and report campaigns."""


@campaigns.command("create")
@click.argument("name")
@click.option("--window", help="local calling hours HH:MM-HH:MM (default CALL_WINDOW)")
@click.option("--tz", help="IANA time zone of the campaign's callees and of its blackout dates")
@click.option("--days", help="weekdays it may call, e.g. mon-fri or mon,wed,fri")
@click.option("--blackout", multiple=True, metavar="YYYY-MM-DD", help="a date it may not call (repeatable)")
@click.option("--max-attempts", type=click.IntRange(1, 100), help="attempts per job (default MAX_ATTEMPTS)")
@click.option("--retry", multiple=True, metavar="OUTCOME=S,S", help="retry delays per outcome; empty: never")
@click.option("--machine-detection", help="hangup, or voicemail:<Template>")
@click.option("--from", "caller_id", help="caller id for jobs that give none")
@click.option("--weight", type=float, default=1.0, show_default=True, help="share of the account's CPS")
def campaigns_create(
    name: str,
    window: str | None,
    tz: str | None,
    days: str | None,
    blackout: tuple[str, ...],
    max_attempts: int | None,
    retry: tuple[str, ...],
    machine_detection: str | None,
    caller_id: str | None,
    weight: float,
) -> None:
    """Create campaign NAME ([A-Za-z0-9-]{1,64}) with its calling rules."""
    from chalicelib.calls import campaigns as rules
    from chalicelib.calls.campaign_store import CampaignExists
    from chalicelib.calls.numbers import NumberError, normalize

    try:
        retries = dict(rules.parse_retry(text) for text in retry)
        campaign = Campaign(
            name=name,
            window=window,
            tz=tz,
            days=rules.parse_days(days) if days else None,
            blackout=tuple(sorted({rules.parse_date(d) for d in blackout})),
            max_attempts=max_attempts,
            retry=retries,
            machine_detection=machine_detection,
            caller_id=normalize(caller_id) if caller_id else None,
            weight=weight,
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
    from chalicelib.calls.campaigns import format_days

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

    try:
        return _store().set_state(name, state, allowed)  # type: ignore[no-any-return]
    except CampaignNotFound as exc:
        raise UserError(str(exc)) from None
    except ValueError as exc:
        raise UserError(str(exc)) from None


@campaigns.command("pause")
@click.argument("name")
def campaigns_pause(name: str) -> None:
    """No call of NAME starts once this returns; its pending jobs wait, and cost the launcher no reads."""
    _steer(name, CampaignState.PAUSED, (CampaignState.ACTIVE, CampaignState.PAUSED))
    parked = sum(
        1 for job in _jobs().jobs(name) if job.get("status") == "pending" and _jobs().park(job["call_id"])
    )
    time.sleep(GRACE_SECONDS)  # a launcher pass in flight sees the new state before its next dial
    click.echo(f"paused campaign {name}; {parked} pending job{'s' if parked != 1 else ''} wait")


@campaigns.command("resume")
@click.argument("name")
def campaigns_resume(name: str) -> None:
    """NAME's jobs are dialled again from the next launcher pass."""
    _steer(name, CampaignState.ACTIVE, (CampaignState.PAUSED, CampaignState.ACTIVE))
    released = sum(
        1 for job in _jobs().jobs(name) if job.get("status") == "pending" and _jobs().unpark(job["call_id"])
    )
    click.echo(f"resumed campaign {name}; {released} job{'s' if released != 1 else ''} back in the queue")


@campaigns.command("stop")
@click.argument("name")
def campaigns_stop(name: str) -> None:
    """NAME's pending jobs become cancelled; calls already placed finish."""
    _steer(name, CampaignState.STOPPED, tuple(CampaignState))
    reason = f"campaign {name} was stopped"
    cancelled = sum(
        1
        for job in _jobs().jobs(name)
        if job.get("status") == "pending" and _jobs().cancel(job["call_id"], reason)
    )
    time.sleep(GRACE_SECONDS)
    click.echo(f"stopped campaign {name}; {cancelled} pending job{'s' if cancelled != 1 else ''} cancelled")


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
    campaign = _campaign_or_fail(name)
    from chalicelib import resources

    default_tz = resources.settings().default_tz
    stats = report.Stats(default_tz=default_tz)
    try:
        if csv_path:
            with csv_path.open("w", newline="", encoding="utf-8") as out:
                written = report.write_csv(out, _counted(_jobs().jobs(name), stats))
        else:
            written = sum(1 for _ in _counted(_jobs().jobs(name), stats))
        if html_path:
            html_path.write_text(report.render_html(campaign, stats), encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write the report: {exc.strerror or exc}") from None
    where = " and ".join(str(p) for p in (csv_path, html_path) if p)
    click.echo(f"report of {name}: {written} job{'s' if written != 1 else ''} -> {where}")


def _counted(jobs: Iterator[dict[str, Any]], stats: Any) -> Iterator[dict[str, Any]]:
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
    _store().dnc_add(digits, reason)
    time.sleep(GRACE_SECONDS)  # a dial in flight has re-checked the list by now
    click.echo(f"{digits} is on the do-not-call list")


@dnc.command("remove")
@click.argument("number")
def dnc_remove(number: str) -> None:
    digits = _number(number)
    if not _store().dnc_remove(digits):
        raise UserError(f"{digits} is not on the do-not-call list")
    click.echo(f"{digits} removed from the do-not-call list")


@dnc.command("list")
@click.option("--json", "as_json", is_flag=True, help="a JSON array of the entries")
def dnc_list(as_json: bool) -> None:
    entries = sorted(_store().dnc_list(), key=lambda e: e["number"])
    if as_json:
        click.echo(json.dumps(entries, default=_json_default, indent=2))
        return
    if not entries:
        click.echo("the do-not-call list is empty")
    for entry in entries:
        click.echo(entry["number"] + (f"  {entry['reason']}" if entry.get("reason") else ""))


def _import_rows(file: Path) -> Iterator[tuple[int, str, str | None]]:
    """(line, number, reason): one number a line, or a CSV with a `number` column (and maybe `reason`)."""
    with file.open(newline="", encoding="utf-8-sig") as handle:
        first = handle.readline()
        handle.seek(0)
        header = [h.strip().lower() for h in next(csv.reader([first]), [])]
        if "number" in header:
            reader = csv.DictReader(handle)
            for row in reader:
                lowered = {(k or "").strip().lower(): (v or "") for k, v in row.items()}
                yield (
                    reader.line_num,
                    lowered.get("number", "").strip(),
                    (lowered.get("reason") or "").strip() or None,
                )
            return
        for line_no, line in enumerate(handle, start=1):
            text = line.strip()
            if text and not text.startswith("#"):
                yield line_no, text.split(",")[0].strip(), None


@dnc.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
def dnc_import(file: Path) -> None:
    """Add every number of FILE; a bad line is reported and the rest go in."""
    from chalicelib.calls.numbers import NumberError, normalize

    good: list[tuple[str, str | None]] = []
    bad = 0
    try:
        for line_no, text, reason in _import_rows(file):
            try:
                good.append((normalize(text), reason))
            except NumberError as exc:
                bad += 1
                click.echo(f"{file.name}:{line_no}: {exc}", err=True)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{file.name}: cannot read it as text or CSV: {exc}") from None
    added = _store().dnc_add_many(good)
    time.sleep(GRACE_SECONDS)
    click.echo(
        f"added {added} number{'s' if added != 1 else ''} to the do-not-call list"
        + (f"; {bad} bad line(s)" if bad else "")
    )
    if bad:
        sys.exit(1)
