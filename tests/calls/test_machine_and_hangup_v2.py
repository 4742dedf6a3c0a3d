"""v2 outcomes (SPEC "Machine detection and outcomes", "Hangup callback", "Operations"): the pure hangup rules
for every outcome and campaign retry rules; the signed /machine route through Chalice's test client with moto
and the in-process simulator (the transfer request the simulator receives); events and metrics of a hangup;
and the stuck-`placed` sweep against the simulator's call records."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from urllib.parse import urlencode
from xml.etree import ElementTree

import boto3
import pytest

from chalicelib import metrics, resources
from chalicelib.calls import settle
from chalicelib.calls.campaigns import Campaign
from chalicelib.calls.events import Publisher
from chalicelib.calls.hangup import record_hangup, transition
from chalicelib.calls.plivo_api import MissingId, PlivoClient
from chalicelib.settings import Settings
from tests import support
from tests.calls.launcherlib import AUTH_ID, AUTH_TOKEN, BASE, make_job

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp()  # a Monday, 12:00 UTC = 21:00 in Tokyo
ALL_DAY = Settings(max_attempts=3, retry_delays=(300, 900, 3600), call_window="00:00-00:00", default_tz="UTC")
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def placed(attempts=1, **fields):
    job = {
        "call_id": "a",
        "status": "placed",
        "attempts": attempts,
        "request_uuid": "req-1",
        "request_uuids": {str(attempts): "req-1"},
    }
    job.update(fields)
    return job


def add_placed(repo, call_id="a", **fields):
    job = {**placed(), **fields}
    repo.add(make_job(call_id, **{k: v for k, v in job.items() if k != "call_id"}))


def hangup(status="completed", **extra):
    params = {
        "Event": "Hangup",
        "CallUUID": "call-1",
        "RequestUUID": "req-1",
        "CallStatus": status,
        "HangupCause": "NORMAL_CLEARING",
        "Duration": "20",
    }
    params.update(extra)
    return params


# --- the pure rules: every outcome ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "status, new_status, retried",
    [
        ("completed", "completed", False),
        ("busy", "pending", True),
        ("no-answer", "pending", True),
        ("timeout", "pending", True),
        ("cancel", "failed", False),
        ("failed", "failed", False),
    ],
)
def test_each_call_status_and_whether_it_is_retried(status, new_status, retried):
    changes, _ = transition(placed(), ALL_DAY, hangup(status), NOW)
    assert changes["status"] == new_status and changes["outcome"] == status
    assert ("due_at" in changes) is retried
    if status in ("cancel", "failed"):
        assert changes["last_error"] == f"call ended {status}: NORMAL_CLEARING"


def test_a_machine_without_voicemail_is_retried_like_no_answer():
    changes, remove = transition(placed(machine=True, machine_attempt=1), ALL_DAY, hangup(), NOW)
    assert changes["outcome"] == "machine" and changes["status"] == "pending"
    assert changes["due_at"] == NOW + 300 and changes["last_error"] == "attempt 1 of 3: machine"
    assert set(remove) == {"machine", "machine_attempt"}  # the next attempt starts clean


def test_a_machine_on_the_last_attempt_fails():
    changes, _ = transition(placed(attempts=3, machine=True, machine_attempt=3), ALL_DAY, hangup(), NOW)
    assert changes["status"] == "failed" and changes["last_error"] == "machine after 3 of 3 attempts"


@pytest.mark.parametrize(
    "fields",
    [
        {"voicemail": True},
        {"machine_detection": "voicemail:Vm", "last_step": "Vm"},
    ],
)
def test_a_left_voicemail_completes_the_job(fields):
    changes, remove = transition(placed(machine=True, machine_attempt=1, **fields), ALL_DAY, hangup(), NOW)
    assert (changes["status"], changes["outcome"]) == ("completed", "machine") and remove == ("last_error",)


def test_the_voicemail_template_may_come_from_the_campaign():
    campaign = Campaign("c1", machine_detection="voicemail:Vm")
    job = placed(machine=True, machine_attempt=1, last_step="Vm", campaign="c1")
    assert transition(job, ALL_DAY, hangup(), NOW, campaign)[0]["status"] == "completed"
    assert transition(job, ALL_DAY, hangup(), NOW)[0]["status"] == "pending"  # no template known: not left


def test_an_earlier_attempts_machine_flag_does_not_make_this_attempt_a_machine():
    changes, _ = transition(placed(attempts=2, machine=True, machine_attempt=1), ALL_DAY, hangup(), NOW)
    assert (changes["status"], changes["outcome"]) == ("completed", "completed")


# --- campaign retry rules ------------------------------------------------------------------------------


def test_campaign_delays_per_outcome():
    campaign = Campaign("c1", retry={"busy": (60, 120), "machine": (7200,)})
    changes, _ = transition(placed(attempts=2), ALL_DAY, hangup("busy"), NOW, campaign)
    assert changes["due_at"] == NOW + 120
    changes, _ = transition(placed(attempts=1), ALL_DAY, hangup("no-answer"), NOW, campaign)
    assert changes["due_at"] == NOW + 300  # not in the campaign's rules: RETRY_DELAYS
    changes, _ = transition(placed(machine=True, machine_attempt=1), ALL_DAY, hangup(), NOW, campaign)
    assert changes["due_at"] == NOW + 7200


@pytest.mark.parametrize("outcome", ["busy", "machine"])
def test_an_empty_campaign_list_never_retries(outcome):
    campaign = Campaign("c1", retry={outcome: ()})
    job = placed(machine=True, machine_attempt=1) if outcome == "machine" else placed()
    changes, _ = transition(job, ALL_DAY, hangup("busy" if outcome == "busy" else "completed"), NOW, campaign)
    assert (
        changes["status"] == "failed" and changes["last_error"] == f"{outcome}: campaign c1 does not retry it"
    )


def test_campaign_max_attempts_and_the_jobs_own_first():
    campaign = Campaign("c1", max_attempts=5)
    assert transition(placed(attempts=3), ALL_DAY, hangup("busy"), NOW, campaign)[0]["status"] == "pending"
    job = placed(attempts=3, max_attempts=3)
    assert transition(job, ALL_DAY, hangup("busy"), NOW, campaign)[0]["status"] == "failed"


def _local(epoch, zone):
    from zoneinfo import ZoneInfo

    return datetime.fromtimestamp(epoch, ZoneInfo(zone))


def test_the_retry_moves_into_the_campaigns_window_in_its_tz():
    campaign = Campaign("c1", window="09:00-17:00", tz="Asia/Tokyo")
    due = transition(placed(), ALL_DAY, hangup("busy"), NOW, campaign)[0]["due_at"]
    assert _local(due, "Asia/Tokyo").hour == 9 and due > NOW + 300
    # the job's own tz wins over the campaign's
    due = transition(placed(tz="Europe/London"), ALL_DAY, hangup("busy"), NOW, campaign)[0]["due_at"]
    assert due == NOW + 300  # 13:05 in London is inside 09:00-17:00


def test_the_retry_uses_the_numbers_zone_when_nobody_gives_one():
    settings = Settings(max_attempts=3, retry_delays=(300,), call_window="09:00-17:00", default_tz="UTC")
    due = transition(placed(to="+81312345678"), settings, hangup("busy"), NOW)[0]["due_at"]
    assert _local(due, "Asia/Tokyo").hour == 9  # 21:05 in Tokyo: the next morning there
    assert transition(placed(), settings, hangup("busy"), NOW)[0]["due_at"] == NOW + 300  # DEFAULT_TZ


def test_campaign_days_and_blackout_apply_to_the_retry():
    campaign = Campaign("c1", tz="UTC", days=(2,), blackout=())  # Wednesdays only
    due = transition(placed(), ALL_DAY, hangup("busy"), NOW, campaign)[0]["due_at"]
    assert _local(due, "UTC").weekday() == 2


# --- what the hangup stores ----------------------------------------------------------------------------


@pytest.mark.parametrize("stir_key", ["STIRVerification", "StirVerification"])
def test_the_hangup_record_fields(stir_key):
    params = hangup(
        HangupCauseName="Normal Hangup",
        HangupCauseCode="4000",
        HangupSource="Callee",
        BillDuration="60",
        AnswerTime="2026-06-01 11:59:40",
        EndTime="2026-06-01 12:00:00",
        **{stir_key: "Verified"},
    )
    changes, _ = transition(placed(), ALL_DAY, params, NOW)
    assert changes["hangup_cause_name"] == "Normal Hangup" and changes["hangup_cause_code"] == 4000
    assert changes["hangup_source"] == "Callee" and changes["bill_duration"] == 60
    assert (changes["answer_time"], changes["end_time"]) == ("2026-06-01 11:59:40", "2026-06-01 12:00:00")
    assert changes["stir_verification"] == "Verified"


def test_absent_hangup_fields_are_empty_not_stale():
    changes, _ = transition(placed(hangup_cause_name="Busy Line"), ALL_DAY, hangup(), NOW)
    assert changes["hangup_cause_name"] == "" and changes["hangup_cause_code"] is None
    assert changes["bill_duration"] == 0 and "stir_verification" not in changes


# --- record_hangup: events and metrics ------------------------------------------------------------------


class RefusingEvents:
    """EventBridge while it refuses every entry (a throttled bus)."""

    def __init__(self):
        self.calls = 0

    def put_events(self, Entries):
        self.calls += 1
        return {
            "FailedEntryCount": len(Entries),
            "Entries": [{"ErrorCode": "ThrottlingException"}] * len(Entries),
        }


def _emf(out):
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]


def test_one_event_and_one_outcome_count_across_duplicate_hangups(repo, settings, capsys):
    client = boto3.client("events", region_name="us-east-1")
    sent = []
    client.meta.events.register(
        "provide-client-params.events.PutEvents", lambda params, **_: sent.append(dict(params))
    )
    add_placed(repo)
    metrics.flush()
    capsys.readouterr()
    for _ in range(3):
        record_hangup(repo, settings, "a", hangup(), NOW, publisher=Publisher(client, "default"))
    assert len(sent) == 1
    [entry] = sent[0]["Entries"]
    assert entry["DetailType"] == "Call Completed" and json.loads(entry["Detail"])["call_id"] == "a"
    assert "outbox" not in repo.get("a")
    metrics.flush()
    docs = _emf(capsys.readouterr().out)
    outcome = next(d for d in docs if "Outcome" in d)
    assert outcome["Outcome"] == "completed" and outcome[metrics.HANGUP_OUTCOMES] in (1.0, [1.0])


def test_a_machine_callback_between_the_hangups_read_and_write_decides_the_outcome(repo, settings):
    """/machine lands after the hangup read the job: the hangup's write must not keep the outcome it
    computed without the machine (completed), but look again and record `machine` (retried)."""
    from chalicelib.calls.machine import record_machine

    add_placed(repo, machine_detection="hangup")
    original, reads = repo.get, []

    def get_then_machine(call_id):
        job = original(call_id)
        reads.append(job)
        if len(reads) == 1:
            record_machine(
                repo, "a", hangup("in-progress", Machine="true", Event="MachineDetection"), NOW,
                base_url=lambda: BASE, plivo=lambda: None,
            )  # fmt: skip
        return job

    repo.get = get_then_machine
    assert record_hangup(repo, settings, "a", hangup("completed"), NOW) == "pending"
    job = original("a")
    assert job["outcome"] == "machine" and job["status"] == "pending"


def test_a_refused_event_waits_in_the_jobs_outbox(repo, settings):
    events = RefusingEvents()
    add_placed(repo)
    record_hangup(repo, settings, "a", hangup("failed"), NOW, publisher=Publisher(events, "default"))
    job = repo.get("a")
    assert job["status"] == "failed" and events.calls == 1
    [stored] = job["outbox"].values()
    assert stored["detail_type"] == "Call Failed"


def test_a_retry_publishes_nothing(repo, settings):
    events = RefusingEvents()
    add_placed(repo)
    record_hangup(repo, settings, "a", hangup("busy"), NOW, publisher=Publisher(events, "default"))
    assert repo.get("a")["status"] == "pending" and events.calls == 0


def test_record_hangup_reads_the_campaigns_rules(repo, settings):
    add_placed(repo, campaign="c1")
    asked = []

    def lookup(name):
        asked.append(name)
        return Campaign(name, retry={"busy": ()})

    assert record_hangup(repo, settings, "a", hangup("busy"), NOW, campaigns=lookup) == "failed"
    assert asked == ["c1"] and repo.get("a")["last_error"] == "busy: campaign c1 does not retry it"


# --- the /machine route --------------------------------------------------------------------------------


@pytest.fixture
def client(table, sim, monkeypatch):
    monkeypatch.setenv("TEMPLATE_BUCKET", "unused")
    monkeypatch.setenv("PLIVO_API_URL", sim.url)
    resources.reset()
    from chalice.test import Client

    from app import app

    with Client(app) as test_client:
        yield test_client
    resources.reset()


def live_call(sim, call_uuid="call-1", request_uuid="req-1"):
    """A call in progress at the simulator, as its player leaves one while Plivo's machine detection runs."""
    from devtools.plivo_sim.player import LiveCall

    live = LiveCall(
        {"request_uuid": request_uuid, "call_uuid": call_uuid, "to": "14155550100", "body": {"from": "1"}},
        {"answer": "machine"},
    )
    live.state = "in-progress"
    sim.live[call_uuid] = live
    return live


