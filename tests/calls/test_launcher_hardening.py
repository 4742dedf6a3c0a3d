"""Issue 10 (hardening), the calls wing: late and replayed callbacks, hostile job fields, configuration
typos. Each test failed on the code before the fix."""

from __future__ import annotations

import logging
import time

import pytest

from chalicelib import logs
from chalicelib.calls.call_body import JobInvalid, validate_job
from chalicelib.calls.hangup import CallStatus, record_hangup
from chalicelib.calls.jobs import JobStatus
from chalicelib.settings import Settings
from tests.calls.launcherlib import AUTH_TOKEN, BASE, make_job
from tests.calls.test_launcher_run import Collect, launcher_for

NOW = 1_780_000_000.0


def hangup(request_uuid: str, status: str = CallStatus.BUSY, call_uuid: str | None = None, **extra):
    return {
        "CallUUID": call_uuid or f"cu-{request_uuid}",
        "RequestUUID": request_uuid,
        "CallStatus": str(status),
        "HangupCause": "USER_BUSY" if status == CallStatus.BUSY else "NORMAL_CLEARING",
        "Duration": "0",
        "Event": "Hangup",
        **extra,
    }


def settings_with(monkeypatch, **env) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings.from_env()


def due_now(repo, call_id: str, at: float) -> None:
    repo.table.update_item(
        Key={"call_id": call_id},
        UpdateExpression="SET due_at = :d",
        ExpressionAttributeValues={":d": int(at)},
    )


def attempt(repo, settings, call_id: str, number: int, at: float, outcome: str | None = CallStatus.BUSY):
    """Claim attempt `number`, record Plivo's 201 (request r<number>), deliver its hangup (unless None)."""
    job = repo.claim(call_id, at)
    assert job is not None and job["attempts"] == number
    assert repo.mark_placed(
        call_id, at, f"r{number}", "api", attempt=number, request_uuids=job.get("request_uuids")
    )
    if outcome is not None:
        record_hangup(repo, settings, call_id, hangup(f"r{number}", outcome), at + 1)
        due_now(repo, call_id, at + 2)


# --- #1 late or replayed callbacks of an earlier attempt ------------------------------------------------


@pytest.mark.parametrize("max_attempts", ["3", "5"])
@pytest.mark.parametrize("replayed", ["r1", "r2"])
def test_a_replayed_earlier_callback_never_settles_an_unknown_attempt(
    repo, monkeypatch, max_attempts, replayed
):
    settings = settings_with(monkeypatch, MAX_ATTEMPTS=max_attempts, RETRY_DELAYS="0")
    repo.add(make_job("j", due_at=NOW - 10))
    attempt(repo, settings, "j", 1, NOW)
    attempt(repo, settings, "j", 2, NOW + 10)
    assert repo.claim("j", NOW + 20)["attempts"] == 3
    repo.release("j", NOW + 21, status=JobStatus.UNKNOWN, last_error="no reply", count_attempt=True)
    for call_status in (CallStatus.BUSY, CallStatus.COMPLETED, CallStatus.FAILED):
        record_hangup(repo, settings, "j", hangup(replayed, call_status), NOW + 30)
        assert repo.get("j")["status"] == JobStatus.UNKNOWN
    record_hangup(repo, settings, "j", hangup("r3", CallStatus.COMPLETED), NOW + 40)  # its own callback
    job = repo.get("j")
    assert (job["status"], job["attempts"], job["call_uuid"]) == (JobStatus.COMPLETED, 3, "cu-r3")
    assert job["request_uuids"] == {"1": "r1", "2": "r2", "3": "r3"}


def test_a_replayed_earlier_callback_never_moves_a_dialing_attempt(repo, monkeypatch):
    settings = settings_with(monkeypatch, MAX_ATTEMPTS="5", RETRY_DELAYS="0")
    repo.add(make_job("j", due_at=NOW - 10))
    attempt(repo, settings, "j", 1, NOW)
    attempt(repo, settings, "j", 2, NOW + 10)
    assert repo.claim("j", NOW + 20)["attempts"] == 3
    for replayed in ("r1", "r2"):
        record_hangup(repo, settings, "j", hangup(replayed), NOW + 21)
        assert repo.get("j")["status"] == JobStatus.DIALING
    # ... nor by an earlier attempt's CallUUID under a new RequestUUID
    record_hangup(repo, settings, "j", hangup("rX", call_uuid="cu-r1"), NOW + 21)
    assert repo.get("j")["status"] == JobStatus.DIALING


def test_an_unknown_job_is_never_claimed_again(repo, monkeypatch):
    repo.add(make_job("u", status=JobStatus.UNKNOWN, due_at=NOW - 10, attempts=1))
    assert repo.claim("u", NOW) is None


