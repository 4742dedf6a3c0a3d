"""`callflow campaigns ...` and `callflow dnc ...` through the real CLI (CliRunner) against a moto server with
the calls and campaigns tables of infra/resources.json (issue 12)."""

from __future__ import annotations

import csv
import functools
import json
import time
import uuid
from decimal import Decimal

import pytest

from callflow_cli import campaigns as campaigns_cli
from chalicelib.calls.campaign_store import PARKED_DUE_AT
from tests.cli.conftest import CAMPAIGNS_TABLE
from tests.cli.test_cli import listed, new_id

TO = "14155550123"
FROM = "14155550100"


@pytest.fixture(autouse=True)
def no_grace(monkeypatch):
    """The production wait (a pass in flight re-checks within CHECK_MAX_AGE) is not under test here."""
    monkeypatch.setattr(campaigns_cli, "GRACE_SECONDS", 0)


def name() -> str:
    return f"C-{uuid.uuid4().hex[:10]}"


def create(cli, *args: str, campaign: str | None = None) -> str:
    campaign = campaign or name()
    result = cli("campaigns", "create", campaign, *args)
    assert result.exit_code == 0, result.output
    return campaign


def add(cli, campaign: str, *args: str, call_id: str | None = None, to: str = TO):
    call_id = call_id or new_id()
    result = cli("calls", "add", "--id", call_id, "--to", to, "--from", FROM, "--campaign", campaign, *args)
    return call_id, result


def job(cli, call_id: str) -> dict:
    item = cli.table().get_item(Key={"call_id": call_id}, ConsistentRead=True).get("Item")
    assert item is not None, call_id
    return item


def put_job(cli, campaign: str | None, status: str, **fields) -> str:
    """A job as the launcher or the hangup callback leaves it (not through the CLI)."""
    call_id = new_id()
    item = {"call_id": call_id, "status": status, "due_at": Decimal(1_700_000_000), "to": TO, "from": FROM}
    if campaign:
        item["campaign"] = campaign
    item.update(fields)
    cli.table().put_item(Item=item)
    return call_id


def one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def campaign_item(cli, campaign: str) -> dict:
    return cli.table(CAMPAIGNS_TABLE).get_item(Key={"pk": f"campaign#{campaign}"}, ConsistentRead=True)[
        "Item"
    ]


# -- create --------------------------------------------------------------------------------------------------


