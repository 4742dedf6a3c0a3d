"""`callflow`: every command's happy path and its clearest failure, against a real moto server process."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from devtools.plivo_sim import PlivoSimulator

GOOD = {
    "Hello.xml": "<Response>\n  <Speak>Hello {{ headers.Name }}.</Speak>\n</Response>\n",
    "Promo.xml": "<Response><Speak>Code {{ headers.Code }}.</Speak><Hangup/></Response>\n",
    "routes.json": json.dumps(
        {"default": "Hello", "rules": [{"when": {"Campaign": "Spring"}, "template": "Promo"}]}
    ),
}


def write(directory, files):
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def prefix() -> dict:
    """A fresh key prefix per test, so pushes of different tests never meet."""
    return {"TEMPLATE_PREFIX": f"t{uuid.uuid4().hex[:8]}/"}


def keys(cli, env) -> list[str]:
    listing = cli.s3().list_objects_v2(Bucket="callflow-templates", Prefix=env["TEMPLATE_PREFIX"])
    return sorted(item["Key"][len(env["TEMPLATE_PREFIX"]) :] for item in listing.get("Contents", []))


def new_id() -> str:
    return f"cli-{uuid.uuid4().hex[:10]}"


def listed(cli, status=None) -> dict:
    args = ["calls", "list", "--json"] + (["--status", status] if status else [])
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return {item["call_id"]: item for item in json.loads(result.output)}


# -- templates ----------------------------------------------------------------------------------------------


def test_templates_check_ok(cli, tmp_path):
    result = cli("templates", "check", str(write(tmp_path / "t", GOOD)))
    assert result.exit_code == 0, result.output
    assert "2 templates and routes.json OK" in result.output


def test_templates_check_names_file_and_line(cli, tmp_path):
    broken = "<Response>\n  <Speak>{{ headers.Name </Speak>\n</Response>"
    bad = write(tmp_path / "t", {**GOOD, "Broken.xml": broken})
    result = cli("templates", "check", str(bad))
    assert result.exit_code == 1
    assert f"{bad / 'Broken.xml'}:2:" in result.output
    assert "1 problem found" in result.output


def test_templates_push_uploads_everything(cli, tmp_path):
    env = prefix()
    result = cli("templates", "push", str(write(tmp_path / "t", GOOD)), env=env)
    assert result.exit_code == 0, result.output
    assert keys(cli, env) == ["Hello.xml", "Promo.xml", "routes.json"]
    head = cli.s3().head_object(Bucket="callflow-templates", Key=f"{env['TEMPLATE_PREFIX']}Hello.xml")
    assert head["ContentType"] == "application/xml"


@pytest.mark.parametrize(
    ("files", "where"),
    [
        ({"Bad.xml": "<Response>\n<Speak>hi</Speak>\n<Speek/>\n</Response>"}, "Bad.xml"),
        ({"Bad.xml": "<Response><Speak>{{ customer }}</Speak></Response>"}, "Bad.xml:1: undefined variable"),
        ({"routes.json": '{"default": "Hello", "rules": [}'}, "routes.json"),
        (
            {"routes.json": json.dumps({"default": "Missing"})},
            "routes.json: default names template 'Missing'",
        ),
        ({"bad-name.xml": "<Response/>"}, "bad-name.xml:1: file name"),
    ],
)
def test_templates_push_uploads_nothing_when_anything_is_invalid(cli, tmp_path, files, where):
    env = prefix()
    result = cli("templates", "push", str(write(tmp_path / "t", {**GOOD, **files})), env=env)
    assert result.exit_code == 1
    assert where in result.output, result.output
    assert "nothing uploaded" in result.output
    assert keys(cli, env) == []


def test_templates_render_prints_the_xml(cli, tmp_path):
    env = prefix()
    assert cli("templates", "push", str(write(tmp_path / "t", GOOD)), env=env).exit_code == 0
    result = cli("templates", "render", "Hello", "--param", "X-PH-Name=Ann", env=env)
    assert result.exit_code == 0, result.output
    assert "<Speak>Hello Ann.</Speak>" in result.output


def test_templates_render_unknown_template(cli, tmp_path):
    env = prefix()
    assert cli("templates", "push", str(write(tmp_path / "t", GOOD)), env=env).exit_code == 0
    result = cli("templates", "render", "Nope", env=env)
    assert result.exit_code == 1
    assert "template 'Nope' not found" in result.output


# -- calls ---------------------------------------------------------------------------------------------------


def test_calls_add_and_list(cli):
    call_id = new_id()
    result = cli(
        "calls",
        "add",
        "--id",
        call_id,
        "--to",
        "14155550123",
        "--from",
        "14155550100",
        "--header",
        "Template=Hello",
        "--header",
        "Name=Ann",
        "--at",
        "2030-01-02T09:30",
        "--tz",
        "Europe/Paris",
    )
    assert result.exit_code == 0, result.output
    assert call_id in result.output
    item = listed(cli)[call_id]
    assert item["status"] == "pending"
    assert item["headers"] == {"Template": "Hello", "Name": "Ann"}
    assert item["tz"] == "Europe/Paris"
    assert item["due_at"] == datetime(2030, 1, 2, 9, 30, tzinfo=ZoneInfo("Europe/Paris")).timestamp()
    assert call_id in listed(cli, "pending")
    assert call_id not in listed(cli, "completed")
    table = cli("calls", "list")
    assert call_id in table.output and "pending" in table.output


def test_calls_add_refuses_an_existing_id(cli):
    call_id = new_id()
    assert cli("calls", "add", "--id", call_id, "--to", "14155550123", "--from", "14155550100").exit_code == 0
    again = cli("calls", "add", "--id", call_id, "--to", "14155550999", "--from", "14155550100")
    assert again.exit_code == 1
    assert "already exists" in again.output
    assert listed(cli)[call_id]["to"] == "14155550123"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--header", "Bad-Name=x"], "may contain only letters"),
        (["--header", "Name=" + "v" * 121], "at most 120"),
        (["--header", "novalue"], "must look like NAME=VALUE"),
        (["--at", "next tuesday"], "not ISO 8601"),
        (["--tz", "Mars/Base"], "not a known IANA zone"),
    ],
)
def test_calls_add_rejects_bad_input_in_one_line(cli, args, message):
    call_id = new_id()
    result = cli("calls", "add", "--id", call_id, "--to", "14155550123", "--from", "14155550100", *args)
    assert result.exit_code == 1
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert call_id not in listed(cli)


def test_calls_add_rejects_a_bad_number(cli):
    result = cli("calls", "add", "--to", "+1 415 555", "--from", "14155550100")
    assert result.exit_code == 1
    assert "must be digits" in result.output


def test_calls_import_reports_bad_rows_and_keeps_going(cli, tmp_path):
    ids = [new_id() for _ in range(4)]
    csv_file = tmp_path / "calls.csv"
    csv_file.write_text(
        "call_id,to,from,at,tz,X-PH-Name,X-PH-Campaign\n"
        f"{ids[0]},14155550001,14155550100,,,Ann,Spring\n"
        f"{ids[1]},not-a-number,14155550100,,,Bob,\n"
        f"{ids[2]},14155550003,14155550100,2030-05-01T10:00,America/New_York,Cy,\n"
        f"{ids[0]},14155550004,14155550100,,,Dup,\n"
        f"{ids[3]},14155550005,14155550100,,,Bad Value,\n"
    )
    result = cli("calls", "import", str(csv_file))
    assert result.exit_code == 1
    assert f"{csv_file}:3:" in result.output and "not-a-number" in result.output
    assert f"{csv_file}:5:" in result.output and "already exists" in result.output
    assert f"{csv_file}:6:" in result.output
    assert "imported 2 calls, 3 bad rows skipped" in result.output
    assert "importing calls.csv" in result.output  # the progress bar
    jobs = listed(cli)
    assert jobs[ids[0]]["headers"] == {"Name": "Ann", "Campaign": "Spring"}
    assert jobs[ids[2]]["headers"] == {"Name": "Cy"} and jobs[ids[2]]["tz"] == "America/New_York"
    assert ids[1] not in jobs and ids[3] not in jobs


def test_calls_import_all_good_exits_zero(cli, tmp_path):
    csv_file = tmp_path / "ok.csv"
    csv_file.write_text("to,from,header.Lang\n14155550011,14155550100,es\n14155550012,14155550100,\n")
    result = cli("calls", "import", str(csv_file))
    assert result.exit_code == 0, result.output
    assert "imported 2 calls" in result.output


def test_calls_import_unknown_column(cli, tmp_path):
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text("to,from,colour\n14155550011,14155550100,red\n")
    result = cli("calls", "import", str(csv_file))
    assert result.exit_code == 1
    assert f"{csv_file}:1: unknown column(s) colour" in result.output


def test_calls_cancel(cli):
    call_id = new_id()
    assert cli("calls", "add", "--id", call_id, "--to", "14155550123", "--from", "14155550100").exit_code == 0
    result = cli("calls", "cancel", call_id)
    assert result.exit_code == 0, result.output
    assert listed(cli)[call_id]["status"] == "cancelled"
    again = cli("calls", "cancel", call_id)
    assert again.exit_code == 1 and "only pending" in again.output


def test_calls_cancel_unknown_id(cli):
    result = cli("calls", "cancel", "no-such-job")
    assert result.exit_code == 1
    assert "does not exist" in result.output


# -- launch --------------------------------------------------------------------------------------------------


def test_launch_places_due_calls_with_the_launcher(cli):
    with PlivoSimulator("MACLITEST00000000000", "cli-token") as sim:
        env = {
            "PLIVO_AUTH_ID": "MACLITEST00000000000",
            "PLIVO_AUTH_TOKEN": "cli-token",
            "PLIVO_API_URL": sim.url,
            "CALL_WINDOW": "00:00-24:00",
        }
        pending_before = set(listed(cli, "pending"))
        for call_id in pending_before:  # other tests' jobs must not be dialled here
            cli("calls", "cancel", call_id)
        call_id = new_id()
        assert (
            cli(
                "calls",
                "add",
                "--id",
                call_id,
                "--to",
                "14155550777",
                "--from",
                "14155550100",
                "--header",
                "Name=Ann",
            ).exit_code
            == 0
        )
        result = cli("launch", env=env)
        assert result.exit_code == 0, result.output
        summary = json.loads(result.output.strip().splitlines()[-1])
        assert summary["placed"] == 1
        assert [c["body"]["to"] for c in sim.calls] == ["14155550777"]
        assert sim.calls[0]["body"]["sip_headers"] == "Name=Ann"
        job = listed(cli)[call_id]
        assert job["status"] == "placed" and job["request_uuid"] == sim.calls[0]["request_uuid"]


def test_launch_without_plivo_settings(cli):
    result = cli("launch", env={"PLIVO_AUTH_ID": None, "PLIVO_AUTH_TOKEN": None})
    assert result.exit_code == 1
    assert "PLIVO_AUTH_ID is not set" in result.output


# -- no stack, real processes -----------------------------------------------------------------------


def test_no_stack_gives_one_line_not_a_traceback(cli):
    from devtools.local_aws import free_port

    result = cli.process("calls", "list", env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"})
    assert result.returncode == 1
    assert "cannot reach AWS at http://127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_table_and_bucket_are_named(cli, tmp_path):
    table = cli.process("calls", "list", env={"CALLS_TABLE": "no-such-table"}, module=False)
    assert table.returncode == 1
    assert "table 'no-such-table' does not exist" in table.stderr
    bucket = cli.process(
        "templates", "push", str(write(tmp_path / "t", GOOD)), env={"TEMPLATE_BUCKET": "no-such-bucket"}
    )
    assert bucket.returncode == 1
    assert "bucket 'no-such-bucket' does not exist" in bucket.stderr
    assert "Traceback" not in table.stderr + bucket.stderr


def test_missing_settings_are_named(cli):
    result = cli.process("calls", "list", env={"CALLS_TABLE": None})
    assert result.returncode == 1
    assert "CALLS_TABLE is not set" in result.stderr


def test_console_script_and_module_both_work(cli):
    assert "templates" in cli.process("--help", module=False).stdout
    assert "calls" in cli.process("--help").stdout
