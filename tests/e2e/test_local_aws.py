"""The local stack's table comes from infra/resources.json, the file the deploy uses (one definition)."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from devtools import local_aws


def test_table_is_created_from_the_deploy_definition():
    properties = local_aws.cfn_resource("CallsTable")
    args = local_aws.create_table_args(properties, "t")
    assert args["KeySchema"] == properties["KeySchema"]
    assert args["AttributeDefinitions"] == properties["AttributeDefinitions"]
    assert [i["IndexName"] for i in args["GlobalSecondaryIndexes"]] == [
        "status-due_at-index",
        "campaign-due_at-index",
        "outbox-index",
    ]
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        assert local_aws.ensure_table(client, "t") is True
        assert local_aws.ensure_table(client, "t") is False  # idempotent
        table = client.describe_table(TableName="t")["Table"]
        index = table["GlobalSecondaryIndexes"][0]
        assert index["KeySchema"] == [
            {"AttributeName": "status", "KeyType": "HASH"},
            {"AttributeName": "due_at", "KeyType": "RANGE"},
        ]
        s3 = boto3.client("s3", region_name="us-east-1")
        assert local_aws.ensure_bucket(s3, "local-bucket") is True
        assert local_aws.ensure_bucket(s3, "local-bucket") is False


def test_translation_of_optional_properties(tmp_path):
    properties = {
        "AttributeDefinitions": [{"AttributeName": "k", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "k", "KeyType": "HASH"}],
        "SSESpecification": {"SSEEnabled": True},
        "StreamSpecification": {"StreamViewType": "NEW_IMAGE"},
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
    }
    args = local_aws.create_table_args(properties, "x")
    assert args["SSESpecification"] == {"Enabled": True}
    assert args["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    assert "PointInTimeRecoverySpecification" not in args and args["BillingMode"] == "PAY_PER_REQUEST"
    with pytest.raises(ValueError, match="Surprise"):
        local_aws.create_table_args({**properties, "Surprise": 1}, "x")
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"Resources": {}}))
    with pytest.raises(KeyError, match="CallsTable"):
        local_aws.cfn_resource("CallsTable", path)
