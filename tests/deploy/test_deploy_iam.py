"""The shipped IAM policy is enough and no more, under moto's IAM enforcement.

The deployed code runs with credentials that carry exactly `.chalice/policy-prod.json` (CloudFormation
references resolved to this stack's names, as CloudFormation would): the answer route renders a template
from S3 (first fetch and conditional revalidation), a launcher pass (dialling lease, do-not-call and campaign
check, campaign rules, outcome events and the event outbox) dials a due campaign job through the Plivo
simulator, a conversation step records its result and puts the caller on the do-not-call list (`optout()`),
and the signed hangup callback records the outcome, with the Plivo token read from SSM. Calls the policy
does not grant are refused.

Moto checks resources only for S3; for DynamoDB, SSM and EventBridge it compares every policy resource with
"*". So that the policy's table, index, parameter and event-bus ARNs are really tested, this module tells
moto's DynamoDB, SSM and EventBridge handlers the ARN each request acts on (a dependency's gap filled, none
of our code replaced).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlencode

import boto3
import pytest
from botocore.exceptions import ClientError
from chalice.test import Client
from moto import mock_aws
from moto.core import enable_iam_authentication
from moto.dynamodb.responses import DynamoHandler
from moto.events.responses import EventsHandler
from moto.ssm.responses import SimpleSystemManagerResponse

from chalicelib import resources
from chalicelib.calls.jobs import JobRepository
from devtools.local_aws import create_table_args

from .cfn import resolve
from .support import ACCOUNT, MERGE_TEMPLATE, PREFIX, REGION, TOKEN_PARAM, cfn_names, load, policy

BUCKET = "callflow-iam-templates"
TABLE = "callflow-iam-calls"
CAMPAIGNS = "callflow-iam-campaigns"
CAMPAIGN = "spring"
OTHER_BUCKET = "callflow-iam-other"
AUTH_ID = "MAIAMTESTAUTHID00000"
TOKEN = "iam-test-plivo-token"
BASE = "https://abc123.execute-api.us-east-1.amazonaws.com/api"
WELCOME = "<Response><Speak>Hello from S3, customer {{ headers.CustomerId }}</Speak></Response>"
OPT_OUT = "<Response>{{ optout() }}<Speak>You will not be called again.</Speak></Response>"


def _dynamodb_arn(self) -> str:
    table = self._get_param("TableName")
    if table is None:  # BatchGetItem, BatchWriteItem: the tables are the keys of RequestItems
        tables = set(self._get_param("RequestItems") or {})
        table = tables.pop() if len(tables) == 1 else "several tables"  # our code asks one table at a time
    arn = f"arn:aws:dynamodb:{self.region}:{self.current_account}:table/{table}"
    index = self._get_param("IndexName")
    return f"{arn}/index/{index}" if index else arn


def _events_arn(self) -> str:
    """PutEvents acts on the bus its entries name (the account's default bus when they name none)."""
    if self._get_action() != "PutEvents":
        return "*"
    buses = {entry.get("EventBusName") or "default" for entry in self._get_param("Entries") or []}
    if len(buses) != 1:
        return "several event buses"  # matches no policy resource: our code sends to one bus
    (bus,) = buses
    return (
        bus
        if bus.startswith("arn:")
        else f"arn:aws:events:{self.region}:{self.current_account}:event-bus/{bus}"
    )


def _ssm_arn(self) -> str:
    name = self._get_param("Name") or ""
    return f"arn:aws:ssm:{self.region}:{self.current_account}:parameter/{name.lstrip('/')}"


@dataclass
class Stack:
    admin: boto3.Session
    repo_admin: JobRepository
    campaigns_admin: object
    sim: object
    queue_url: str

    def events(self) -> list[dict]:
        """Every event EventBridge delivered to the test's queue (through a rule on the default bus)."""
        sqs = self.admin.client("sqs")
        seen: list[dict] = []
        while True:
            messages = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get(
                "Messages", []
            )
            if not messages:
                return seen
            seen.extend(json.loads(m["Body"]) for m in messages)
            for m in messages:
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])


def _policy_document(transform: Callable[[dict], dict] | None = None) -> str:
    names = cfn_names(bucket=BUCKET, table=TABLE, prefix=PREFIX, token_param=TOKEN_PARAM, campaigns=CAMPAIGNS)
    document = resolve(policy("prod"), names)
    return json.dumps(transform(document) if transform else document)


