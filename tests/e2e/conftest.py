"""The whole stack as real processes on free ports: moto server, chalice local, the Plivo simulator.

Starting it costs a few seconds, so one stack serves every test of a module (module scope); each test uses
its own destination numbers and call ids so the tests do not see each other's jobs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from devtools.local_aws import free_port
from devtools.run_local import Stack
from devtools.supervisor import Supervisor

ROOT = Path(__file__).resolve().parents[2]

# Templates owned by the tests, so a change to the sample templates cannot change what the tests expect.
TEMPLATES = {
    "Chosen.xml": "<Response><Speak>Chosen by header for {{ headers.Name }}.</Speak></Response>",
    "Ruled.xml": "<Response><Speak>Spring rule, code {{ headers.Code }}.</Speak><Hangup/></Response>",
    "Greeting.xml": "<Response><Speak>Default greeting for {{ call.To }}.</Speak></Response>",
    "routes.json": json.dumps(
        {"default": "Greeting", "rules": [{"when": {"Campaign": "Spring"}, "template": "Ruled"}]}
    ),
}


class RunningStack:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def cli(self, *args: str, check: bool = True):
        result = self.stack.callflow(*args)
        if check:
            command = " ".join(args)
            assert result.returncode == 0, f"callflow {command} failed:\n{result.stdout}\n{result.stderr}"
        return result

    def job(self, call_id: str) -> dict:
        jobs = json.loads(self.cli("calls", "list", "--json").stdout)
        return next(job for job in jobs if job["call_id"] == call_id)

    def wait_job(self, call_id: str, predicate, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        job = {}
        while time.monotonic() < deadline:
            job = self.job(call_id)
            if predicate(job):
                return job
            time.sleep(0.3)
        raise AssertionError(f"job {call_id} never reached the expected state; last seen {job}")

    def heard(self) -> list[dict]:
        return self.stack.heard()

    def sim_config(self, **knobs) -> None:
        reply = requests.post(f"{self.stack.plivo_url}/__sim/config", json=knobs, timeout=5)
        assert reply.status_code == 200, reply.text


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory):
    stack = Stack(
        free_port(),
        free_port(),
        free_port(),
        root=ROOT,
        extra_env={"CALL_WINDOW": "00:00-24:00", "RETRY_DELAYS": "2", "MAX_ATTEMPTS": "3"},
    )
    supervisor = Supervisor(tmp_path_factory.mktemp("stack-logs"))
    try:
        stack.start(supervisor)
        templates = tmp_path_factory.mktemp("templates")
        for name, text in TEMPLATES.items():
            (templates / name).write_text(text)
        running = RunningStack(stack)
        running.cli("templates", "push", str(templates))
        yield running
    finally:
        supervisor.stop_all()
