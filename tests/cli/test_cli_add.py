"""`calls add` refuses what would pass silently (issue 10 item 12), fills `data` and `campaign` (issue 11),
and takes `to` with a leading + (SPEC v2)."""

from __future__ import annotations

import json
import time

import pytest

from callflow_cli.calls import build_job
from chalicelib.calls.call_body import DATA_MAX_BYTES, JobInvalid, data_problems, validate_job
from tests.cli.test_cli import listed, new_id

BASE = ["--to", "14155550123", "--from", "14155550100"]


def add(cli, *args: str, call_id: str | None = None):
    call_id = call_id or new_id()
    return call_id, cli("calls", "add", "--id", call_id, *BASE, *args)


# -- issue 10 item 12 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        ["Template=A", "Template=B"],
        ["template=A", "TEMPLATE=A"],
        ["Name=Ann", "Template=A", "NAME=Bob"],
    ],
)
def test_the_same_header_twice_is_refused(cli, headers):
    call_id, result = add(cli, *[arg for h in headers for arg in ("--header", h)])
    assert result.exit_code == 1
    assert "given twice" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert call_id not in listed(cli)


def test_the_same_header_twice_in_build_job_is_refused():
    with pytest.raises(ValueError, match="case-insensitively"):
        build_job({"to": "14155550123", "from": "14155550100"}, {"Lang": "es", "LANG": "en"}, 1e9)


@pytest.mark.parametrize("bad", ["bad id/with slash", "a b", "é", "x" * 129, "semi;colon", "new\nline"])
def test_an_id_outside_the_rule_is_refused_and_the_rule_is_said(cli, bad):
    _, result = add(cli, call_id=bad)
    assert result.exit_code == 1
    assert "1 to 128 characters from A-Z, a-z, 0-9 and . _ : -" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_ids_inside_the_rule_are_accepted(cli):
    call_id = f"crm:{new_id()}.retry_2-" + "x" * 90
    _, result = add(cli, call_id=call_id)
    assert result.exit_code == 0, result.output
    assert call_id in listed(cli)


def test_help_states_the_id_rule(cli):
    result = cli("calls", "add", "--help")
    assert "A-Z, a-z, 0-9 and . _ : -" in " ".join(result.output.split())


def test_a_time_in_the_past_is_now_and_the_cli_says_so(cli):
    before = time.time()
    call_id, result = add(cli, "--at", "2020-01-01T09:00")
    assert result.exit_code == 0, result.output
    assert "--at '2020-01-01T09:00' is in the past: the call is due now" in result.stderr
    assert "in the past" not in result.stdout
    assert before - 1 <= listed(cli)[call_id]["due_at"] <= time.time() + 1


def test_a_time_in_the_future_says_nothing_extra(cli):
    _, result = add(cli, "--at", "2031-01-01T09:00")
    assert result.exit_code == 0 and result.stderr == ""


def test_import_says_which_rows_were_in_the_past(cli, tmp_path):
    csv_file = tmp_path / "past.csv"
    csv_file.write_text(f"to,from,at\n14155550001,14155550100,2001-01-01\n14155550002,14155550100,{2e9}\n")
    result = cli("calls", "import", str(csv_file))
    assert result.exit_code == 0, result.output
    assert "note: 1 row had a time in the past, taken as now (line 2)" in result.stderr


# -- issue 11: data and campaign -----------------------------------------------------------------------------


def test_data_holds_any_text(cli):
    values = {
        "Name": "Ann Smith",
        "When": "2026-12-01 09:30",
        "Url": "https://x.example/a?b=1&c=2",
        "Eq": "a=b",
    }
    call_id, result = add(cli, *[arg for k, v in values.items() for arg in ("--data", f"{k}={v}")])
    assert result.exit_code == 0, result.output
    assert listed(cli)[call_id]["data"] == values


def test_data_over_16_kb_is_one_clear_line(cli):
    call_id, result = add(cli, "--data", "A=" + "x" * 9000, "--data", "B=" + "y" * 9000)
    assert result.exit_code == 1
    assert f"data is 18015 bytes as JSON (at most {DATA_MAX_BYTES})" in result.output
    assert call_id not in listed(cli)


def test_data_given_twice_is_refused(cli):
    _, result = add(cli, "--data", "A=1", "--data", "A=2")
    assert result.exit_code == 1 and "data 'A' given twice" in result.output


