"""The conversation side of the CLI against a real moto server: `templates check` following url() and
rendering branches, `templates render --step/--job`, `templates list|pull|delete`, `calls show`."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

from boto3.dynamodb.types import TypeSerializer

from tests.cli.test_cli import keys, new_id, prefix, write

REMINDER = """<Response>
  <GetInput action="{{ url('ReminderReply') }}" inputType="dtmf speech" numDigits="1">
    <Speak>Hello {{ job.data.Name }}, press 1 to confirm, 2 to cancel.</Speak>
  </GetInput>
  <Redirect>{{ url('ReminderNoReply') }}</Redirect>
</Response>
"""
REPLY = """<Response>
  {% if call.Digits == "1" or "yes" in (call.Speech or "")|lower %}{{ result('confirmed') }}
  <Speak>Thanks.</Speak>
  {% elif call.Digits == "2" %}{{ result('cancelled') }}<Speak>Cancelled.</Speak>
  {% else %}<Redirect>{{ url('Reminder') }}</Redirect>{% endif %}
</Response>
"""
NO_REPLY = "<Response><Speak>We did not hear you.</Speak><Hangup/></Response>\n"
FLOW = {
    "Reminder.xml": REMINDER,
    "ReminderReply.xml": REPLY,
    "ReminderNoReply.xml": NO_REPLY,
    "routes.json": json.dumps({"default": "Reminder"}),
}


# -- templates check -----------------------------------------------------------------------------------------


def test_check_accepts_a_conversation(cli, tmp_path):
    result = cli("templates", "check", str(write(tmp_path / "t", FLOW)))
    assert result.exit_code == 0, result.output
    assert "3 templates and routes.json OK" in result.output


def test_check_follows_url_to_a_missing_template(cli, tmp_path):
    files = {k: v for k, v in FLOW.items() if k != "ReminderNoReply.xml"}
    result = cli("templates", "check", str(write(tmp_path / "t", files)))
    assert result.exit_code == 1
    assert "Reminder.xml:5: url('ReminderNoReply') names no template" in result.output


def test_check_reports_the_branch_with_invalid_xml(cli, tmp_path):
    bad = REPLY.replace("<Speak>Cancelled.</Speak>", "<Speak>Cancelled.</Speak><Hangup reason='nope'/>")
    result = cli("templates", "check", str(write(tmp_path / "t", {**FLOW, "ReminderReply.xml": bad})))
    assert result.exit_code == 1
    line = [ln for ln in result.output.splitlines() if "ReminderReply.xml:" in ln]
    assert len(line) == 1, result.output
    assert "ReminderReply.xml:4:" in line[0] and "reason" in line[0]
    assert "call.Digits='2'" in line[0]


def test_check_reports_bad_literals_with_their_line(cli, tmp_path):
    bad = REPLY.replace("result('cancelled')", "result('Bad Label')").replace(
        "url('Reminder')", "url('not a name!')"
    )
    result = cli("templates", "check", str(write(tmp_path / "t", {**FLOW, "ReminderReply.xml": bad})))
    assert result.exit_code == 1
    assert "ReminderReply.xml:4: result(): label 'Bad Label'" in result.output
    assert "ReminderReply.xml:5: url(): step 'not a name!'" in result.output


def test_check_one_file_looks_beside_it(cli, tmp_path):
    directory = write(tmp_path / "t", FLOW)
    result = cli("templates", "check", str(directory / "ReminderReply.xml"))
    assert result.exit_code == 0, result.output
    assert "ReminderReply.xml OK" in result.output
    (directory / "ReminderNoReply.xml").unlink()
    result = cli("templates", "check", str(directory / "Reminder.xml"))
    assert result.exit_code == 1
    assert "Reminder.xml:5: url('ReminderNoReply') names no template" in result.output


def test_check_one_file_alone_says_url_cannot_be_checked(cli, tmp_path):
    directory = write(tmp_path / "alone", {"Reminder.xml": REMINDER})
    result = cli("templates", "check", str(directory / "Reminder.xml"))
    assert result.exit_code == 0, result.output
    assert "url('ReminderReply') cannot be checked" in result.output


def test_check_a_missing_path(cli, tmp_path):
    result = cli("templates", "check", str(tmp_path / "nope"))
    assert result.exit_code == 1
    assert "is not a file or a directory" in result.output


# -- templates render --step ---------------------------------------------------------------------------------


def test_render_step_with_digits_and_job(cli, tmp_path):
    env = {**prefix(), "PUBLIC_BASE_URL": "https://calls.example.com"}
    assert cli("templates", "push", str(write(tmp_path / "t", FLOW)), env=env).exit_code == 0
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"call_id": "job-7", "data": {"Name": "Ann & Bo"}}))
    result = cli("templates", "render", "Reminder", "--job", str(job), env=env)
    assert result.exit_code == 0, result.output
    assert "Hello Ann &amp; Bo," in result.output
    assert 'action="https://calls.example.com/answer?step=ReminderReply&amp;call_id=job-7"' in result.output

    result = cli("templates", "render", "--step", "ReminderReply", "--param", "Digits=1", env=env)
    assert result.exit_code == 0, result.output
    assert "<Speak>Thanks.</Speak>" in result.output
    assert "records responses.ReminderReply: Digits='1'" in result.output
    assert "sets result: confirmed" in result.output
    result = cli(
        "templates", "render", "ReminderReply", "--step", "ReminderReply", "--param", "Digits=2", env=env
    )
    assert "<Speak>Cancelled.</Speak>" in result.output and "sets result: cancelled" in result.output
    result = cli(
        "templates", "render", "ReminderReply", "--step", "ReminderReply", "--param", "Speech=Yes!", env=env
    )
    assert "sets result: confirmed" in result.output
    result = cli("templates", "render", "ReminderReply", "--step", "ReminderReply", env=env)
    assert "step=Reminder" in result.output and "records no input" in result.output


def test_render_refuses_mismatched_names_and_bad_job_files(cli, tmp_path):
    env = prefix()
    assert cli("templates", "push", str(write(tmp_path / "t", FLOW)), env=env).exit_code == 0
    result = cli("templates", "render", "Reminder", "--step", "ReminderReply", env=env)
    assert result.exit_code == 1 and "different templates" in result.output
    bad = tmp_path / "bad.json"
    for text in ("[1, 2]", "{not json", "\udcff"):
        bad.write_text(text, errors="surrogateescape")
        result = cli("templates", "render", "Reminder", "--job", str(bad), env=env)
        assert result.exit_code == 1, text
        assert "Traceback" not in result.output
    result = cli("templates", "render", "Reminder", "--job", str(tmp_path / "missing.json"), env=env)
    assert result.exit_code == 1 and "cannot read" in result.output


# -- templates list / pull / delete --------------------------------------------------------------------------


def test_list_shows_names_sizes_and_times(cli, tmp_path):
    env = prefix()
    result = cli("templates", "list", env=env)
    assert result.exit_code == 0 and "no templates" in result.output
    assert cli("templates", "push", str(write(tmp_path / "t", FLOW)), env=env).exit_code == 0
    cli.s3().put_object(Bucket="callflow-templates", Key=env["TEMPLATE_PREFIX"] + "notes.txt", Body=b"x")
    result = cli("templates", "list", env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["NAME", "SIZE", "CHANGED"]
    names = [line.split()[0] for line in lines[1:]]
    assert names == ["Reminder", "ReminderNoReply", "ReminderReply", "routes.json"]
    assert str(len(NO_REPLY.encode())) in lines[2] and "UTC" in lines[2]


def test_pull_downloads_and_refuses_to_overwrite_changes(cli, tmp_path):
    env = prefix()
    assert cli("templates", "push", str(write(tmp_path / "t", FLOW)), env=env).exit_code == 0
    target = tmp_path / "pulled"
    result = cli("templates", "pull", str(target), env=env)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in target.iterdir()) == sorted(FLOW)
    assert (target / "ReminderReply.xml").read_text() == REPLY
    assert "4 written" in cli("templates", "pull", str(tmp_path / "again"), env=env).output
    assert "0 written, 4 unchanged" in cli("templates", "pull", str(target), env=env).output

    (target / "Reminder.xml").write_text("<Response/>")
    result = cli("templates", "pull", str(target), env=env)
    assert result.exit_code == 1
    assert "Reminder.xml: differs from what is live" in result.output
    assert (target / "Reminder.xml").read_text() == "<Response/>"
    result = cli("templates", "pull", str(target), "--force", env=env)
    assert result.exit_code == 0, result.output
    assert (target / "Reminder.xml").read_text() == REMINDER


def test_pull_from_an_empty_store(cli, tmp_path):
    result = cli("templates", "pull", str(tmp_path / "x"), env=prefix())
    assert result.exit_code == 1 and "no templates" in result.output
    assert not (tmp_path / "x").exists()


def test_delete_refused_while_named(cli, tmp_path):
    env = prefix()
    assert cli("templates", "push", str(write(tmp_path / "t", FLOW)), env=env).exit_code == 0
    result = cli("templates", "delete", "Reminder", env=env)
    assert result.exit_code == 1
    assert "routes.json (default)" in result.output and "ReminderReply (url('Reminder'))" in result.output
    result = cli("templates", "delete", "ReminderNoReply", env=env)
    assert result.exit_code == 1 and "Reminder (url('ReminderNoReply'))" in result.output
    assert "ReminderNoReply.xml" in keys(cli, env)

    result = cli("templates", "delete", "ReminderNoReply", "--force", env=env)
    assert result.exit_code == 0, result.output
    assert "ReminderNoReply.xml" not in keys(cli, env)
    result = cli("templates", "delete", "ReminderNoReply", env=env)
    assert result.exit_code == 1 and "not found" in result.output
    result = cli("templates", "delete", "../x", env=env)
    assert result.exit_code == 1 and "not a template name" in result.output


def test_delete_an_unnamed_template(cli, tmp_path):
    env = prefix()
    files = {**FLOW, "Old.xml": NO_REPLY}
    assert cli("templates", "push", str(write(tmp_path / "t", files)), env=env).exit_code == 0
    result = cli("templates", "delete", "Old", env=env)
    assert result.exit_code == 0, result.output
    assert "Old.xml" not in keys(cli, env) and "Reminder.xml" in keys(cli, env)


# -- calls show ----------------------------------------------------------------------------------------------


def _put_job(cli, item: dict) -> None:
    serializer = TypeSerializer()
    cli.stack.boto_client("dynamodb").put_item(
        TableName=cli.env["CALLS_TABLE"], Item={k: serializer.serialize(v) for k, v in item.items()}
    )


def test_calls_show_a_conversation(cli):
    call_id = new_id()
    item = {
        "call_id": call_id,
        "status": "completed",
        "to": "14155550123",
        "from": "14155550100",
        "due_at": Decimal(1790000000),
        "attempts": Decimal(2),
        "max_attempts": Decimal(3),
        "request_uuid": "req-2",
        "call_uuid": "uuid-2",
        "outcome": "completed",
        "hangup_cause_name": "Normal Hangup",
        "hangup_cause_code": Decimal(4000),
        "hangup_source": "Callee",
        "duration": Decimal(31),
        "bill_duration": Decimal(60),
        "data": {"Name": "Ann"},
        "last_step": "ReminderReply",
        "responses": {
            "ReminderReply": {"Digits": "1", "InputType": "dtmf", "at": Decimal("1790000040.5")},
            "Survey": {"Speech": "yes please", "at": Decimal("1790000060")},
        },
        "result": "confirmed",
        "custom": "kept",
    }
    _put_job(cli, item)
    result = cli("calls", "show", call_id)
    assert result.exit_code == 0, result.output
    text = result.output
    for fragment in (
        f"call          {call_id}",
        "attempts      2 of 3",
        "request_uuid  req-2",
        "outcome       completed: Normal Hangup (4000), hung up by Callee",
        "duration      31 s (billed 60 s)",
        "steps (last served: ReminderReply)",
        "ReminderReply: Digits=1, InputType=dtmf",
        "Survey: Speech='yes please'",
        "result        confirmed",
        "Name = Ann",
        "custom = kept",
    ):
        assert fragment in text, (fragment, text)
    assert text.index("ReminderReply: Digits") < text.index("Survey:")

    result = cli("calls", "show", call_id, "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["responses"]["ReminderReply"] == {"Digits": "1", "InputType": "dtmf", "at": 1790000040.5}
    assert shown["attempts"] == 2 and shown["custom"] == "kept"


def test_calls_show_a_plain_job_and_a_missing_one(cli):
    call_id = new_id()
    assert cli("calls", "add", "--id", call_id, "--to", "14155550123", "--from", "14155550100").exit_code == 0
    result = cli("calls", "show", call_id)
    assert result.exit_code == 0, result.output
    assert "status        pending" in result.output and "steps" not in result.output
    result = cli("calls", "show", f"nope-{uuid.uuid4().hex[:6]}")
    assert result.exit_code == 1 and "no call job" in result.output
    result = cli("calls", "show", "x" * 3000)
    assert result.exit_code == 1 and "no call job" in result.output