def _build(monkeypatch, policy_document: str) -> Iterator[Stack]:
    from devtools.plivo_sim import PlivoSimulator

    monkeypatch.setattr(DynamoHandler, "_determine_resource", _dynamodb_arn, raising=False)
    monkeypatch.setattr(SimpleSystemManagerResponse, "_determine_resource", _ssm_arn, raising=False)
    monkeypatch.setattr(EventsHandler, "_determine_resource", _events_arn, raising=False)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "PLIVO_AUTH_TOKEN", "DEFAULT_TEMPLATE", "EVENT_BUS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "admin")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "admin")
    with mock_aws():
        admin = boto3.Session(aws_access_key_id="admin", aws_secret_access_key="admin", region_name=REGION)
        s3 = admin.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}Welcome.xml", Body=WELCOME.encode())
        s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}routes.json", Body=b'{"default": "Welcome"}')
        s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}OptOut.xml", Body=OPT_OUT.encode())
        s3.put_object(Bucket=BUCKET, Key="private/notes.txt", Body=b"not a template")
        s3.create_bucket(Bucket=OTHER_BUCKET)

        template = load(MERGE_TEMPLATE)["Resources"]
        dynamodb = admin.resource("dynamodb")
        table = dynamodb.create_table(**create_table_args(template["CallsTable"]["Properties"], TABLE))
        campaigns = dynamodb.create_table(
            **create_table_args(template["CampaignsTable"]["Properties"], CAMPAIGNS)
        )
        campaigns.put_item(Item={"pk": f"campaign#{CAMPAIGN}", "name": CAMPAIGN, "state": "active"})
        # Outcome events reach an SQS queue through a rule on the default bus, so the test sees them arrive.
        queue_url = admin.client("sqs").create_queue(QueueName="callflow-iam-events")["QueueUrl"]
        queue_arn = admin.client("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        events = admin.client("events")
        events.put_rule(Name="callflow-all", EventPattern=json.dumps({"source": ["callflow"]}))
        events.put_targets(Rule="callflow-all", Targets=[{"Id": "queue", "Arn": queue_arn}])
        ssm = admin.client("ssm")
        ssm.put_parameter(Name=TOKEN_PARAM, Value=TOKEN, Type="SecureString")
        ssm.put_parameter(Name="/other/secret", Value="x", Type="SecureString")

        iam = admin.client("iam")
        iam.create_user(UserName="callflow-lambda")
        iam.put_user_policy(UserName="callflow-lambda", PolicyName="callflow", PolicyDocument=policy_document)
        key = iam.create_access_key(UserName="callflow-lambda")["AccessKey"]

        sim = PlivoSimulator(AUTH_ID, TOKEN, hold_seconds=5.0).start()
        try:
            # From here on the code under test sees only the Lambda role's credentials.
            for name, value in {
                "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
                "TEMPLATE_BUCKET": BUCKET,
                "TEMPLATE_PREFIX": PREFIX,
                "TEMPLATE_CACHE_TTL": "0",
                "CALLS_TABLE": TABLE,
                "CAMPAIGNS_TABLE": CAMPAIGNS,
                "PLIVO_AUTH_ID": AUTH_ID,
                "PLIVO_AUTH_TOKEN_PARAM": TOKEN_PARAM,
                "PLIVO_API_URL": sim.url,
                "PUBLIC_BASE_URL": BASE,
                "VERIFY_SIGNATURES": "true",
                "PLIVO_CPS": "10",
                "CALL_WINDOW": "00:00-00:00",
                "DEFAULT_TZ": "UTC",
            }.items():
                monkeypatch.setenv(name, value)
            monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # no credentials cached from before
            resources.reset()
            yield Stack(admin, JobRepository(table), campaigns, sim, queue_url)
        finally:
            sim.stop()
            resources.reset()


@pytest.fixture
def stack(monkeypatch) -> Iterator[Stack]:
    yield from _build(monkeypatch, _policy_document())


def _signed(path: str, params: dict[str, str], nonce: str = "31415") -> tuple[dict[str, str], str]:
    from devtools.events import sign_v3

    signature = sign_v3(TOKEN, "POST", BASE + path, params, nonce)
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Plivo-Signature-V3": signature,
        "X-Plivo-Signature-V3-Nonce": nonce,
    }
    return headers, urlencode(params)


def _answer(client: Client, **headers: str) -> str:
    params = {
        "CallUUID": "uuid-answer-1",
        "From": "14155559999",
        "To": "14155550100",
        "Direction": "outbound",
        "CallStatus": "in-progress",
        "Event": "StartApp",
        "X-PH-CustomerId": "C42",
        **{f"X-PH-{k}": v for k, v in headers.items()},
    }
    headers, body = _signed("/answer", params)
    response = client.http.post("/answer", headers=headers, body=body)
    assert response.status_code == 200
    return response.body.decode()