def test_csv_data_columns_fill_data(cli, tmp_path):
    ids = [new_id(), new_id()]
    csv_file = tmp_path / "data.csv"
    csv_file.write_text(
        "call_id,to,from,data.Name,data.When\n"
        f'{ids[0]},14155550001,14155550100,"Smith, Ann",2026-12-01 09:30\n'
        f"{ids[1]},14155550002,14155550100,,\n"
    )
    cli("campaigns", "create", "Spring-2026")  # once per module; a second create is refused, which is fine
    result = cli("calls", "import", str(csv_file), "--campaign", "Spring-2026")
    assert result.exit_code == 0, result.output
    jobs = listed(cli)
    assert jobs[ids[0]]["data"] == {"Name": "Smith, Ann", "When": "2026-12-01 09:30"}
    assert "data" not in jobs[ids[1]]
    assert jobs[ids[0]]["campaign"] == jobs[ids[1]]["campaign"] == "Spring-2026"


def test_a_bad_header_value_points_to_data(cli):
    _, result = add(cli, "--header", "When=2026-12-01 09:30")
    assert result.exit_code == 1
    assert "[A-Za-z0-9]" in result.output and "Plivo drops anything else" in result.output
    assert "--data NAME=VALUE" in result.output and "data.<Name>" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_bad_header_name_does_not_talk_about_data(cli):
    _, result = add(cli, "--header", "Bad-Name=x")
    assert result.exit_code == 1 and "--data" not in result.output


def test_campaign_is_stored(cli):
    cli("campaigns", "create", "Spring-2026")
    call_id, result = add(cli, "--campaign", "Spring-2026")
    assert result.exit_code == 0, result.output
    assert listed(cli)[call_id]["campaign"] == "Spring-2026"


@pytest.mark.parametrize("campaign", ["Spring 2026", "spring_26", "x" * 65, "é"])
def test_a_bad_campaign_is_refused(cli, tmp_path, campaign):
    call_id, result = add(cli, "--campaign", campaign)
    assert result.exit_code == 1
    assert "1 to 64 characters from A-Z, a-z, 0-9 and -" in result.output
    assert call_id not in listed(cli)
    csv_file = tmp_path / "c.csv"
    csv_file.write_text("to,from\n14155550001,14155550100\n")
    imported = cli("calls", "import", str(csv_file), "--campaign", campaign)
    assert imported.exit_code == 1 and "--campaign: campaign" in imported.output


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ({"data": ["a"]}, "data must be a map of name to text, not list"),
        ({"data": {"N": 5}}, "data 'N' value must be text, not int"),
        ({"data": {"": "x"}}, "data name '' must be non-empty text"),
        ({"data": {"N": "\ud800"}}, "data 'N' is not valid Unicode text"),
        ({"data": {"N": "é" * 8200}}, "data is 16408 bytes as JSON (at most 16384)"),
        ({"campaign": 7}, "campaign 7 must be 1 to 64 characters"),
    ],
)
def test_the_launcher_refuses_bad_data_and_campaign(job, message):
    base = {"call_id": "x", "to": "14155550123", "from": "14155550100"}
    assert message in "; ".join(data_problems(job))
    with pytest.raises(JobInvalid, match=message.split(" (")[0]):
        validate_job({**base, **job})


def test_data_of_exactly_16_kb_is_accepted():
    value = "x" * (DATA_MAX_BYTES - len(json.dumps({"N": ""}, separators=(",", ":"))))
    assert data_problems({"data": {"N": value}}) == []
    assert data_problems({"data": {"N": value + "x"}}) != []


# -- SPEC v2: a leading + -----------------------------------------------------------------------------------


def test_a_leading_plus_is_dropped(cli, tmp_path):
    call_id = new_id()
    result = cli("calls", "add", "--id", call_id, "--to", "+14155550123", "--from", "+14155550100")
    assert result.exit_code == 0, result.output
    job = listed(cli)[call_id]
    assert (job["to"], job["from"]) == ("14155550123", "14155550100")
    row_id = new_id()
    csv_file = tmp_path / "plus.csv"
    csv_file.write_text(f"call_id,to,from\n{row_id},+14155550124,14155550100\n")
    assert cli("calls", "import", str(csv_file)).exit_code == 0
    assert listed(cli)[row_id]["to"] == "14155550124"


def test_arguments_that_are_not_utf8_are_one_line(cli):
    """A terminal in another encoding hands Python lone surrogates, which boto3 cannot send."""
    for option in ("--caller-name", "--answer-url", "--data"):
        value = "K=\udcff" if option == "--data" else "https://x.example/\udcff"
        result = cli.process("calls", "add", *BASE, option, value)
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert "UTF-8" in result.stderr or "Unicode" in result.stderr
