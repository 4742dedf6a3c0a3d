"""Shared facts for the deploy tests: file locations and the names CloudFormation would substitute."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / ".chalice" / "config.json"
MERGE_TEMPLATE = ROOT / "infra" / "resources.json"

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"
STACK = "callflow-prod"
BUCKET = "callflow-prod-templatebucket-1a2b3c"
TABLE = "callflow-prod-CallsTable-XYZ"
CAMPAIGNS = "callflow-prod-CampaignsTable-ABC"
EVENT_BUS = "default"
PREFIX = "templates/"
TOKEN_PARAM = "/callflow/prod/plivo-auth-token"


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def policy(stage: str = "prod") -> dict[str, Any]:
    name = load(CONFIG)["stages"][stage]["iam_policy_file"]
    return load(ROOT / ".chalice" / name)


def cfn_names(
    bucket: str = BUCKET,
    table: str = TABLE,
    prefix: str = PREFIX,
    token_param: str = TOKEN_PARAM,
    campaigns: str = CAMPAIGNS,
    event_bus: str = EVENT_BUS,
) -> dict[str, str]:
    """What CloudFormation resolves the policy's references to, for a stack with these physical names."""
    log_group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{STACK}"
    return {
        "AWS::Partition": "aws",
        "AWS::Region": REGION,
        "AWS::AccountId": ACCOUNT,
        "AWS::StackName": STACK,
        "AWS::URLSuffix": "amazonaws.com",
        "TemplateBucket": bucket,
        "TemplateBucket.Arn": f"arn:aws:s3:::{bucket}",
        "CallsTable": table,
        "CallsTable.Arn": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}",
        "CampaignsTable": campaigns,
        "CampaignsTable.Arn": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{campaigns}",
        "EventBus": event_bus,
        "TemplatePrefix": prefix,
        "PlivoAuthTokenParam": token_param,
        "ApiHandlerLogGroup.Arn": f"{log_group}-answer:*",
        "LaunchCallsLogGroup.Arn": f"{log_group}-launcher:*",
    }
