"""A two-step reminder over real processes: the launcher dials, the simulated callee presses or says
something (or nothing, or is a machine), `/answer?step=...` serves each step, and the answer and the result
are stored on the job. Nothing of ours is mocked; the templates are the samples in templates/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.e2e

SAMPLES = Path(__file__).resolve().parents[2] / "templates"


@pytest.fixture(scope="module")
def reminder(local_stack):
    local_stack.cli("templates", "push", str(SAMPLES))
    return local_stack


def script(stack, to: str, callee) -> None:
    reply = requests.post(f"{stack.stack.plivo_url}/__sim/callees", json={to: callee}, timeout=5)
    assert reply.status_code == 200, reply.text


def enqueue(stack, call_id: str, to: str, *extra: str) -> None:
    stack.cli(
        "calls",
        "add",
        "--id",
        call_id,
        "--to",
        to,
        "--from",
        "14155550100",
        "--header",
        "Template=Appointment",
        "--data",
        "Name=Ada",
        "--data",
        "When=Tuesday at 10:00",
        *extra,
    )


def launch(stack) -> dict:
    return json.loads(stack.cli("launch").stdout.strip().splitlines()[-1])


def settled(job: dict) -> bool:
    return bool(job.get("outcome")) and job["status"] in ("completed", "failed", "pending")


@pytest.mark.parametrize(
    "call_id, to, callee, result, answer",
    [
        ("conv-press-1", "14155552001", {"inputs": ["1"]}, "confirmed", {"Digits": "1"}),
        ("conv-press-2", "14155552002", {"inputs": ["2"]}, "cancelled", {"Digits": "2"}),
        (
            "conv-say-yes",
            "14155552003",
            {"inputs": ["say:yes please"]},
            "confirmed",
            {"Speech": "yes please"},
        ),
        ("conv-silent", "14155552004", {"inputs": ["silence"]}, "no-reply", None),
    ],
)
def test_the_reminder_keeps_what_the_callee_answered(reminder, call_id, to, callee, result, answer):
    script(reminder, to, callee)
    enqueue(reminder, call_id, to)
    assert launch(reminder)["placed"] == 1
    job = reminder.wait_job(call_id, settled, timeout=30)
    assert job["status"] == "completed" and job["outcome"] == "completed"
    assert job["result"] == result
    if answer is None:
        assert job["last_step"] == "AppointmentNoReply"
        assert "AppointmentReply" not in (job.get("responses") or {})
    else:
        recorded = job["responses"]["AppointmentReply"]
        assert {k: recorded[k] for k in answer} == answer and recorded["at"] > 0
        assert job["last_step"] == "AppointmentReply"
    shown = reminder.cli("calls", "show", call_id).stdout
    assert result in shown


def test_a_machine_gets_the_voicemail_step_and_the_outcome_machine(reminder):
    to = "14155552005"
    script(reminder, to, {"answer": "machine"})
    enqueue(reminder, "conv-machine", to, "--machine-detection", "voicemail:Voicemail")
    assert launch(reminder)["placed"] == 1
    job = reminder.wait_job("conv-machine", settled, timeout=30)
    assert job["machine"] is True and job["outcome"] == "machine"
    assert job["status"] == "completed"  # a voicemail was left: no retry
    calls = [c for c in reminder.heard() if c.get("to") == to]
    spoken = " ".join(" ".join(c.get("spoken") or []) for c in calls)
    assert "Please call us back to confirm" in spoken


def test_a_declined_call_is_not_retried_and_a_busy_one_is(reminder):
    script(reminder, "14155552006", {"answer": "decline"})
    script(reminder, "14155552007", {"answer": "busy"})
    enqueue(reminder, "conv-declined", "14155552006")
    enqueue(reminder, "conv-busy", "14155552007")
    assert launch(reminder)["placed"] == 2
    declined = reminder.wait_job("conv-declined", settled, timeout=30)
    busy = reminder.wait_job("conv-busy", settled, timeout=30)
    assert declined["status"] == "failed" and declined["outcome"] == "cancel"
    assert busy["status"] == "pending" and busy["outcome"] == "busy"
