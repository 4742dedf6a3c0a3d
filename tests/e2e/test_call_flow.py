"""A call from a DynamoDB job to Plivo and back, over real sockets and real processes.

`callflow calls add` writes jobs into the moto server, `callflow launch` places them with the Plivo
simulator, the simulator requests /answer on `chalice local` and posts /hangup, and the jobs end as the
SPEC says. Nothing of ours is mocked.
"""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.e2e


def add(stack, call_id: str, to: str, *headers: str, extra: tuple[str, ...] = ()) -> None:
    args = ["calls", "add", "--id", call_id, "--to", to, "--from", "14155550100", *extra]
    for header in headers:
        args += ["--header", header]
    stack.cli(*args)


def launch(stack) -> dict:
    return json.loads(stack.cli("launch").stdout.strip().splitlines()[-1])


def heard_for(stack, request_uuid: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in stack.heard():
            if record.get("request_uuid") == request_uuid:
                return record
        time.sleep(0.2)
    raise AssertionError(f"the simulator never played request {request_uuid}")


def test_three_calls_pick_three_templates(local_stack):
    add(local_stack, "flow-header", "14155551001", "Template=Chosen", "Name=Ann")
    add(local_stack, "flow-rule", "14155551002", "Campaign=Spring", "Code=SAVE10")
    add(local_stack, "flow-default", "14155551003", "Lang=en")

    summary = launch(local_stack)
    assert summary["placed"] == 3 and summary["failed"] == 0

    expected = {
        "flow-header": ["Chosen by header for Ann."],
        "flow-rule": ["Spring rule, code SAVE10."],
        "flow-default": ["Default greeting for 14155551003."],
    }
    for call_id, spoken in expected.items():
        job = local_stack.wait_job(call_id, lambda j: j["status"] == "completed")
        heard = heard_for(local_stack, job["request_uuid"])
        assert heard["spoken"] == spoken, call_id
        assert heard["error"] is None
        assert heard["hangup_status"] == 200
        assert job["call_uuid"] == heard["call_uuid"]
        assert job["outcome"] == "completed"
        assert job["attempts"] == 1


def test_busy_destination_is_retried_after_the_delay_and_then_completes(local_stack):
    to = "14155552007"
    local_stack.sim_config(status_script={to: ["busy"]})
    add(local_stack, "flow-busy", to, "Template=Chosen", "Name=Bo")

    assert launch(local_stack)["placed"] >= 1
    job = local_stack.wait_job("flow-busy", lambda j: j.get("outcome") == "busy")
    assert job["status"] == "pending"
    assert job["attempts"] == 1
    # RETRY_DELAYS=2: the retry is due two seconds after the hangup was recorded.
    assert 1.0 <= job["due_at"] - job["updated_at"] <= 3.5, job
    first = heard_for(local_stack, job["request_uuid"])
    assert first["call_status"] == "busy" and first["spoken"] == []

    time.sleep(max(0.0, job["due_at"] - time.time()) + 0.2)
    assert launch(local_stack)["placed"] == 1
    done = local_stack.wait_job("flow-busy", lambda j: j["status"] == "completed")
    assert done["attempts"] == 2 and done["outcome"] == "completed"
    assert heard_for(local_stack, done["request_uuid"])["spoken"] == ["Chosen by header for Bo."]