def machine_params(call_uuid="call-1", request_uuid="req-1", machine="true"):
    return {
        "From": "14155559999",
        "To": "14155550100",
        "Machine": machine,
        "IfMachine": "continue",
        "RequestUUID": request_uuid,
        "ALegRequestUUID": request_uuid,
        "CallUUID": call_uuid,
        "ALegUUID": call_uuid,
        "Direction": "outbound",
        "Event": "MachineDetection",
        "CallStatus": "in-progress",
    }


def post_machine(client, call_id="a", params=None, headers=None):
    reply = client.http.post(
        f"/machine?call_id={call_id}", body=urlencode(params or machine_params()), headers=headers or FORM
    )
    return reply


def assert_empty_response(reply):
    assert reply.status_code == 200
    root = ElementTree.fromstring(reply.body)
    assert root.tag == "Response" and len(root) == 0


def transfers(sim):
    return [r for r in sim.api_requests if r["kind"] == "transfer"]


def test_machine_with_hangup_mode_records_the_machine_and_transfers_nothing(client, repo, sim):
    add_placed(repo, machine_detection="hangup")
    live_call(sim)
    assert_empty_response(post_machine(client))
    job = repo.get("a")
    assert job["machine"] is True and job["machine_attempt"] == 1 and "voicemail" not in job
    assert job["call_uuids"] == {"1": "call-1"} and job["status"] == "placed"
    assert transfers(sim) == []
    # its hangup: a machine, no voicemail -> retried like no-answer
    record_hangup(repo, Settings.from_env(), "a", hangup(), NOW)
    job = repo.get("a")
    assert (job["status"], job["outcome"]) == ("pending", "machine") and "machine" not in job