def _denied(call: Callable[[], object]) -> bool:
    try:
        call()
    except ClientError as exc:
        # Moto answers JSON-protocol services with an XML error body, which botocore reports as code "403".
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status == 403 and "AccessDenied" in str(exc)
    return False


def _due_job(call_id: str, **extra: object) -> dict:
    return {
        "call_id": call_id,
        "status": "pending",
        "due_at": time.time() - 5,
        "to": "14155550100",
        "from": "14155559999",
        "headers": {},
        **extra,
    }


def _seed_outbox(stack: Stack) -> str:
    """A job whose `Call Completed` an earlier run could not send: this run's drain must deliver it."""
    from chalicelib.calls import events

    stack.repo_admin.add(_due_job("job-0", due_at=time.time() + 86400))
    event = events.for_job({**stack.repo_admin.get("job-0"), "status": "completed"}, events.COMPLETED)
    stack.repo_admin.defer_event("job-0", event)
    assert stack.repo_admin.get("job-0").get("outbox_shard")
    return event.id


def test_policy_is_enough_for_answer_launcher_and_hangup(stack, caplog):
    from app import app
    from chalicelib import handlers
    from chalicelib.answer.steps import step_url

    caplog.set_level(logging.INFO, logger="callflow")
    stack.repo_admin.add(_due_job("job-1", campaign=CAMPAIGN, headers={"CustomerId": "C42"}))
    deferred_id = _seed_outbox(stack)
    with Client(app) as client, enable_iam_authentication():
        first = _answer(client)
        assert "Hello from S3, customer C42" in first  # the template itself, not the fallback
        assert "Hello from S3, customer C42" in _answer(client)  # TTL 0: revalidated by conditional GET
        assert resources.template_store().s3_requests == 4  # routes.json and Welcome.xml, twice

        # Dialling lease, the do-not-call and campaign check (BatchGetItem), the campaign's rules (GetItem),
        # claim and record, `Call Placed` (PutEvents) and the outbox drain (Query on outbox-index).
        summary = handlers.launch()
        assert summary["placed"] == 1 and summary["failed"] == summary["unknown"] == 0, summary
        (call,) = stack.sim.calls
        assert call["body"]["hangup_url"] == f"{BASE}/hangup?call_id=job-1"
    # Read as the admin (the role may not read the test's queue).
    delivered = {(e["detail-type"], e["detail"]["call_id"]): e["detail"]["id"] for e in stack.events()}
    assert delivered == {
        ("Call Placed", "job-1"): delivered[("Call Placed", "job-1")],
        ("Call Completed", "job-0"): deferred_id,
    }
    assert "outbox_shard" not in stack.repo_admin.get("job-0")  # drained, its outbox cleared
    assert "outbox_shard" not in stack.repo_admin.get("job-1")  # sent at once, never deferred

    with Client(app) as client, enable_iam_authentication():
        # A conversation step: the job read and its result written (calls table), the callee on the list.
        url = step_url(f"{BASE}/answer", "OptOut", "job-1", {})
        headers, body = _signed(url[len(BASE) :], {**_step_params(), "Digits": "9"}, nonce="2718")
        response = client.http.post(url[len(BASE) :], headers=headers, body=body)
        assert response.status_code == 200 and "You will not be called again." in response.body.decode()

        params = {
            "CallUUID": "uuid-1",
            "RequestUUID": call["request_uuid"],
            "CallStatus": "completed",
            "HangupCause": "NORMAL_CLEARING",
            "Duration": "12",
            "BillDuration": "60",
            "From": "14155559999",
            "To": "14155550100",
            "Direction": "outbound",
            "Event": "Hangup",
        }
        headers, body = _signed("/hangup?call_id=job-1", params)
        response = client.http.post("/hangup?call_id=job-1", headers=headers, body=body)
        assert response.status_code == 200, response.body

        # Read back with the role's own GetItem: also granted.
        assert resources.job_repository().get("job-1")["status"] == "completed"
    job = stack.repo_admin.get("job-1")
    assert job["status"] == "completed" and job["call_uuid"] == "uuid-1" and job["attempts"] == 1
    assert job["result"] == "opted-out"
    listed = stack.campaigns_admin.get_item(Key={"pk": "dnc#14155550100"}).get("Item")
    assert listed and listed["reason"] == "opted out during call job-1"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def _step_params() -> dict[str, str]:
    return {
        "CallUUID": "uuid-1",
        "From": "14155559999",
        "To": "14155550100",
        "Direction": "outbound",
        "CallStatus": "in-progress",
        "Event": "StartApp",
    }


