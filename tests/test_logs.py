"""Logs are one JSON object per line, each event written once (Chalice's own handler stays off)."""

from __future__ import annotations

import json

import pytest

from chalicelib import logs, resources


@pytest.fixture
def bare_env(monkeypatch):
    for name in ("TEMPLATE_BUCKET", "PUBLIC_BASE_URL", "CALLS_TABLE", "DEFAULT_TEMPLATE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VERIFY_SIGNATURES", "false")
    resources.reset()
    yield
    resources.reset()


def _event() -> dict:
    from devtools.events import proxy_event

    return proxy_event(
        "GET",
        "/answer",
        domain="example.com",
        headers={"Host": "example.com"},
        query={"CallUUID": ["log-test-uuid"]},
        request_id="r1",
    )


def test_an_answer_fallback_is_logged_once_as_json(bare_env, capfd):
    import app

    response = app.app(_event(), None)
    assert response["statusCode"] == 200
    out, err = capfd.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert lines, "the fallback must be logged"
    records = [json.loads(line) for line in lines]  # a plain-text line fails here
    fallbacks = [r for r in records if r.get("call_uuid") == "log-test-uuid"]
    assert len(fallbacks) == 1
    assert fallbacks[0]["level"] == "ERROR" and "TEMPLATE_BUCKET" in fallbacks[0]["cause"]


def test_log_fields_are_json_even_for_odd_values(capfd):
    logs.set_level("INFO")
    logs.log.warning("odd", value=object(), text="line\nbreak \u2603")
    out, err = capfd.readouterr()
    found = [x for x in (out + err).splitlines() if x.strip()]
    (line,) = found
    record = json.loads(line)
    assert record["message"] == "odd" and record["text"] == "line\nbreak \u2603"


def test_lambda_context_and_cold_start_are_on_the_handlers_lines(bare_env, capfd):
    """Powertools injects the Lambda context (request id, function) and the cold-start flag."""
    import app

    class Context:
        function_name = "callflow-answer"
        function_version = "$LATEST"
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:callflow-answer"
        memory_limit_in_mb = 256
        aws_request_id = "req-ctx-1"
        log_group_name = log_stream_name = "x"

        @staticmethod
        def get_remaining_time_in_millis():
            return 10_000

    assert app.app(_event(), Context())["statusCode"] == 200
    out, err = capfd.readouterr()
    records = [json.loads(line) for line in (out + err).splitlines() if line.strip().startswith("{")]
    fallback = next(r for r in records if r.get("call_uuid") == "log-test-uuid")
    assert fallback["function_request_id"] == "req-ctx-1" and fallback["function_name"] == "callflow-answer"
    assert "cold_start" in fallback


FRESH = """
import json, os, sys
sys.path.insert(0, {root!r})
for name in ("POWERTOOLS_LOGGER_LOG_EVENT", "POWERTOOLS_LOGGER_SAMPLE_RATE", "LOG_LEVEL"):
    os.environ.pop(name, None)
from chalicelib import logs

class Context:
    function_name = "callflow-answer"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:callflow-answer"
    memory_limit_in_mb = 256
    log_group_name = log_stream_name = "x"
    def __init__(self, request_id):
        self.aws_request_id = request_id
    def get_remaining_time_in_millis(self):
        return 10_000

@logs.lambda_entry
def handler(event, context):
    if event:
        logs.log.warning("a line", event=event)
"""


def _fresh(script: str) -> list[dict]:
    """Run `script` after FRESH in a new process (a cold container: no Logger, no invocation yet)."""
    import subprocess
    import sys
    from pathlib import Path

    code = FRESH.format(root=str(Path(__file__).resolve().parent.parent)) + script
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = (done.stdout + done.stderr).splitlines()
    return [json.loads(line) for line in lines if line.strip().startswith("{")]


def test_an_invocation_that_logs_nothing_builds_no_logger_and_a_later_line_has_its_own_context():
    """The Logger is built by the first line, mid-invocation: that line (and every later one) carries the
    context Powertools' decorator would have set, with cold_start true only in the container's first."""
    records = _fresh(
        """
handler(None, Context("quiet-cold"))
assert logs._Lazy._logger is None and "aws_lambda_powertools" not in sys.modules
handler("second", Context("warm-2"))
handler("third", Context("warm-3"))
"""
    )
    lines = [(r["event"], r["function_request_id"], r["cold_start"]) for r in records]
    assert lines == [("second", "warm-2", False), ("third", "warm-3", False)]


def test_the_first_invocations_lines_say_cold_start():
    records = _fresh('handler("first", Context("cold-1"))\nhandler("second", Context("warm-2"))\n')
    lines = [(r["function_request_id"], r["cold_start"], r["function_name"]) for r in records]
    assert lines == [("cold-1", True, "callflow-answer"), ("warm-2", False, "callflow-answer")]


def test_a_level_set_before_the_logger_exists_holds_when_it_is_built():
    records = _fresh(
        """
logs.set_level("ERROR")
assert logs._Lazy._logger is None
logs.log.warning("below the level")
logs.log.error("at the level")
"""
    )
    assert [r["message"] for r in records] == ["at the level"]


def test_first_lines_on_many_threads_at_once_build_one_logger_and_all_are_written():
    """`chalice local` serves on threads: first lines at once used to build a Logger each, and a request
    failed inside Powertools (a /hangup answered 500 in CI). Powertools' constructor is slowed here so that
    all 16 threads are inside it together when nothing serializes them."""
    records = _fresh(
        """
import threading, time
import aws_lambda_powertools
built = []
original = aws_lambda_powertools.Logger.__init__

def slow_init(self, *args, **kwargs):
    built.append(1)
    time.sleep(0.05)
    original(self, *args, **kwargs)

aws_lambda_powertools.Logger.__init__ = slow_init
failed = []

def one(barrier, number):
    barrier.wait()
    try:
        handler(f"line-{number}", Context(f"req-{number}"))
    except Exception as exc:
        failed.append(repr(exc))

barrier = threading.Barrier(16)
threads = [threading.Thread(target=one, args=(barrier, n)) for n in range(16)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
assert not failed and len(built) == 1, (len(built), failed[:3])
"""
    )
    assert sorted(r["event"] for r in records) == sorted(f"line-{n}" for n in range(16))