def test_create_stores_every_option(cli):
    campaign = name()
    result = cli(
        "campaigns",
        "create",
        campaign,
        "--window",
        "09:00-18:30",
        "--tz",
        "America/New_York",
        "--days",
        "mon-fri",
        "--blackout",
        "2026-12-25",
        "--blackout",
        "2026-01-01",
        "--max-attempts",
        "4",
        "--retry",
        "busy=300,900",
        "--retry",
        "machine=",
        "--machine-detection",
        "voicemail:Reminder",
        "--from",
        "+1 415 555 0100",
        "--weight",
        "2.5",
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"created campaign {campaign} (active)"
    item = campaign_item(cli, campaign)
    assert item["state"] == "active"
    assert item["window"] == "09:00-18:30" and item["tz"] == "America/New_York"
    assert item["days"] == [0, 1, 2, 3, 4]
    assert item["blackout"] == ["2026-01-01", "2026-12-25"]
    assert item["max_attempts"] == 4
    assert item["retry"] == {"busy": [300, 900], "machine": []}
    assert item["machine_detection"] == "voicemail:Reminder"
    assert item["from"] == "14155550100"
    assert item["weight"] == Decimal("2.5")


def test_create_with_no_option_is_active_with_weight_1(cli):
    campaign = create(cli)
    item = campaign_item(cli, campaign)
    assert item["state"] == "active" and item["weight"] == 1
    assert not {"window", "tz", "days", "blackout", "max_attempts", "retry", "from"} & set(item)


def test_machine_detection_hangup(cli):
    campaign = create(cli, "--machine-detection", "hangup")
    assert campaign_item(cli, campaign)["machine_detection"] == "hangup"


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--window", "25:00-26:00"], "25:00-26:00"),
        (["--window", "nine to five"], "nine to five"),
        (["--tz", "Mars/Olympus"], "Mars/Olympus"),
        (["--days", "funday"], "days 'funday'"),
        (["--days", "mon-"], "days 'mon-'"),
        (["--days", ","], "days ','"),
        (["--blackout", "2026-13-01"], "2026-13-01"),
        (["--blackout", "2026-12-25", "--blackout", "tomorrow"], "tomorrow"),
        (["--max-attempts", "0"], "max-attempts"),
        (["--max-attempts", "101"], "max-attempts"),
        (["--max-attempts", "three"], "max-attempts"),
        (["--retry", "bogus=1"], "retry 'bogus=1'"),
        (["--retry", "busy"], "retry 'busy'"),
        (["--retry", "busy=abc"], "retry 'busy=abc'"),
        (["--retry", "busy=-5"], "retry 'busy=-5'"),
        (["--retry", "busy=300", "--retry", "busy=900"], "busy"),
        (["--machine-detection", "beep"], "machine detection"),
        (["--machine-detection", "voicemail:"], "machine detection"),
        (["--machine-detection", "voicemail:Bad Name"], "machine detection"),
        (["--from", "123"], "'123'"),
        (["--from", "not-a-number"], "not-a-number"),
        (["--weight", "0"], "weight"),
        (["--weight", "-1"], "weight"),
        (["--weight", "1001"], "weight"),
        (["--weight", "heavy"], "weight"),
        (["--weight", "nan"], "weight"),
        (["--weight", "inf"], "weight"),
    ],
)
def test_a_bad_value_is_one_clear_line_and_nothing_is_stored(cli, args, fragment):
    campaign = name()
    result = cli("campaigns", "create", campaign, *args)
    one_line_error(result, fragment)
    assert campaign not in cli("campaigns", "list").output


@pytest.mark.parametrize("bad", ["Spring 2026", "spring_26", "x" * 65, "é", ""])
def test_a_bad_name_is_refused(cli, bad):
    one_line_error(cli("campaigns", "create", bad), "campaign name")


def test_an_existing_name_is_refused_and_the_first_is_kept(cli):
    campaign = create(cli, "--weight", "3")
    result = cli("campaigns", "create", campaign, "--weight", "5")
    one_line_error(result, campaign, "exists")
    assert campaign_item(cli, campaign)["weight"] == 3


# -- list ----------------------------------------------------------------------------------------------------


def test_list_shows_every_campaign_with_its_state(cli):
    first, second = create(cli), create(cli, "--weight", "2")
    assert cli("campaigns", "pause", second).exit_code == 0
    result = cli("campaigns", "list")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.output.splitlines()}
    assert lines[first][1] == "active" and lines[second][1] == "paused"
    assert lines[second][-1] == "2"
    as_json = cli("campaigns", "list", "--json")
    assert as_json.exit_code == 0, as_json.output
    found = {c["name"]: c for c in json.loads(as_json.output)}
    assert found[first]["state"] == "active" and found[second] == {
        "name": second,
        "state": "paused",
        "weight": 2,
    }


# -- show ----------------------------------------------------------------------------------------------------


def test_show_prints_rules_state_counts_and_progress(cli):
    campaign = create(cli, "--window", "09:00-17:00", "--days", "mon-fri", "--retry", "busy=60")
    pending = [add(cli, campaign)[0] for _ in range(2)]
    assert all(job(cli, i)["status"] == "pending" for i in pending)
    put_job(cli, campaign, "completed", outcome="completed", result="confirmed", attempts=1)
    put_job(cli, campaign, "completed", outcome="completed", result="declined", attempts=1)
    put_job(cli, campaign, "failed", outcome="busy", attempts=3)
    put_job(cli, None, "completed", outcome="completed")  # no campaign: not counted
    result = cli("campaigns", "show", campaign)
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"campaign {campaign}: active" in out
    assert "09:00-17:00" in out and "mon,tue,wed,thu,fri" in out and "busy" in out and "60" in out
    assert "jobs              5" in out
    assert "3/5 done (60%)" in out and "[##################............]" in out
    assert "pending 2" in out and "completed 2" in out and "failed 1" in out
    assert "busy 1" in out
    assert "confirmed 1" in out and "declined 1" in out


