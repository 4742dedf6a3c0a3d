"""The local stack's fake AWS: the one moto-server starter, `free_port`, the fake AWS environment, and the
bucket and table created from the same definitions the deploy uses.

`make run`, the end-to-end, CLI and fault tests and the benchmarks all get their moto server, ports and
dummy credentials here, so there is one copy of each.

`infra/resources.json` (CloudFormation) is the one source of the calls table's shape; this module
translates its `CallsTable` Properties into a DynamoDB `create_table` call, so a key or index change
made for the deploy is what the local stack and the end-to-end tests run against.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devtools.supervisor import Child, Supervisor, http_ready, stop_process

ROOT = Path(__file__).resolve().parents[1]
RESOURCES = ROOT / "infra" / "resources.json"
BUCKET = "callflow-templates"
TABLE = "callflow-calls"
CAMPAIGNS_TABLE = "callflow-campaigns"
EVENTS_QUEUE = "callflow-events"
EVENTS_RULE = "callflow-outcomes"
REGION = "us-east-1"
HOST = "127.0.0.1"

# Dummy credentials for moto: no real account is ever reachable with these.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
# Variables that would point boto3 at a real account or profile: removed from a fake environment.
REAL_ACCOUNT_VARIABLES = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


def aws_env(endpoint: str | None = None) -> dict[str, str]:
    """The fake AWS environment: region, dummy credentials and (with `endpoint`) every boto3 client
    pointed at a moto server through AWS_ENDPOINT_URL."""
    env = {"AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, **FAKE_CREDENTIALS}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    if endpoint is not None:
        env["AWS_ENDPOINT_URL"] = endpoint
    return env


def client(service: str, endpoint: str | None = None):
    """A boto3 client with the fake credentials, on moto server `endpoint` (or in-process moto)."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


# ---------------------------------------------------------------- ports


def free_port(host: str = HOST) -> int:
    """A port nothing listens on right now (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def port_problem(host: str, port: int) -> str | None:
    """None if `port` can be listened on, else why not (checked before anything is started)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "already in use"
            return exc.strerror or str(exc)
    return None


# ---------------------------------------------------------------- the moto server


class MotoServer:
    """`python -m moto.server` (S3, DynamoDB, SSM ...) as its own process on `port` (a free one by default).

    `start(supervisor)` makes it one of that supervisor's children (`make run` stops it with the rest);
    without one it gets its own supervisor and `stop()` ends it. Also a context manager."""

    def __init__(self, port: int | None = None, host: str = HOST, log_dir: Path | None = None) -> None:
        self.host = host
        self.port = free_port(host) if port is None else port
        self.url = f"http://{host}:{self.port}"
        self._log_dir = log_dir
        self._own: Supervisor | None = None
        self.child: Child | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]

    def start(
        self, supervisor: Supervisor | None = None, env: Mapping[str, str] | None = None, timeout: float = 30
    ) -> MotoServer:
        """Start it and wait until it answers; `env` is the process environment (default: ours)."""
        if supervisor is None:
            log_dir = self._log_dir or Path(tempfile.mkdtemp(prefix="callflow-moto-"))
            supervisor = self._own = Supervisor(log_dir)
        base = dict(os.environ if env is None else env)
        self.child = supervisor.start("moto", self.command(), base, ROOT)
        try:
            supervisor.wait_ready(self.child, http_ready(f"{self.url}/moto-api/"), timeout)
        except BaseException:
            if self._own is not None:
                self.stop()
            raise
        return self

    @property
    def pid(self) -> int:
        return self.child.process.pid if self.child is not None else -1

    def reset(self) -> None:
        """Drop every bucket and table (moto's own reset endpoint)."""
        import requests

        requests.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()

    def stop(self) -> None:
        if self._own is not None:
            self._own.stop_all()
            self._own = None
        elif self.child is not None:
            stop_process(self.child.process)

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# CloudFormation properties with no create_table equivalent that matter only in a real account.
LOCAL_IRRELEVANT = frozenset(
    {
        "PointInTimeRecoverySpecification",
        "ContributorInsightsSpecification",
        "KinesisStreamSpecification",
        "ImportSourceSpecification",
        "ResourcePolicy",
        "TableName",
        "TimeToLiveSpecification",
    }
)
COPIED = (
    "AttributeDefinitions",
    "KeySchema",
    "BillingMode",
    "ProvisionedThroughput",
    "TableClass",
    "DeletionProtectionEnabled",
    "Tags",
    "OnDemandThroughput",
)