def test_machine_with_voicemail_transfers_the_call_to_the_step(client, repo, sim):
    add_placed(repo, machine_detection="voicemail:Vm1")
    live = live_call(sim)
    for _ in range(2):  # Plivo repeating the callback transfers once
        assert_empty_response(post_machine(client))
    [request] = transfers(sim)
    assert request["status"] == 202 and request["call_uuid"] == "call-1"
    assert request["body"] == {
        "legs": "aleg",
        "aleg_url": f"{BASE}/answer?step=Vm1&call_id=a",
        "aleg_method": "POST",
    }
    assert live.transfer == (f"{BASE}/answer?step=Vm1&call_id=a", "POST")
    job = repo.get("a")
    assert job["machine"] is True and job["voicemail"] is True
    record_hangup(repo, Settings.from_env(), "a", hangup(), NOW)
    job = repo.get("a")
    assert (job["status"], job["outcome"]) == ("completed", "machine")


def test_the_transfer_url_follows_the_request_when_public_base_url_is_unset(client, repo, sim, monkeypatch):
    monkeypatch.delenv("PUBLIC_BASE_URL")
    resources.reset()
    add_placed(repo, machine_detection="voicemail:Vm1")
    live_call(sim)
    assert_empty_response(post_machine(client, headers={**FORM, "Host": "127.0.0.1:8000"}))
    [request] = transfers(sim)
    assert request["body"]["aleg_url"] == "http://127.0.0.1:8000/answer?step=Vm1&call_id=a"