def test_show_of_a_campaign_without_jobs(cli):
    campaign = create(cli)
    result = cli("campaigns", "show", campaign)
    assert result.exit_code == 0, result.output
    assert "jobs              0" in result.output and "0/0 done (0%)" in result.output


def test_show_of_a_missing_campaign_is_one_line(cli):
    one_line_error(cli("campaigns", "show", "No-Such-Campaign"), "No-Such-Campaign", "does not exist")


# -- pause, resume, stop -------------------------------------------------------------------------------------


def test_pause_parks_pending_jobs_only_and_resume_unparks_them(cli):
    campaign = create(cli)
    other = create(cli)
    pending = [add(cli, campaign, "--at", "2030-01-01T10:00:00Z")[0] for _ in range(3)]
    due = {i: job(cli, i)["due_at"] for i in pending}
    placed = put_job(cli, campaign, "placed", attempts=1, request_uuid="r-1")
    done = put_job(cli, campaign, "completed", outcome="completed")
    elsewhere = add(cli, other)[0]
    loose = put_job(cli, None, "pending")
    untouched = {i: job(cli, i) for i in (placed, done, elsewhere, loose)}

    result = cli("campaigns", "pause", campaign)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"paused campaign {campaign}; 3 pending jobs wait"
    for call_id in pending:
        item = job(cli, call_id)
        assert item["status"] == "pending"
        assert item["due_at"] == PARKED_DUE_AT and item["paused_due_at"] == due[call_id]
    assert {i: job(cli, i) for i in untouched} == untouched
    assert campaign_item(cli, campaign)["state"] == "paused"

    again = cli("campaigns", "pause", campaign)  # idempotent: nothing parked twice
    assert again.exit_code == 0 and "0 pending jobs wait" in again.output
    assert job(cli, pending[0])["paused_due_at"] == due[pending[0]]

    result = cli("campaigns", "resume", campaign)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"resumed campaign {campaign}; 3 jobs back in the queue"
    for call_id in pending:
        item = job(cli, call_id)
        assert item["due_at"] == due[call_id] and "paused_due_at" not in item
    assert {i: job(cli, i) for i in untouched} == untouched
    assert campaign_item(cli, campaign)["state"] == "active"


def test_pause_waits_the_grace_period(cli, monkeypatch):
    monkeypatch.setattr(campaigns_cli, "GRACE_SECONDS", 0.3)
    campaign = create(cli)
    started = time.monotonic()
    assert cli("campaigns", "pause", campaign).exit_code == 0
    assert time.monotonic() - started >= 0.3


def test_the_production_grace_outlasts_the_gate():
    from chalicelib.calls.gate import CHECK_MAX_AGE

    assert campaigns_cli.DEFAULT_GRACE_SECONDS > CHECK_MAX_AGE


def test_stop_cancels_pending_jobs_and_leaves_placed_ones(cli):
    campaign = create(cli)
    pending = [add(cli, campaign)[0] for _ in range(2)]
    placed = put_job(cli, campaign, "placed", attempts=1)
    dialing = put_job(cli, campaign, "dialing", attempts=1)
    untouched = {i: job(cli, i) for i in (placed, dialing)}
    result = cli("campaigns", "stop", campaign)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"stopped campaign {campaign}; 2 pending jobs cancelled"
    for call_id in pending:
        item = job(cli, call_id)
        assert item["status"] == "cancelled" and campaign in item["last_error"]
        assert "stopped" in item["last_error"]
    assert {i: job(cli, i) for i in untouched} == untouched
    assert campaign_item(cli, campaign)["state"] == "stopped"