def cfn_resource(logical_id: str, path: Path = RESOURCES) -> dict[str, Any]:
    """The Properties of one resource in the CloudFormation template."""
    template = json.loads(path.read_text(encoding="utf-8"))
    try:
        return template["Resources"][logical_id].get("Properties", {})
    except KeyError:
        raise KeyError(f"{path} has no resource {logical_id!r}") from None


def _index(cfn: dict[str, Any]) -> dict[str, Any]:
    index = {key: cfn[key] for key in ("IndexName", "KeySchema", "Projection") if key in cfn}
    if "ProvisionedThroughput" in cfn:
        index["ProvisionedThroughput"] = cfn["ProvisionedThroughput"]
    return index


def create_table_args(properties: dict[str, Any], table_name: str) -> dict[str, Any]:
    """CloudFormation AWS::DynamoDB::Table Properties → boto3 `create_table` keyword arguments."""
    unknown = (
        set(properties)
        - set(COPIED)
        - LOCAL_IRRELEVANT
        - {"GlobalSecondaryIndexes", "LocalSecondaryIndexes", "SSESpecification", "StreamSpecification"}
    )
    if unknown:
        names = ", ".join(sorted(unknown))
        raise ValueError(f"table property(ies) the local stack cannot create: {names}")
    args: dict[str, Any] = {"TableName": table_name}
    for key in COPIED:
        if key in properties:
            args[key] = properties[key]
    if properties.get("GlobalSecondaryIndexes"):
        args["GlobalSecondaryIndexes"] = [_index(i) for i in properties["GlobalSecondaryIndexes"]]
    if properties.get("LocalSecondaryIndexes"):
        args["LocalSecondaryIndexes"] = [_index(i) for i in properties["LocalSecondaryIndexes"]]
    sse = properties.get("SSESpecification")
    if sse:
        args["SSESpecification"] = {
            "Enabled": bool(sse.get("SSEEnabled", False)),
            **{k: sse[k] for k in ("SSEType", "KMSMasterKeyId") if k in sse},
        }
    stream = properties.get("StreamSpecification")
    if stream and stream.get("StreamViewType"):
        args["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
    args.setdefault("BillingMode", "PAY_PER_REQUEST")
    return args


def ensure_bucket(s3, bucket: str = BUCKET) -> bool:
    """Create the template bucket unless it exists; True when created."""
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
        return False
    except ClientError:
        s3.create_bucket(Bucket=bucket)
        return True


def ensure_table(
    dynamodb_client, table: str = TABLE, path: Path = RESOURCES, logical_id: str = "CallsTable"
) -> bool:
    """Create a table (the calls table unless `logical_id` says otherwise) from infra/resources.json unless
    it exists; True when created."""
    existing = dynamodb_client.list_tables().get("TableNames", [])
    if table in existing:
        return False
    args = create_table_args(cfn_resource(logical_id, path), table)
    dynamodb_client.create_table(**args)
    dynamodb_client.get_waiter("table_exists").wait(
        TableName=table, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
    )
    return True


def ensure_events_queue(sqs, events, queue: str = EVENTS_QUEUE, rule: str = EVENTS_RULE) -> str:
    """An SQS queue fed by an EventBridge rule for every callflow event on the default bus (what a user
    would set up to consume them); returns the queue URL. Idempotent."""
    url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=rule, EventPattern=json.dumps({"source": ["callflow"]}), State="ENABLED")
    events.put_targets(Rule=rule, Targets=[{"Id": "queue", "Arn": arn}])
    return url