def test_a_failed_transfer_records_no_voicemail(client, repo, sim):
    add_placed(repo, machine_detection="voicemail:Vm1")
    assert_empty_response(post_machine(client))  # no live call at the simulator: 404
    [request] = transfers(sim)
    assert request["status"] == 404
    job = repo.get("a")
    assert job["machine"] is True and "voicemail" not in job


def test_an_earlier_attempts_machine_callback_changes_nothing(client, repo, sim):
    add_placed(
        repo, attempts=2, request_uuids={"1": "req-old", "2": "req-1"}, machine_detection="voicemail:Vm1"
    )
    live_call(sim, call_uuid="call-old", request_uuid="req-old")
    assert_empty_response(post_machine(client, params=machine_params("call-old", "req-old")))
    stored = repo.get("a")
    assert "machine" not in stored and "call_uuids" not in stored and transfers(sim) == []


def test_a_callback_without_machine_keeps_only_the_uuid_mapping(client, repo, sim):
    add_placed(repo)
    assert_empty_response(post_machine(client, params=machine_params(machine="false")))
    job = repo.get("a")
    assert job["call_uuids"] == {"1": "call-1"} and "machine" not in job


def test_machine_callbacks_are_signed(client, repo, sim, monkeypatch):
    monkeypatch.setenv("VERIFY_SIGNATURES", "true")
    resources.reset()
    add_placed(repo, machine_detection="hangup")
    assert post_machine(client).status_code == 403
    assert "machine" not in repo.get("a")
    params = machine_params()
    headers = {
        **FORM,
        **support.signed_headers("POST", f"{BASE}/machine?call_id=a", params, "42", AUTH_TOKEN),
    }
    assert_empty_response(post_machine(client, params=params, headers=headers))
    assert repo.get("a")["machine"] is True