# --- #2 mark_placed's fallback --------------------------------------------------------------------------


def test_a_slow_reply_never_overwrites_a_later_attempts_request_uuid(repo, monkeypatch):
    settings = settings_with(monkeypatch, MAX_ATTEMPTS="3", RETRY_DELAYS="0")
    repo.add(make_job("j", due_at=NOW - 10))
    first = repo.claim("j", NOW)
    record_hangup(repo, settings, "j", hangup("r1"), NOW + 1)  # the callback beats attempt 1's reply
    due_now(repo, "j", NOW + 2)
    second = repo.claim("j", NOW + 3)
    assert repo.mark_placed("j", NOW + 4, "r2", "api-2", attempt=2, request_uuids=second.get("request_uuids"))
    # attempt 1's reply arrives only now
    assert not repo.mark_placed(
        "j", NOW + 5, "r1", "api-1", attempt=1, request_uuids=first.get("request_uuids")
    )
    assert repo.get("j")["request_uuid"] == "r2"
    record_hangup(repo, settings, "j", hangup("r2", CallStatus.COMPLETED), NOW + 6)
    assert repo.get("j")["status"] == JobStatus.COMPLETED


# --- #3 only a final hangup is a hangup; answer_url may not aim at our callbacks ---------------------


@pytest.mark.parametrize(
    "event, call_status",
    [
        ("StartApp", "in-progress"),
        ("Redirect", "in-progress"),
        ("Hangup", "in-progress"),
        ("Hangup", "ringing"),
        (None, "busy"),
        ("MachineDetection", "completed"),
        ("StartApp", "busy"),
    ],
)
def test_only_a_final_hangup_changes_a_job(repo, settings, event, call_status):
    repo.add(make_job("a", status=JobStatus.PLACED, attempts=1, request_uuid="req-1"))
    params = {**hangup("req-1"), "CallStatus": call_status}
    if event is None:
        del params["Event"]
    else:
        params["Event"] = event
    record_hangup(repo, settings, "a", params, NOW)
    job = repo.get("a")
    assert job["status"] == JobStatus.PLACED and "outcome" not in job


@pytest.mark.parametrize(
    "answer_url",
    [
        f"{BASE}/hangup?call_id=other",
        f"{BASE}/hangup",
        f"{BASE}/machine?call_id=other",
        f"{BASE}/Hangup/",
        f"{BASE}//hangup",
        f"{BASE}/%68angup?call_id=x",
        BASE.replace("https://example", "https://EXAMPLE") + "/machine",
    ],
)
def test_answer_url_may_not_point_at_our_own_callbacks(answer_url):
    with pytest.raises(JobInvalid, match="may not point at this API"):
        validate_job({"to": "14155550100", "from": "14155559999", "answer_url": answer_url}, BASE)
    validate_job({"to": "14155550100", "from": "14155559999", "answer_url": f"{BASE}/answer"}, BASE)


def test_answer_url_must_be_https_outside_the_local_stage():
    job = {"to": "14155550100", "from": "14155559999", "answer_url": "http://example.com/answer"}
    with pytest.raises(JobInvalid, match="must be an https URL"):
        validate_job(job, BASE)
    local = Settings(public_base_url="http://127.0.0.1:8000/api")
    assert local.local_stage and not Settings(public_base_url=BASE).local_stage
    assert not Settings(public_base_url="https://localhost/api").local_stage  # https: not the local stack
    validate_job(job, local.public_base_url, local=True)


def test_the_launcher_fails_a_job_aimed_at_our_hangup(repo, sim):
    repo.add(make_job("evil", answer_url=f"{BASE}/hangup?call_id=victim"))
    summary = launcher_for(repo, sim.url).run()
    assert summary["failed"] == 1 and sim.requests == []
    assert "may not point at this API" in repo.get("evil")["last_error"]


# --- #4 configuration typos stop the run; the jobs wait -------------------------------------------------


