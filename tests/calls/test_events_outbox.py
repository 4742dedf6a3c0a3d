"""Outcome events on EventBridge (moto), delivered to an SQS queue through a rule: sent after the state is
stored, with a stable id, and kept in the job's outbox while EventBridge refuses them."""

from __future__ import annotations

import json
from collections import Counter

import boto3
import pytest

from chalicelib.calls import events
from chalicelib.calls.events import Publisher
from devtools import local_aws
from tests.calls.launcherlib import make_job
from tests.calls.test_launcher_run import launcher_for


@pytest.fixture
def queue(table):
    sqs, bridge = (
        boto3.client("sqs", region_name="us-east-1"),
        boto3.client("events", region_name="us-east-1"),
    )
    url = local_aws.ensure_events_queue(sqs, bridge)
    return sqs, url


def delivered(sqs, url) -> list[dict]:
    found = []
    while True:
        reply = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        if not reply.get("Messages"):
            return found
        for message in reply["Messages"]:
            found.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


class Refusing:
    """EventBridge that throttles every PutEvents (an outage), or fails one entry in each batch."""

    def __init__(self, real, mode: str = "all") -> None:
        self.real = real
        self.mode = mode
        self.calls = 0

    def put_events(self, Entries):
        self.calls += 1
        if self.mode == "all":
            raise self.real.exceptions.ClientError(
                {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "PutEvents"
            )
        reply = self.real.put_events(Entries=Entries[1:])
        return {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "InternalFailure"}, *reply["Entries"]]}


def test_each_placed_call_is_published_once_with_a_stable_id(repo, sim, queue):
    sqs, url = queue
    for i in range(12):
        repo.add(make_job(f"j{i}", to=f"141555501{i:02d}"))
    publisher = Publisher(boto3.client("events", region_name="us-east-1"), "default")
    summary = launcher_for(repo, sim.url, publisher=publisher).run()
    assert summary["placed"] == 12
    got = delivered(sqs, url)
    assert Counter(e["detail-type"] for e in got) == {events.PLACED: 12}
    assert {e["detail"]["call_id"] for e in got} == {f"j{i}" for i in range(12)}
    assert all(e["source"] == "callflow" and e["detail"]["status"] == "placed" for e in got)
    again = events.for_status({**repo.get("j0"), "status": "placed"})
    assert (
        again is not None
        and again.id == next(e for e in got if e["detail"]["call_id"] == "j0")["detail"]["id"]
    )


def test_events_refused_for_two_runs_are_delivered_once_by_the_next(repo, sim, queue):
    sqs, url = queue
    real = boto3.client("events", region_name="us-east-1")
    down = Refusing(real)
    for i in range(3):
        repo.add(make_job(f"a{i}", to=f"141555502{i:02d}"))
    assert launcher_for(repo, sim.url, publisher=Publisher(down, "default")).run()["placed"] == 3
    for i in range(3):
        repo.add(make_job(f"b{i}", to=f"141555503{i:02d}"))
    assert launcher_for(repo, sim.url, publisher=Publisher(down, "default")).run()["placed"] == 3
    assert delivered(sqs, url) == []
    assert {j["call_id"] for j in repo.outbox_jobs()} == {"a0", "a1", "a2", "b0", "b1", "b2"}
    launcher_for(repo, sim.url, publisher=Publisher(real, "default")).run()  # EventBridge is back
    got = delivered(sqs, url)
    assert sorted(e["detail"]["call_id"] for e in got) == ["a0", "a1", "a2", "b0", "b1", "b2"]
    assert list(repo.outbox_jobs()) == [] and all("outbox_shard" not in repo.get(j) for j in ("a0", "b2"))
    launcher_for(repo, sim.url, publisher=Publisher(real, "default")).run()
    assert delivered(sqs, url) == []  # nothing twice


def test_a_partly_failed_batch_keeps_only_the_refused_entry(repo, sim, queue):
    sqs, url = queue
    real = boto3.client("events", region_name="us-east-1")
    for i in range(4):
        repo.add(make_job(f"p{i}", to=f"141555504{i:02d}"))
    launcher_for(repo, sim.url, publisher=Publisher(Refusing(real, "first"), "default")).run()
    first = delivered(sqs, url)
    kept = list(repo.outbox_jobs())
    assert len(first) == 3 and len(kept) == 1
    launcher_for(repo, sim.url, publisher=Publisher(real, "default")).run()
    assert [e["detail"]["call_id"] for e in delivered(sqs, url)] == [kept[0]["call_id"]]


def test_an_event_kept_while_the_outbox_is_sent_stays_findable(repo, sim, queue):
    """A hangup's refused event lands in the job's outbox while the next run is sending that outbox: the
    drain removes only what it sent, and the job stays on the outbox index with the new event."""
    sqs, url = queue
    real = boto3.client("events", region_name="us-east-1")
    repo.add(make_job("x0", to="14155550500"))
    launcher_for(repo, sim.url, publisher=Publisher(Refusing(real), "default")).run()
    assert [j["call_id"] for j in repo.outbox_jobs()] == ["x0"]
    late = events.for_status({**repo.get("x0"), "status": "completed", "outcome": "completed"})
    assert late is not None
    sending = Publisher(real, "default")
    original = sending.publish

    def publish_while_a_hangup_defers(batch):
        refused = original(batch)
        if any(e.detail["call_id"] == "x0" for e in batch) and late.id not in repo.get("x0")["outbox"]:
            repo.defer_event("x0", late)  # EventBridge refused the hangup's event meanwhile
        return refused

    sending.publish = publish_while_a_hangup_defers
    launcher_for(repo, sim.url, publisher=sending).run()
    assert [e["detail-type"] for e in delivered(sqs, url)] == [events.PLACED]
    assert [j["call_id"] for j in repo.outbox_jobs()] == ["x0"]  # still found by the next run
    assert list(repo.get("x0")["outbox"]) == [late.id]
    launcher_for(repo, sim.url, publisher=Publisher(real, "default")).run()
    assert [e["detail-type"] for e in delivered(sqs, url)] == [events.COMPLETED]
    assert list(repo.outbox_jobs()) == []