def test_transfer_never_sends_a_request_without_a_call_uuid(sim):
    plivo = PlivoClient(AUTH_ID, AUTH_TOKEN, sim.url)
    for bad in ("", "a/b", "../x", None):
        with pytest.raises(MissingId):
            plivo.transfer(bad, f"{BASE}/answer")
    assert sim.api_requests == [] and sim.faults == []


# --- the stuck `placed` sweep ----------------------------------------------------------------------------


@pytest.fixture
def player(sim_account):
    """A simulator that plays each call (busy callees only: no answer_url is fetched)."""
    from devtools.plivo_sim import PlivoSimulator

    simulator = PlivoSimulator(AUTH_ID, AUTH_TOKEN, play_calls=True, hold_seconds=1.0).start()
    yield simulator
    simulator.stop()


OVERDUE = 14_400 + 120 + 300 + 60  # past time_limit + ring_timeout + the margin


def place(repo, settings, plivo, call_id, to="14155550100"):
    from chalicelib.calls.launcher import Launcher

    repo.add(make_job(call_id, to=to, due_at=time.time() - 10))
    summary = Launcher(repo, plivo, settings).run()
    assert summary["placed"] == 1, summary
    return repo.get(call_id)


def test_a_lost_hangup_is_settled_from_the_record_listed_by_number(repo, settings, player):
    plivo = PlivoClient(AUTH_ID, AUTH_TOKEN, player.url)
    player.set_callee("14155550100", {"answer": "busy"})
    player.lose_hangups["14155550100"] = 1
    place(repo, settings, plivo, "s1")
    assert player.wait_for(lambda s: len(s.records) == 1, timeout=5)
    assert settle.settle_stuck(repo, plivo, settings, time.time())["checked"] == 0  # not overdue yet
    summary = settle.settle_stuck(repo, plivo, settings, time.time() + OVERDUE)
    assert summary == {"checked": 1, "settled": 1, "unknown": 0, "waiting": 0, "errors": 0}
    job = repo.get("s1")
    [record] = player.records.values()
    assert (job["status"], job["outcome"], job["call_uuid"]) == ("pending", "busy", record["call_uuid"])
    assert job["hangup_cause_name"] == record["hangup_cause_name"] and job["hangup_source"] == "Callee"
    kinds = [r["kind"] for r in player.api_requests]
    assert kinds == ["get", "list"]  # queued? no; no call_uuid known: listed by number
    assert player.api_requests[1]["query"]["to_number"] == "14155550100"


