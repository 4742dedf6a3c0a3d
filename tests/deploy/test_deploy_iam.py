"""The shipped IAM policy is enough and no more, under moto's IAM enforcement.

The deployed code runs with credentials that carry exactly `.chalice/policy-prod.json` (CloudFormation
references resolved to this stack's names, as CloudFormation would): the answer route renders a template
from S3 (first fetch and conditional revalidation), a launcher pass dials a due job through the Plivo
simulator, and the signed hangup callback records the outcome, with the Plivo token read from SSM. Calls the
policy does not grant are refused.

Moto checks resources only for S3; for DynamoDB and SSM it compares every policy resource with "*". So that
the policy's table, index and parameter ARNs are really tested, this module tells moto's DynamoDB and SSM
handlers the ARN each request acts on (a dependency's gap filled, none of our code replaced).
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
from moto.ssm.responses import SimpleSystemManagerResponse

from chalicelib import resources
from chalicelib.calls.jobs import JobRepository
from devtools.local_aws import create_table_args

from .cfn import resolve
from .support import ACCOUNT, MERGE_TEMPLATE, PREFIX, REGION, TOKEN_PARAM, cfn_names, load, policy

BUCKET = "callflow-iam-templates"
TABLE = "callflow-iam-calls"
OTHER_BUCKET = "callflow-iam-other"
AUTH_ID = "MAIAMTESTAUTHID00000"
TOKEN = "iam-test-plivo-token"
BASE = "https://abc123.execute-api.us-east-1.amazonaws.com/api"
WELCOME = "<Response><Speak>Hello from S3, customer {{ headers.CustomerId }}</Speak></Response>"


def _dynamodb_arn(self) -> str:
    arn = f"arn:aws:dynamodb:{self.region}:{self.current_account}:table/{self._get_param('TableName')}"
    index = self._get_param("IndexName")
    return f"{arn}/index/{index}" if index else arn


def _ssm_arn(self) -> str:
    name = self._get_param("Name") or ""
    return f"arn:aws:ssm:{self.region}:{self.current_account}:parameter/{name.lstrip('/')}"


@dataclass
class Stack:
    admin: boto3.Session
    repo_admin: JobRepository
    sim: object


def _policy_document(transform: Callable[[dict], dict] | None = None) -> str:
    document = resolve(
        policy("prod"), cfn_names(bucket=BUCKET, table=TABLE, prefix=PREFIX, token_param=TOKEN_PARAM)
    )
    return json.dumps(transform(document) if transform else document)


def _build(monkeypatch, policy_document: str) -> Iterator[Stack]:
    from devtools.plivo_sim import PlivoSimulator

    monkeypatch.setattr(DynamoHandler, "_determine_resource", _dynamodb_arn, raising=False)
    monkeypatch.setattr(SimpleSystemManagerResponse, "_determine_resource", _ssm_arn, raising=False)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "PLIVO_AUTH_TOKEN", "DEFAULT_TEMPLATE"):
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
        s3.put_object(Bucket=BUCKET, Key="private/notes.txt", Body=b"not a template")
        s3.create_bucket(Bucket=OTHER_BUCKET)

        props = load(MERGE_TEMPLATE)["Resources"]["CallsTable"]["Properties"]
        table = admin.resource("dynamodb").create_table(**create_table_args(props, TABLE))
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
            yield Stack(admin, JobRepository(table), sim)
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


def test_policy_is_enough_for_answer_launcher_and_hangup(stack):
    from app import app
    from chalicelib import handlers

    stack.repo_admin.add(
        {
            "call_id": "job-1",
            "status": "pending",
            "due_at": time.time() - 5,
            "to": "14155550100",
            "from": "14155559999",
            "headers": {"CustomerId": "C42"},
        }
    )
    with enable_iam_authentication(), Client(app) as client:
        first = _answer(client)
        assert "Hello from S3, customer C42" in first  # the template itself, not the fallback
        assert "Hello from S3, customer C42" in _answer(client)  # TTL 0: revalidated by conditional GET
        assert resources.template_store().s3_requests == 4  # routes.json and Welcome.xml, twice

        summary = handlers.launch()
        assert summary["placed"] == 1 and summary["failed"] == summary["unknown"] == 0, summary
        (call,) = stack.sim.calls
        assert call["body"]["hangup_url"] == f"{BASE}/hangup?call_id=job-1"

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


def test_policy_is_no_more(stack):
    with enable_iam_authentication():
        s3 = resources.s3_client()
        ddb = resources.dynamodb_resource().meta.client  # plain values: the resource client serialises them
        ssm = resources.ssm_client()
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
