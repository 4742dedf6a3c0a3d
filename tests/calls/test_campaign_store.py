"""The campaigns table through moto: campaigns, their states, the do-not-call list, parking a
campaign's jobs."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from chalicelib.calls import gate
from chalicelib.calls.campaign_store import (
    PARKED_DUE_AT,
    CampaignExists,
    CampaignJobs,
    CampaignNotFound,
    CampaignStore,
)
from chalicelib.calls.campaigns import Campaign, CampaignState
from devtools import local_aws

REGION = "us-east-1"


@pytest.fixture
def tables(monkeypatch):
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        client.create_table(**local_aws.create_table_args(local_aws.cfn_resource("CallsTable"), "calls"))
        client.create_table(
            **local_aws.create_table_args(local_aws.cfn_resource("CampaignsTable"), "campaigns")
        )
        ddb = boto3.resource("dynamodb", region_name=REGION)
        yield ddb.Table("calls"), ddb.Table("campaigns")


def test_create_get_and_refuse_a_second(tables):
    _, table = tables
    store = CampaignStore(table)
    store.create(Campaign("Spring", weight=2, days=(0, 1)))
    assert store.get("Spring") == Campaign("Spring", weight=2.0, days=(0, 1))
    with pytest.raises(CampaignExists):
        store.create(Campaign("Spring"))
    assert [c.name for c in store.all()] == ["Spring"]


def test_state_changes_are_conditional(tables):
    _, table = tables
    store = CampaignStore(table)
    store.create(Campaign("A"))
    assert store.set_state("A", CampaignState.PAUSED, [CampaignState.ACTIVE]) == CampaignState.ACTIVE
    with pytest.raises(ValueError, match="is paused"):
        store.set_state("A", CampaignState.PAUSED, [CampaignState.ACTIVE])
    with pytest.raises(CampaignNotFound):
        store.set_state("Nope", CampaignState.PAUSED, [CampaignState.ACTIVE])
    assert store.states(["A", "Nope"]) == {"A": CampaignState.PAUSED, "Nope": None}


def test_do_not_call_list_and_the_gate_in_one_lookup(tables):
    _, table = tables
    store = CampaignStore(table)
    store.create(Campaign("Active"))
    store.create(Campaign("Held", state=CampaignState.PAUSED))
    store.dnc_add("14155550100", "asked us")
    assert store.dnc_add_many((f"1415555{i:04d}", None) for i in range(200, 450)) == 250
    assert store.dnc_listed(["14155550100", "14155550101", "14155550300"]) == {"14155550100", "14155550300"}
    candidates = [
        gate.Candidate("a", "14155550100", None),
        gate.Candidate("b", "14155550101", "Active"),
        gate.Candidate("c", "14155550102", "Held"),
        gate.Candidate("d", "14155550103", "Gone"),
        gate.Candidate("e", "sip:alice@example.com", None),
    ]
    calls = []
    real = table.meta.client.batch_get_item

    def counted(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    table.meta.client.batch_get_item = counted
    assert gate.check(store, candidates) == {
        "a": gate.Verdict.DO_NOT_CALL,
        "b": gate.Verdict.DIAL,
        "c": gate.Verdict.PAUSED,
        "d": gate.Verdict.STOPPED,
        "e": gate.Verdict.DIAL,
    }
    assert len(calls) == 1
    assert store.dnc_remove("14155550100") and not store.dnc_remove("14155550100")
    assert len(list(store.dnc_list())) == 250


def test_pausing_parks_pending_jobs_out_of_the_due_query(tables):
    calls, _ = tables
    for i, status in enumerate(["pending", "pending", "completed"]):
        calls.put_item(
            Item={"call_id": f"j{i}", "status": status, "due_at": 100 + i, "campaign": "C", "to": "1"}
        )
    calls.put_item(Item={"call_id": "other", "status": "pending", "due_at": 50, "to": "1"})
    jobs = CampaignJobs(calls)
    assert sorted(j["call_id"] for j in jobs.jobs("C")) == ["j0", "j1", "j2"]
    assert [jobs.park(f"j{i}") for i in range(3)] == [True, True, False]
    assert not jobs.park("j0")  # already parked: the real due_at is kept
    assert calls.get_item(Key={"call_id": "j0"})["Item"]["due_at"] == PARKED_DUE_AT
    assert calls.get_item(Key={"call_id": "j0"})["Item"]["paused_due_at"] == 100
    assert jobs.unpark("j0") and not jobs.unpark("j0")
    item = calls.get_item(Key={"call_id": "j0"})["Item"]
    assert item["due_at"] == 100 and "paused_due_at" not in item
    assert jobs.cancel("j1", "campaign C was stopped")
    item = calls.get_item(Key={"call_id": "j1"})["Item"]
    assert item["status"] == "cancelled" and "paused_due_at" not in item and "stopped" in item["last_error"]