def test_a_known_call_uuid_is_looked_up_directly(repo, settings, player):
    plivo = PlivoClient(AUTH_ID, AUTH_TOKEN, player.url)
    player.set_callee("14155550101", {"answer": "busy"})
    player.lose_hangups["14155550101"] = 1
    job = place(repo, settings, plivo, "s2", to="14155550101")
    assert player.wait_for(lambda s: len(s.records) == 1, timeout=5)
    [uuid] = player.records
    repo.table.update_item(
        Key={"call_id": "s2"},
        UpdateExpression="SET call_uuids = :m",
        ExpressionAttributeValues={":m": {str(job["attempts"]): uuid}},
    )
    summary = settle.settle_stuck(repo, plivo, settings, time.time() + OVERDUE)
    assert summary["settled"] == 1 and repo.get("s2")["outcome"] == "busy"
    assert [(r["kind"], r.get("id")) for r in player.api_requests][1] == ("get", uuid)


def test_a_call_still_queued_at_plivo_is_left(repo, settings, player):
    plivo = PlivoClient(AUTH_ID, AUTH_TOKEN, player.url)
    player.set_callee("14155550102", {"answer": "busy", "queued_seconds": 3})
    place(repo, settings, plivo, "s3", to="14155550102")
    summary = settle.settle_stuck(repo, plivo, settings, time.time() + OVERDUE)
    assert summary["waiting"] == 1 and repo.get("s3")["status"] == "placed"


def test_no_record_makes_the_job_unknown_with_a_reason(repo, settings, sim):
    plivo = PlivoClient(AUTH_ID, AUTH_TOKEN, sim.url)
    repo.add(make_job("s4", status="placed", attempts=1, request_uuid="r-gone", claimed_at=NOW, due_at=NOW))
    events = RefusingEvents()
    summary = settle.settle_stuck(
        repo, plivo, settings, NOW + OVERDUE, publisher=Publisher(events, "default")
    )
    assert summary["unknown"] == 1
    job = repo.get("s4")
    assert job["status"] == "unknown" and "Plivo has no call record to 14155550100" in job["last_error"]
    assert [e["detail_type"] for e in job["outbox"].values()] == ["Call Unknown"]


def test_two_matching_records_are_ambiguous(repo, settings, player):
    plivo = PlivoClient(AUTH_ID, AUTH_TOKEN, player.url)
    player.set_callee("14155550103", {"answer": "busy"})
    player.lose_hangups["14155550103"] = 2
    place(repo, settings, plivo, "s5", to="14155550103")
    place(repo, settings, plivo, "s6", to="14155550103")
    assert player.wait_for(lambda s: len(s.records) == 2, timeout=5)
    summary = settle.settle_stuck(repo, plivo, settings, time.time() + OVERDUE)
    assert summary["unknown"] == 2
    assert "2 call records" in repo.get("s5")["last_error"]


def test_plivo_errors_leave_the_job_for_the_next_run(repo, settings):
    plivo = PlivoClient(AUTH_ID, AUTH_TOKEN, "http://127.0.0.1:9", connect_timeout=0.5, read_timeout=0.5)
    repo.add(make_job("s7", status="placed", attempts=1, request_uuid="r1", claimed_at=NOW, due_at=NOW))
    summary = settle.settle_stuck(repo, plivo, settings, NOW + OVERDUE)
    assert summary["errors"] == 1 and repo.get("s7")["status"] == "placed"


def test_the_pure_rules_of_the_sweep():
    job = placed(claimed_at=NOW, to="+14155550100", call_uuids={"0": "old"}, time_limit=60, ring_timeout=30)
    assert settle.stuck_attempt(job, NOW + 60 + 30 + 299) is None
    attempt = settle.stuck_attempt(job, NOW + 60 + 30 + 300)
    assert attempt is not None and attempt.to == "14155550100" and attempt.request_uuid == "req-1"
    assert attempt.call_uuid is None and attempt.earlier_calls == {"old"}
    filters = settle.search_filters(attempt, NOW + 1000)
    assert (
        filters["end_time__gte"] == "2026-06-01 11:59:00"
        and filters["end_time__lte"] == "2026-06-01 12:16:40"
    )
    assert isinstance(settle.pick_record([{"call_uuid": "old"}], attempt), str)
    assert settle.hangup_params({"call_state": "RINGING", "call_uuid": "x"}, attempt).startswith("no hangup")
    params = settle.hangup_params({"call_state": "ANSWER", "call_uuid": "x", "bill_duration": 7}, attempt)
    assert (
        params["CallStatus"] == "completed"
        and params["RequestUUID"] == "req-1"
        and params["BillDuration"] == "7"
    )
    assert settle.stuck_attempt({**job, "status": "pending"}, NOW + 10**6) is None