def errors_logged(run) -> tuple[object, list[logging.LogRecord]]:
    collect = Collect()
    logging.getLogger(logs.SERVICE).addHandler(collect)
    try:
        result = run()
    finally:
        logging.getLogger(logs.SERVICE).removeHandler(collect)
    return result, [r for r in collect.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    "name, value",
    [("CALL_WINDOW", "08:00\u201321:00"), ("DEFAULT_TZ", "America/New York"), ("PUBLIC_BASE_URL", "")],
)
def test_a_bad_setting_stops_the_run_with_one_error(repo, sim, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    for i in range(3):
        repo.add(make_job(f"j{i}"))
    summary, errors = errors_logged(lambda: launcher_for(repo, sim.url).run())
    assert len(errors) == 1 and name in errors[0].__dict__.get("cause", errors[0].getMessage())
    assert summary == dict.fromkeys(summary, 0)
    assert {job["status"] for job in repo.list()} == {JobStatus.PENDING} and sim.requests == []


def test_bad_retry_delays_stop_the_scheduled_run_with_one_error(table, sim, monkeypatch):
    from chalicelib import handlers, resources

    monkeypatch.setenv("RETRY_DELAYS", "300,15m")
    monkeypatch.setenv("PLIVO_API_URL", sim.url)
    resources.reset()
    from chalicelib.calls.jobs import JobRepository

    repo = JobRepository(table)
    repo.add(make_job("j"))
    summary, errors = errors_logged(handlers.launch)
    assert len(errors) == 1 and "RETRY_DELAYS" in errors[0].__dict__["cause"]
    assert summary == dict.fromkeys(summary, 0)
    assert repo.get("j")["status"] == JobStatus.PENDING and sim.requests == []


def test_a_cps_that_cannot_dial_one_call_in_time_is_a_configuration_error(repo, sim):
    repo.add(make_job("j"))
    launcher = launcher_for(repo, sim.url, cps=0.02, remaining_ms=lambda: 60_000)
    summary, errors = errors_logged(launcher.run)
    assert len(errors) == 1 and "PLIVO_CPS" in errors[0].__dict__["cause"]
    assert repo.get("j")["status"] == JobStatus.PENDING and sim.requests == []
    fine = launcher_for(repo, sim.url, cps=1, remaining_ms=lambda: 60_000)
    assert fine.run()["placed"] == 1


@pytest.mark.parametrize("where", ["404", "302"])
def test_a_plivo_api_url_that_is_not_plivo_stops_the_run(repo, sim, where):
    for i in range(5):
        repo.add(make_job(f"j{i}", to=f"1415555010{i}", due_at=time.time() - 100 + i))
    if where == "302":
        for i in range(5):
            sim.script[f"1415555010{i}"] = [302]
        url = sim.url
    else:
        url = sim.url + "/not-plivo"
    summary, errors = errors_logged(lambda: launcher_for(repo, url, cps=1).run())
    assert summary["failed"] == 0 and summary["placed"] == 0
    assert {job["status"] for job in repo.list()} == {JobStatus.PENDING}
    assert {job["attempts"] for job in repo.list()} == {0}
    assert len(sim.requests) <= 1 and len(errors) == 1  # one request reached the Call API at most


# --- #7 producer-written numbers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, fragment",
    [
        ({"attempts": -3}, "attempts -3"),
        ({"attempts": 0.5}, "attempts 0.5"),
        ({"attempts": "1"}, "attempts '1'"),
        ({"attempts": 3}, "leaves no attempt"),
        ({"attempts": 1, "max_attempts": 1}, "leaves no attempt"),
        ({"max_attempts": "three"}, "max_attempts 'three'"),
        ({"max_attempts": 0.5}, "max_attempts 0.5"),
        ({"due_at": -5}, "due_at -5"),
    ],
)
def test_producer_numbers_fail_the_job_before_any_dial(repo, sim, fields, fragment):
    repo.add(make_job("bad", **fields))
    summary, errors = errors_logged(lambda: launcher_for(repo, sim.url).run())
    job = repo.get("bad")
    assert job["status"] == JobStatus.FAILED and fragment in job["last_error"], job
    assert summary["failed"] == 1 and sim.requests == [] and errors == []


def test_the_claim_never_errors_on_a_string_attempts(repo):
    repo.add(make_job("s", attempts="1", due_at=NOW - 10))
    assert repo.claim("s", NOW) is None  # no ValidationException
    assert repo.fail_pending("s", NOW, "invalid job: attempts '1'")
    assert repo.get("s")["status"] == JobStatus.FAILED


# --- #11 SIP URIs and the token ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "to",
    ["sip:a@b?X-Evil=1", "sip:a@b;transport=tcp", "sip:alice", "sip:a;x@b", "sips:@b", "sip:a@", "sip:a@b@c"],
)
def test_sip_uris_with_parameters_headers_or_no_user_are_refused(to):
    with pytest.raises(JobInvalid, match="must be digits"):
        validate_job({"to": to, "from": "14155559999"})


@pytest.mark.parametrize("to", ["sip:alice@phone.plivo.com", "sips:bob@10.0.0.1:5061", "sip:a.b-c@[::1]"])
def test_plain_sip_uris_are_accepted(to):
    validate_job({"to": to, "from": "14155559999"})


def test_settings_never_show_the_token():
    settings = Settings.from_env()
    assert settings.plivo_auth_token == AUTH_TOKEN
    assert AUTH_TOKEN not in repr(settings) and AUTH_TOKEN not in str(settings)
    assert AUTH_TOKEN not in f"{settings!r} {settings}"