def test_policy_is_no_more(stack):
    with enable_iam_authentication():
        s3 = resources.s3_client()
        ddb = resources.dynamodb_resource().meta.client  # plain values: the resource client serialises them
        ssm = resources.ssm_client()
        events = resources.events_client()
        refused = {
            "s3:PutObject on the template prefix": lambda: s3.put_object(
                Bucket=BUCKET, Key=f"{PREFIX}Evil.xml", Body=b"<Response/>"
            ),
            "s3:GetObject outside the prefix": lambda: s3.get_object(Bucket=BUCKET, Key="private/notes.txt"),
            "s3:ListBucket on another bucket": lambda: s3.list_objects_v2(Bucket=OTHER_BUCKET, Prefix=PREFIX),
            "s3:DeleteObject": lambda: s3.delete_object(Bucket=BUCKET, Key=f"{PREFIX}Welcome.xml"),
            "dynamodb:Scan": lambda: ddb.scan(TableName=TABLE),
            "dynamodb:PutItem": lambda: ddb.put_item(TableName=TABLE, Item={"call_id": "x"}),
            "dynamodb:DeleteItem": lambda: ddb.delete_item(TableName=TABLE, Key={"call_id": "x"}),
            "dynamodb:Query on the table, not the index": lambda: ddb.query(
                TableName=TABLE, KeyConditionExpression="call_id = :c", ExpressionAttributeValues={":c": "x"}
            ),
            "dynamodb:DescribeTable": lambda: ddb.describe_table(TableName=TABLE),
            "dynamodb:Query on the CLI's campaign index": lambda: ddb.query(
                TableName=TABLE,
                IndexName="campaign-due_at-index",
                KeyConditionExpression="campaign = :c",
                ExpressionAttributeValues={":c": CAMPAIGN},
            ),
            "dynamodb:BatchGetItem on the calls table": lambda: ddb.batch_get_item(
                RequestItems={TABLE: {"Keys": [{"call_id": "x"}]}}
            ),
            "dynamodb:UpdateItem on the campaigns table (a campaign's state)": lambda: ddb.update_item(
                TableName=CAMPAIGNS,
                Key={"pk": f"campaign#{CAMPAIGN}"},
                UpdateExpression="SET #s = :p",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={":p": "paused"},
            ),
            "dynamodb:DeleteItem on the campaigns table (dnc remove)": lambda: ddb.delete_item(
                TableName=CAMPAIGNS, Key={"pk": "dnc#14155550100"}
            ),
            "dynamodb:Scan on the campaigns table": lambda: ddb.scan(TableName=CAMPAIGNS),
            "dynamodb:BatchWriteItem on the campaigns table (dnc import)": lambda: ddb.batch_write_item(
                RequestItems={CAMPAIGNS: [{"PutRequest": {"Item": {"pk": "dnc#1"}}}]}
            ),
            "events:PutEvents on another bus": lambda: events.put_events(
                Entries=[{"Source": "callflow", "DetailType": "x", "Detail": "{}", "EventBusName": "other"}]
            ),
            "ssm:GetParameter on another parameter": lambda: ssm.get_parameter(
                Name="/other/secret", WithDecryption=True
            ),
            "ssm:PutParameter": lambda: ssm.put_parameter(
                Name=TOKEN_PARAM, Value="x", Type="SecureString", Overwrite=True
            ),
        }
        allowed = [name for name, call in refused.items() if not _denied(call)]
        assert allowed == []
        # The same credentials do hold what the policy grants (so the refusals are not a broken key).
        assert ssm.get_parameter(Name=TOKEN_PARAM, WithDecryption=True)["Parameter"]["Value"] == TOKEN
        ddb.get_item(TableName=TABLE, Key={"call_id": "x"})
        ddb.batch_get_item(RequestItems={CAMPAIGNS: {"Keys": [{"pk": f"campaign#{CAMPAIGN}"}]}})
        entry = {"Source": "callflow", "DetailType": "x", "Detail": "{}", "EventBusName": "default"}
        assert events.put_events(Entries=[entry])["FailedEntryCount"] == 0


