"""Campaign reports: counts gathered while the jobs stream past (memory does not grow with the campaign),
a CSV with one row per job, and one self-contained HTML page whose charts are inline SVG (no script, no
network at view time)."""

from __future__ import annotations

import csv
import html
import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import IO, Any

from chalicelib.calls.campaigns import Campaign

TERMINAL = ("completed", "failed", "cancelled", "unknown")
FUNNEL = ("pending", "dialing", "placed", "completed")
CSV_COLUMNS = (
    "call_id",
    "to",
    "campaign",
    "status",
    "attempts",
    "outcome",
    "result",
    "last_step",
    "hangup_cause_name",
    "duration",
    "last_error",
    "responses",
)
ANSWERED_OUTCOMES = frozenset({"completed", "machine"})
# Distinct values a chart keeps (per counter): free-text answers (what callers said) or results must not
# make the report's memory grow with the campaign, nor a chart with 100 000 bars.
MAX_DISTINCT = 30
OTHER = "(others)"


def _bump(counter: Counter[str], key: str) -> None:
    """Count `key`, or OTHER once the counter holds MAX_DISTINCT values."""
    if key in counter or len(counter) < MAX_DISTINCT:
        counter[key] += 1
    else:
        counter[OTHER] += 1


def progress_bar(done: int, total: int, width: int = 30) -> str:
    share = done / total if total else 0.0
    filled = round(share * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} done ({share:.0%})"


def _zone_of(job: Mapping[str, Any], default_tz: str) -> str:
    tz = job.get("tz")
    if isinstance(tz, str) and tz:
        return tz
    to = str(job.get("to") or "")
    if to.isdigit():
        from chalicelib.calls.numbers import zones_for

        zones = zones_for(to)
        if zones:
            return zones[0]
    return default_tz


def _hour(instant: Any, zone: str) -> int | None:
    try:
        from zoneinfo import ZoneInfo

        return datetime.fromtimestamp(float(instant), ZoneInfo(zone)).hour
    except (TypeError, ValueError, OverflowError, KeyError, OSError):
        return None


class Stats:
    """Everything the report shows, added one job at a time."""

    def __init__(self, default_tz: str = "UTC") -> None:
        self.default_tz = default_tz
        self.total = 0
        self.done = 0
        self.status: Counter[str] = Counter()
        self.outcome: Counter[str] = Counter()
        self.result: Counter[str] = Counter()
        self.steps: Counter[str] = Counter()
        self.answers: dict[str, Counter[str]] = {}
        self.calls_by_hour: Counter[int] = Counter()
        self.answered_by_hour: Counter[int] = Counter()

    def add(self, job: Mapping[str, Any]) -> None:
        self.total += 1
        status = str(job.get("status") or "unknown")
        _bump(self.status, status)
        if status in TERMINAL:
            self.done += 1
        if job.get("outcome"):
            _bump(self.outcome, str(job["outcome"]))
        if job.get("result"):
            _bump(self.result, str(job["result"]))
        responses = job.get("responses")
        if isinstance(responses, Mapping):
            for step, given in responses.items():
                _bump(self.steps, str(step))
                if isinstance(given, Mapping):
                    answer = (
                        given.get("Digits") or given.get("Speech") or given.get("DialStatus") or "(other)"
                    )
                    key = str(step) if str(step) in self.steps else OTHER
                    _bump(self.answers.setdefault(key, Counter()), str(answer)[:40])
        attempts = job.get("attempts") or 0
        dialled_at = job.get("claimed_at") or job.get("updated_at")
        if isinstance(attempts, (int, float)) and attempts > 0 and dialled_at is not None:
            hour = _hour(dialled_at, _zone_of(job, self.default_tz))
            if hour is not None:
                self.calls_by_hour[hour] += 1
                if job.get("outcome") in ANSWERED_OUTCOMES or job.get("answer_time"):
                    self.answered_by_hour[hour] += 1


def write_csv(out: IO[str], jobs: Iterable[Mapping[str, Any]]) -> int:
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    count = 0
    for job in jobs:
        row = []
        for column in CSV_COLUMNS:
            value = job.get(column)
            if column == "responses":
                value = json.dumps(value, sort_keys=True, default=str, separators=(",", ":")) if value else ""
            row.append("" if value is None else str(value))
        writer.writerow(row)
        count += 1
    return count


