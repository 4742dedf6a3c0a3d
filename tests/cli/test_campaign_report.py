"""The campaign report: counts, the CSV, and the HTML page in a real headless Chromium with the
network off."""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from callflow_cli import report
from chalicelib.calls.campaigns import Campaign, CampaignState

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHARTS = ("funnel", "status", "outcomes", "results", "steps", "calls-by-hour", "answer-rate-by-hour")


def sample_jobs(n: int = 60) -> list[dict]:
    jobs = []
    base = 1796112000  # 2026-12-01T08:00:00Z
    for i in range(n):
        job = {
            "call_id": f"job-{i}",
            "to": "12125550123" if i % 2 else "33612345678",
            "campaign": "Spring",
            "status": ["completed", "failed", "pending", "completed", "cancelled"][i % 5],
            "attempts": 1 + i % 3,
            "claimed_at": base + i * 1800,
        }
        if job["status"] in ("completed", "failed"):
            job["outcome"] = ["completed", "busy", "machine", "no-answer"][i % 4]
        if job["status"] == "completed":
            job["result"] = "confirmed" if i % 3 else "cancelled"
            job["responses"] = {"Reminder": {"Digits": "1" if i % 3 else "2", "at": base}}
        jobs.append(job)
    return jobs


def test_stats_count_what_the_jobs_say():
    stats = report.Stats()
    for job in sample_jobs():
        stats.add(job)
    assert stats.total == 60 and stats.status["completed"] == 24 and stats.done == 48
    assert sum(stats.calls_by_hour.values()) == 60
    assert stats.steps["Reminder"] == 24 and stats.answers["Reminder"]["1"] == 16
    assert report.progress_bar(48, 60).endswith("48/60 done (80%)")


def test_csv_has_one_row_per_job_with_every_response():
    out = io.StringIO()
    assert report.write_csv(out, sample_jobs(10)) == 10
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(rows) == 10 and rows[0]["call_id"] == "job-0"
    assert (
        '"Digits":"2"' in rows[0]["responses"]
        and '"Digits":"1"' in rows[5]["responses"]
        and rows[2]["responses"] == ""
    )


class _Marks(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.chart: str | None = None
        self.marks: dict[str, int] = {}

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        if tag == "svg" and "data-chart" in values:
            self.chart = values["data-chart"]
            self.marks[self.chart] = 0
        elif tag == "rect" and self.chart and "mark" in (values.get("class") or ""):
            self.marks[self.chart] += 1

    def handle_endtag(self, tag):
        if tag == "svg":
            self.chart = None


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("headless Chromium is missing: `make test` installs Debian's chromium package")
    return found


def test_html_report_draws_every_chart_in_a_real_browser_offline(tmp_path):
    campaign = Campaign("Spring", CampaignState.ACTIVE, "09:00-18:00", None, (0, 1, 2, 3, 4), ("2026-12-25",))
    stats = report.Stats()
    for job in sample_jobs():
        stats.add(job)
    page = report.render_html(campaign, stats, now=1796112000)
    assert not re.search(r"(src|href)=[\"']?https?:", page), "the page must not load anything"
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "campaign-report.png"
    offline = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--proxy-server=127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        [_chromium(), *offline, "--dump-dom", path.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == [], console
    parser = _Marks()
    parser.feed(dom.stdout)
    assert set(CHARTS) <= set(parser.marks), parser.marks
    assert all(parser.marks[c] > 0 for c in CHARTS), parser.marks
    assert parser.marks["status"] == len(stats.status)
    done = subprocess.run(
        [_chromium(), *offline, f"--screenshot={shot}", "--window-size=1100,2400", path.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and shot.stat().st_size > 10_000, done.stderr[-2000:]


def test_stats_stay_bounded_whatever_the_callers_say():
    """Free-text answers and results are counted up to report.MAX_DISTINCT values, the rest as one bar."""
    stats = report.Stats()
    for i in range(5000):
        stats.add(
            {
                "status": "completed",
                "outcome": "completed",
                "result": f"result-{i}",
                "responses": {f"Step{i}": {"Speech": f"said {i}"}, "Ask": {"Speech": f"words {i}"}},
            }
        )
    assert len(stats.result) == report.MAX_DISTINCT + 1 and stats.result[report.OTHER] > 4900
    assert len(stats.steps) <= report.MAX_DISTINCT + 1 and stats.steps["Ask"] == 5000
    assert len(stats.answers) <= report.MAX_DISTINCT + 1
    assert all(len(c) <= report.MAX_DISTINCT + 1 for c in stats.answers.values())
    assert sum(stats.result.values()) == 5000