def test_a_deleted_template_is_missing_not_served_forever(stack, caplog):
    """The role may list the template bucket, so a deleted key is a 404: the cached copy is dropped and the
    next selection step answers. (Moto answers 404 for a missing key even without s3:ListBucket, unlike
    S3, so the grant itself is proven by listing the bucket; its exact statement is checked statically
    in test_deploy_config.)"""
    from app import app

    caplog.set_level(logging.WARNING, logger="callflow")
    stack.admin.client("s3").put_object(
        Bucket=BUCKET, Key=f"{PREFIX}Gone.xml", Body=b"<Response><Speak>Soon deleted</Speak></Response>"
    )
    s3 = resources.s3_client()
    with Client(app) as client:
        with enable_iam_authentication():
            listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)["Contents"]
            assert f"{PREFIX}Gone.xml" in [item["Key"] for item in listed]
            assert "Soon deleted" in _answer(client, Template="Gone")
        stack.admin.client("s3").delete_object(Bucket=BUCKET, Key=f"{PREFIX}Gone.xml")
        with enable_iam_authentication():
            with pytest.raises(ClientError) as missing:
                s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}Gone.xml")
            assert missing.value.response["Error"]["Code"] == "NoSuchKey"
            after = _answer(client, Template="Gone")  # TTL 0: revalidated, 404, routes.json default instead
        assert "Hello from S3, customer C42" in after and "Soon deleted" not in after
        assert resources.template_store().cache_sizes()["unknown"] == 1
    assert [r for r in caplog.records if "denied" in r.getMessage()] == []


def test_the_check_is_not_blind_a_policy_without_updateitem_breaks_the_launcher(monkeypatch):
    """Negative control: drop one action the launcher needs and the same pass places nothing."""

    def without_update_item(document: dict) -> dict:
        for statement in document["Statement"]:
            statement["Action"] = [a for a in statement["Action"] if a != "dynamodb:UpdateItem"]
        document["Statement"] = [s for s in document["Statement"] if s["Action"]]
        return document

    from chalicelib import handlers

    for stack in _build(monkeypatch, _policy_document(without_update_item)):
        stack.repo_admin.add(
            {
                "call_id": "job-2",
                "status": "pending",
                "due_at": time.time() - 5,
                "to": "14155550100",
                "from": "14155559999",
                "headers": {},
            }
        )
        with enable_iam_authentication():
            summary = handlers.launch()
        assert summary["placed"] == 0 and stack.sim.calls == []
        assert stack.repo_admin.get("job-2")["status"] == "pending"


def test_resolved_policy_names_this_stack():
    document = json.loads(_policy_document())
    text = json.dumps(document)
    assert f"arn:aws:s3:::{BUCKET}/{PREFIX}*" in text
    assert f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{TABLE}/index/status-due_at-index" in text
    assert f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{TOKEN_PARAM}" in text


def _without(action: str, resource_suffix: str | None = None) -> Callable[[dict], dict]:
    """The policy with `action` removed (only on resources ending with `resource_suffix`, if given)."""

    def transform(document: dict) -> dict:
        for statement in document["Statement"]:
            if action not in statement["Action"]:
                continue
            resources_ = (
                statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            )
            if resource_suffix is None:
                statement["Action"] = [a for a in statement["Action"] if a != action]
            else:
                statement["Resource"] = [r for r in resources_ if not r.endswith(resource_suffix)]
        document["Statement"] = [s for s in document["Statement"] if s["Action"] and s["Resource"]]
        return document

    return transform


@pytest.mark.parametrize(
    "missing",
    ["dynamodb:BatchGetItem", "events:PutEvents", "dynamodb:Query on outbox-index"],
)
def test_the_check_is_not_blind_for_the_v2_grants(monkeypatch, missing):
    """Negative controls for what v2 added: each grant is needed by the pass above, and moto (with this
    module's resource hints) does refuse it when it is missing."""
    from chalicelib import handlers

    action, _, index = missing.partition(" on ")
    transform = _without(action, f"/index/{index}" if index else None)
    for stack in _build(monkeypatch, _policy_document(transform)):
        stack.repo_admin.add(_due_job("job-3", campaign=CAMPAIGN))
        _seed_outbox(stack)
        with enable_iam_authentication():
            summary = handlers.launch()
        job, waiting = stack.repo_admin.get("job-3"), stack.repo_admin.get("job-0")
        delivered = {e["detail-type"] for e in stack.events()}
        if action == "dynamodb:BatchGetItem":  # no dial-time check, no call
            assert summary["placed"] == 0 and stack.sim.calls == [] and job["status"] != "placed"
        elif action == "events:PutEvents":  # placed, but its event waits in the outbox; nothing delivered
            assert summary["placed"] == 1 and delivered == set()
            assert job.get("outbox_shard") and waiting.get("outbox_shard")
        else:  # placed and announced, but the outbox is never read
            assert summary["placed"] == 1 and delivered == {"Call Placed"}
            assert waiting.get("outbox_shard")