def test_stop_of_a_paused_campaign_cancels_its_parked_jobs_and_restores_due_at(cli):
    campaign = create(cli)
    call_id, _ = add(cli, campaign, "--at", "2030-01-01T10:00:00Z")
    due = job(cli, call_id)["due_at"]
    assert cli("campaigns", "pause", campaign).exit_code == 0
    assert cli("campaigns", "stop", campaign).exit_code == 0
    item = job(cli, call_id)
    assert item["status"] == "cancelled" and item["due_at"] == due and "paused_due_at" not in item


def test_a_stopped_campaign_cannot_be_paused_or_resumed(cli):
    campaign = create(cli)
    assert cli("campaigns", "stop", campaign).exit_code == 0
    one_line_error(cli("campaigns", "pause", campaign), campaign, "stopped")
    one_line_error(cli("campaigns", "resume", campaign), campaign, "stopped")


@pytest.mark.parametrize("command", ["pause", "resume", "stop", "report"])
def test_steering_a_missing_campaign_is_one_line(cli, command, tmp_path):
    extra = ["--csv", str(tmp_path / "r.csv")] if command == "report" else []
    one_line_error(
        cli("campaigns", command, "No-Such-Campaign", *extra), "No-Such-Campaign", "does not exist"
    )


# -- calls add / import --campaign ---------------------------------------------------------------------------


def test_calls_add_to_a_missing_campaign_is_refused(cli):
    call_id, result = add(cli, "Never-Created")
    one_line_error(result, "Never-Created", "does not exist")
    assert call_id not in listed(cli)


def test_calls_add_to_a_stopped_campaign_is_refused(cli):
    campaign = create(cli)
    assert cli("campaigns", "stop", campaign).exit_code == 0
    call_id, result = add(cli, campaign)
    one_line_error(result, campaign, "stopped")
    assert call_id not in listed(cli)


def test_calls_add_to_a_paused_campaign_is_written_parked(cli):
    campaign = create(cli)
    assert cli("campaigns", "pause", campaign).exit_code == 0
    call_id, result = add(cli, campaign, "--at", "2030-01-01T10:00:00Z")
    assert result.exit_code == 0, result.output
    assert "paused" in result.output
    item = job(cli, call_id)
    assert item["due_at"] == PARKED_DUE_AT and item["paused_due_at"] == 1893492000
    assert cli("campaigns", "resume", campaign).exit_code == 0
    assert job(cli, call_id)["due_at"] == 1893492000


def test_calls_import_to_a_campaign(cli, tmp_path):
    campaign = create(cli)
    ids = [new_id() for _ in range(3)]
    csv_file = tmp_path / "calls.csv"
    csv_file.write_text("call_id,to,from\n" + "".join(f"{i},{TO},{FROM}\n" for i in ids))
    result = cli("calls", "import", str(csv_file), "--campaign", campaign)
    assert result.exit_code == 0, result.output
    assert all(job(cli, i)["campaign"] == campaign for i in ids)
    shown = cli("campaigns", "show", campaign)
    assert "jobs              3" in shown.output and "pending 3" in shown.output
    report = tmp_path / "r.csv"
    assert cli("campaigns", "report", campaign, "--csv", str(report)).exit_code == 0
    with report.open(newline="") as handle:
        assert sorted(row["call_id"] for row in csv.DictReader(handle)) == sorted(ids)


def test_calls_import_to_a_paused_campaign_parks_every_row(cli, tmp_path):
    campaign = create(cli)
    assert cli("campaigns", "pause", campaign).exit_code == 0
    ids = [new_id() for _ in range(2)]
    csv_file = tmp_path / "calls.csv"
    csv_file.write_text("call_id,to,from\n" + "".join(f"{i},{TO},{FROM}\n" for i in ids))
    result = cli("calls", "import", str(csv_file), "--campaign", campaign)
    assert result.exit_code == 0, result.output
    assert all(job(cli, i)["due_at"] == PARKED_DUE_AT for i in ids)