# ---------------------------------------------------------------- the page

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:60rem;
color:#1d2330;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.15rem;margin:2rem 0 .4rem}
p.lede{color:#555;margin-top:0}
table.rules{border-collapse:collapse;font-size:.95rem} table.rules td{padding:.15rem .8rem .15rem 0}
.chart text{font-size:12px;fill:#1d2330} .chart .mark{fill:#3b6fd8} .chart .mark.alt{fill:#e39b2d}
.kpis{display:flex;gap:1rem;flex-wrap:wrap} .kpi{background:#f3f5f9;border-radius:.5rem;padding:.6rem 1rem}
.kpi b{display:block;font-size:1.4rem} .empty{color:#777;font-style:italic}
footer{margin-top:3rem;color:#777;font-size:.85rem}
"""


def _bars(chart_id: str, rows: list[tuple[str, float, str]], alt: bool = False) -> str:
    """A horizontal bar chart: one labelled bar (an SVG rect with class "mark") per row."""
    if not rows:
        return f'<p class="empty" data-chart="{chart_id}">Nothing to show yet.</p>'
    top = max(value for _, value, _ in rows) or 1.0
    height = 26 * len(rows) + 10
    parts = [
        f'<svg class="chart" data-chart="{chart_id}" width="800" height="{height}" role="img" '
        f'viewBox="0 0 800 {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (label, value, shown) in enumerate(rows):
        y = 5 + i * 26
        width = max(2.0, 440 * value / top)
        parts.append(f'<text x="0" y="{y + 15}">{html.escape(label[:28])}</text>')
        parts.append(
            f'<rect class="{"mark alt" if alt else "mark"}" x="190" y="{y}" width="{width:.1f}" '
            'height="20" rx="3">'
            f"<title>{html.escape(label)}: {html.escape(shown)}</title></rect>"
        )
        parts.append(f'<text x="{196 + width:.1f}" y="{y + 15}">{html.escape(shown)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _counts(counter: Counter[str], total: int) -> list[tuple[str, float, str]]:
    return [(k, float(v), f"{v} ({v / total:.0%})" if total else str(v)) for k, v in counter.most_common()]


def render_html(campaign: Campaign, stats: Stats, now: float | None = None) -> str:
    from callflow_cli.campaign_rules import format_days

    generated = datetime.fromtimestamp(now if now is not None else time.time()).strftime("%Y-%m-%d %H:%M")
    funnel_total = stats.total
    reached = {
        "queued": stats.total,
        "dialled": stats.total - stats.status["pending"] - stats.status["cancelled"],
        "answered": sum(stats.outcome[o] for o in ANSWERED_OUTCOMES),
        "with a result": sum(stats.result.values()),
    }
    funnel = [
        (k, float(v), f"{v} ({v / funnel_total:.0%})" if funnel_total else "0") for k, v in reached.items()
    ]
    hours = sorted(stats.calls_by_hour)
    by_hour = [
        (f"{h:02d}:00", float(stats.calls_by_hour[h]), f"{stats.calls_by_hour[h]} calls") for h in hours
    ]
    rate = [
        (
            f"{h:02d}:00",
            100.0 * stats.answered_by_hour[h] / stats.calls_by_hour[h],
            f"{stats.answered_by_hour[h] / stats.calls_by_hour[h]:.0%} answered",
        )
        for h in hours
    ]
    rules = {
        "State": str(campaign.state),
        "Calling hours": campaign.window or "the default (CALL_WINDOW)",
        "Time zone": campaign.tz or "each callee's, from the number",
        "Days": format_days(campaign.days) if campaign.days is not None else "every day",
        "Blackout dates": ", ".join(campaign.blackout) or "none",
        "Share of the call rate (weight)": f"{campaign.weight:g}",
    }
    answers = "".join(
        f"<h3>What callers answered at step {html.escape(step)}</h3>"
        + _bars(f"answers-{i}", _counts(counter, sum(counter.values())), alt=True)
        for i, (step, counter) in enumerate(sorted(stats.answers.items()))
    )
    rule_rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rules.items()
    )
    body = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Campaign {html.escape(campaign.name)} - callflow report</title><style>{_CSS}</style></head>
<body>
<h1>Campaign {html.escape(campaign.name)}</h1>
<p class="lede">What happened to the {stats.total} calls of this campaign, as of {generated}.
Every call goes through the same steps: it waits in the queue, is dialled, is answered (by a person or a
machine) and may end with a result, such as a confirmed appointment.</p>
<div class="kpis">
<div class="kpi"><b>{stats.total}</b>calls in the campaign</div>
<div class="kpi"><b>{stats.done}</b>finished</div>
<div class="kpi"><b>{reached["answered"]}</b>answered</div>
<div class="kpi"><b>{reached["with a result"]}</b>with a result</div>
</div>
<h2>Rules</h2><table class="rules">{rule_rows}</table>
<h2>How far the calls got</h2>{_bars("funnel", funnel)}
<h2>Where each call stands now</h2>{_bars("status", _counts(stats.status, stats.total))}
<h2>How the calls ended</h2>{_bars("outcomes", _counts(stats.outcome, sum(stats.outcome.values())))}
<h2>Results</h2>{_bars("results", _counts(stats.result, sum(stats.result.values())))}
<h2>Answers per step</h2>{_bars("steps", _counts(stats.steps, sum(stats.steps.values())))}{answers}
<h2>Calls by the callee's local hour</h2>{_bars("calls-by-hour", by_hour)}
<h2>Answer rate by the callee's local hour</h2>{_bars("answer-rate-by-hour", rate, alt=True)}
<footer>Made by callflow. Outcome is how Plivo says the call ended (completed, busy, no-answer, machine ...);
result is what the conversation set.</footer>
</body></html>
"""
    return body
