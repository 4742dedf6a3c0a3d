"""The local stack's AWS resources, created from the same definitions the deploy uses.

`infra/resources.json` (CloudFormation) is the one source of the calls table's shape; this module
translates its `CallsTable` Properties into a DynamoDB `create_table` call, so a key or index change
made for the deploy is what the local stack and the end-to-end tests run against.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESOURCES = ROOT / "infra" / "resources.json"
BUCKET = "callflow-templates"
TABLE = "callflow-calls"

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
        raise ValueError(f"CallsTable property(ies) the local stack cannot create: {names}")
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


def ensure_table(dynamodb_client, table: str = TABLE, path: Path = RESOURCES) -> bool:
    """Create the calls table from infra/resources.json unless it exists; True when created."""
    existing = dynamodb_client.list_tables().get("TableNames", [])
    if table in existing:
        return False
    args = create_table_args(cfn_resource("CallsTable", path), table)
    dynamodb_client.create_table(**args)
    dynamodb_client.get_waiter("table_exists").wait(
        TableName=table, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
    )
    return True