@pytest.mark.parametrize("state", [None, "stopped"])
def test_calls_import_to_a_missing_or_stopped_campaign_imports_nothing(cli, tmp_path, state):
    campaign = create(cli) if state else "Never-Created"
    if state:
        assert cli("campaigns", "stop", campaign).exit_code == 0
    call_id = new_id()
    csv_file = tmp_path / "calls.csv"
    csv_file.write_text(f"call_id,to,from\n{call_id},{TO},{FROM}\n")
    one_line_error(cli("calls", "import", str(csv_file), "--campaign", campaign), campaign)
    assert call_id not in listed(cli)


# -- report --------------------------------------------------------------------------------------------------


def test_report_writes_one_csv_row_per_job_and_an_html_page(cli, tmp_path):
    campaign = create(cli)
    pending = add(cli, campaign)[0]
    responses = {"Reminder": {"Digits": "1", "at": 1796112000}}
    done = put_job(
        cli,
        campaign,
        "completed",
        outcome="completed",
        result="confirmed",
        attempts=1,
        claimed_at=Decimal(1796112000),
        responses=responses,
    )
    csv_path, html_path = tmp_path / "r.csv", tmp_path / "r.html"
    result = cli("campaigns", "report", campaign, "--csv", str(csv_path), "--html", str(html_path))
    assert result.exit_code == 0, result.output
    assert "2 jobs" in result.output
    with csv_path.open(newline="") as handle:
        rows = {row["call_id"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {pending, done}
    assert rows[pending]["status"] == "pending" and rows[pending]["to"] == TO
    assert rows[done]["result"] == "confirmed" and rows[done]["attempts"] == "1"
    assert json.loads(rows[done]["responses"]) == responses
    page = html_path.read_text(encoding="utf-8")
    assert f"Campaign {campaign}" in page and "<svg" in page


def test_report_of_a_campaign_without_jobs(cli, tmp_path):
    campaign = create(cli)
    csv_path, html_path = tmp_path / "r.csv", tmp_path / "r.html"
    result = cli("campaigns", "report", campaign, "--csv", str(csv_path), "--html", str(html_path))
    assert result.exit_code == 0, result.output
    assert "0 jobs" in result.output
    assert csv_path.read_text().splitlines()[0].startswith("call_id,to,campaign,status")
    assert len(csv_path.read_text().splitlines()) == 1
    assert campaign in html_path.read_text()


def test_report_html_only(cli, tmp_path):
    campaign = create(cli)
    add(cli, campaign)
    html_path = tmp_path / "only.html"
    result = cli("campaigns", "report", campaign, "--html", str(html_path))
    assert result.exit_code == 0, result.output
    assert "1 job " in result.output and campaign in html_path.read_text()


def test_report_needs_a_destination(cli):
    one_line_error(cli("campaigns", "report", create(cli)), "--csv", "--html")


def test_report_refuses_one_file_for_both(cli, tmp_path):
    same = str(tmp_path / "r.out")
    one_line_error(cli("campaigns", "report", create(cli), "--csv", same, "--html", same), "same file")


def test_report_to_a_folder_that_does_not_exist_is_one_line(cli, tmp_path):
    missing = tmp_path / "no" / "such" / "r.csv"
    one_line_error(cli("campaigns", "report", create(cli), "--csv", str(missing)), "cannot write")


# -- do-not-call ---------------------------------------------------------------------------------------------


def dnc_numbers(cli) -> dict:
    result = cli("dnc", "list", "--json")
    assert result.exit_code == 0, result.output
    return {entry["number"]: entry for entry in json.loads(result.output)}


def test_dnc_add_normalizes_and_remove_takes_it_off(cli):
    result = cli("dnc", "add", "+1 415 555 0100", "--reason", "asked twice")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "14155550100 is on the do-not-call list"
    entry = dnc_numbers(cli)["14155550100"]
    assert entry["reason"] == "asked twice" and entry["added_at"] > 0
    assert "14155550100  asked twice" in cli("dnc", "list").output
    removed = cli("dnc", "remove", "+1 (415) 555-0100")
    assert removed.exit_code == 0, removed.output
    assert "14155550100" not in dnc_numbers(cli)
    one_line_error(cli("dnc", "remove", "14155550100"), "14155550100", "not on")


@pytest.mark.parametrize("bad", ["123", "hello", "+", "1415555010012345678901", ""])
def test_dnc_add_of_a_bad_number_is_one_line(cli, bad):
    one_line_error(cli("dnc", "add", bad), "phone number")


def test_dnc_add_waits_the_grace_period(cli, monkeypatch):
    monkeypatch.setattr(campaigns_cli, "GRACE_SECONDS", 0.3)
    started = time.monotonic()
    assert cli("dnc", "add", "14155550177").exit_code == 0
    assert time.monotonic() - started >= 0.3


def test_dnc_import_lines_with_a_bad_one(cli, tmp_path):
    listing = tmp_path / "dnc.txt"
    listing.write_text("# opted out in March\n+1 415 555 0101\n\n14155550102\nnot-a-number\n14155550103\n")
    result = cli("dnc", "import", str(listing))
    assert result.exit_code == 1
    assert f"{listing}:5: " in result.output and "not-a-number" in result.output
    assert "added 3 numbers" in result.output and "1 bad line" in result.output
    assert {"14155550101", "14155550102", "14155550103"} <= set(dnc_numbers(cli))


def test_dnc_import_csv_with_number_and_reason(cli, tmp_path):
    listing = tmp_path / "dnc.csv"
    listing.write_text(
        'name,Number,Reason\nAnn,+1 415 555 0111,"said no, twice"\nBob,14155550112,\nEve,12,\n',
        encoding="utf-8-sig",
    )
    result = cli("dnc", "import", str(listing))
    assert result.exit_code == 1
    assert f"{listing}:4: " in result.output
    assert "added 2 numbers" in result.output
    found = dnc_numbers(cli)
    assert found["14155550111"]["reason"] == "said no, twice" and "reason" not in found["14155550112"]


def test_dnc_import_of_a_file_that_is_not_utf8_reports_the_line_and_adds_the_rest(cli, tmp_path):
    listing = tmp_path / "dnc.txt"
    listing.write_bytes(b"14155550121\n\xff\xfe14155550122\n14155550123\n")
    result = cli("dnc", "import", str(listing))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{listing}:2: " in result.output
    assert {"14155550121", "14155550123"} <= set(dnc_numbers(cli))


def test_dnc_import_of_a_missing_file_is_one_line(cli, tmp_path):
    result = cli("dnc", "import", str(tmp_path / "nope.txt"))
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "nope.txt" in result.output


def test_dnc_import_of_10_000_numbers(cli, tmp_path):
    listing = tmp_path / "big.txt"
    numbers = [f"1212{2000000 + i:07d}" for i in range(10_000)]
    listing.write_text("\n".join("+" + n for n in numbers) + "\n")
    started = time.monotonic()
    result = cli("dnc", "import", str(listing))
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert "added 10000 numbers" in result.output
    print(f"dnc import of 10 000 numbers: {elapsed:.1f} s")
    assert elapsed < 60
    started = time.monotonic()
    found = dnc_numbers(cli)
    print(f"dnc list of 10 000+ numbers: {time.monotonic() - started:.1f} s")
    assert set(numbers) <= set(found)


# -- errors that name the right table ------------------------------------------------------------------------


def test_a_missing_campaigns_table_is_named(cli):
    result = cli("campaigns", "list", env={"CAMPAIGNS_TABLE": "no-such-campaigns"})
    one_line_error(result, "'no-such-campaigns'", "CAMPAIGNS_TABLE")
    assert "CALLS_TABLE" not in result.output


def test_a_missing_calls_table_is_named(cli):
    campaign = create(cli)
    result = cli("campaigns", "show", campaign, env={"CALLS_TABLE": "no-such-calls"})
    one_line_error(result, "'no-such-calls'", "CALLS_TABLE")


def test_an_unset_campaigns_table_is_one_line(cli):
    one_line_error(cli("dnc", "list", env={"CAMPAIGNS_TABLE": ""}), "CAMPAIGNS_TABLE")


class TimingOutTable:
    """A calls table whose every request times out (botocore's ReadTimeoutError is an OSError too)."""

    class meta:
        class client:
            class exceptions:
                ConditionalCheckFailedException = type("ConditionalCheckFailedException", (Exception,), {})

    def query(self, **_):
        from botocore.exceptions import ReadTimeoutError

        raise ReadTimeoutError(endpoint_url="http://127.0.0.1:1/")


def test_an_aws_timeout_during_the_report_is_not_called_a_file_problem(cli, tmp_path, monkeypatch):
    from chalicelib import resources
    from chalicelib.calls.campaign_store import CampaignJobs

    campaign = create(cli)
    timing_out = functools.cache(lambda: CampaignJobs(TimingOutTable()))  # resources.reset() clears it
    monkeypatch.setattr(resources, "campaign_jobs", timing_out)
    result = cli("campaigns", "report", campaign, "--csv", str(tmp_path / "r.csv"))
    one_line_error(result, "cannot reach AWS")
    assert "cannot write" not in result.output


def test_calls_list_by_campaign_shows_only_its_jobs(cli):
    campaign = create(cli)
    other = create(cli)
    mine = [add(cli, campaign, "--at", f"2030-01-0{day}T10:00:00Z")[0] for day in (3, 1, 2)]
    placed = put_job(cli, campaign, "placed", attempts=1)
    theirs = add(cli, other)[0]
    loose = put_job(cli, None, "pending")

    listed_all = json.loads(cli("calls", "list", "--campaign", campaign, "--json").output)
    assert [item["call_id"] for item in listed_all] == [placed, mine[1], mine[2], mine[0]]  # oldest due first
    assert theirs not in str(listed_all) and loose not in str(listed_all)
    pending = json.loads(cli("calls", "list", "--campaign", campaign, "--status", "pending", "--json").output)
    assert [item["call_id"] for item in pending] == [mine[1], mine[2], mine[0]]

    assert cli("campaigns", "pause", campaign).exit_code == 0
    table = cli("calls", "list", "--campaign", campaign).output
    assert "2030-01-01" in table and "3000-01-01" not in table  # a parked job shows when it is due
    assert [i["due_at"] for i in json.loads(cli("calls", "list", "--campaign", campaign, "--json").output)][
        -1
    ] == PARKED_DUE_AT  # --json: the items as stored
    assert cli("calls", "list", "--campaign", name()).output.strip().startswith("no calls in campaign")
    one_line_error(cli("calls", "list", "--campaign", "no spaces"), "--campaign")


def test_pause_resume_and_stop_write_several_jobs_at_once(cli, monkeypatch):
    """Each job's write is its own conditional update; they go out in parallel (bounded), so a big campaign
    pauses in seconds, and every job is written exactly once."""
    import threading

    from chalicelib.calls.campaign_store import CampaignJobs

    campaign = create(cli)
    with cli.table().batch_writer() as batch:
        for i in range(120):
            due = Decimal(1_700_000_000 + i)
            item = {"call_id": f"{campaign}-{i:03d}", "status": "pending", "due_at": due, "to": TO}
            batch.put_item(Item={**item, "from": FROM, "campaign": campaign})
    lock, now, peak, seen = threading.Lock(), [0], [0], []
    original = CampaignJobs.park

    def park(self, call_id):
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
            seen.append(call_id)
        time.sleep(0.01)
        try:
            return original(self, call_id)
        finally:
            with lock:
                now[0] -= 1

    monkeypatch.setattr(CampaignJobs, "park", park)
    result = cli("campaigns", "pause", campaign)
    assert result.output.strip() == f"paused campaign {campaign}; 120 pending jobs wait"
    assert 1 < peak[0] <= campaigns_cli.PARALLEL_WRITES and sorted(seen) == sorted(set(seen))
    assert cli("campaigns", "resume", campaign).output.strip().endswith("120 jobs back in the queue")
    assert cli("campaigns", "stop", campaign).output.strip().endswith("120 pending jobs cancelled")
    assert {job(cli, f"{campaign}-{i:03d}")["status"] for i in range(120)} == {"cancelled"}
