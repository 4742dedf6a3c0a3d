"""Static checks of what ships: chalice config, the merge template and the IAM policy files.

Fast (no packaging): these pin the contract of issue 5 so a careless edit fails here, before any deploy.
"""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from chalicelib.settings import Settings
from tests.support import SETTINGS

from .cfn import UnresolvedReference, resolve
from .support import CONFIG, MERGE_TEMPLATE, ROOT, cfn_names, load, policy

# Exactly what the deployed code calls. The CLI's own calls run with the user's credentials: PutItem, Scan
# and DeleteItem on the calls table and Query on its campaign-due_at-index (pause, resume, stop, reports);
# Scan, DeleteItem, UpdateItem (campaign states) and BatchWriteItem (dnc import) on the campaigns table.
EXPECTED_ACTIONS = {
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "s3:GetObject",  # conditional GETs (If-None-Match) need nothing more
    "s3:ListBucket",  # on the template bucket: S3 then says 404, not 403, for a missing key
    "dynamodb:GetItem",
    "dynamodb:UpdateItem",
    "dynamodb:Query",
    "dynamodb:BatchGetItem",  # the launcher's dial-time check: do-not-call numbers and campaign states
    "dynamodb:PutItem",  # optout() on the answer route puts the caller on the do-not-call list
    "events:PutEvents",  # outcome events (launcher runs and their outbox drain)
    "ssm:GetParameter",
    "kms:Decrypt",
}


@pytest.fixture(scope="module")
def config():
    return load(CONFIG)


@pytest.fixture(scope="module")
def template():
    return load(MERGE_TEMPLATE)


def _as_list(value):
    return value if isinstance(value, list) else [value]


# --- .chalice/config.json ---------------------------------------------------------------------------


def test_config_has_the_three_stages_and_no_generated_policy(config):
    assert set(config["stages"]) == {"dev", "prod", "local"}
    assert config["autogen_policy"] is False
    for stage in ("dev", "prod"):
        assert (ROOT / ".chalice" / config["stages"][stage]["iam_policy_file"]).is_file()


def test_function_sizes_and_timeouts(config):
    api = config["lambda_functions"]["api_handler"]
    launcher = config["lambda_functions"]["launch_calls"]
    assert api["lambda_memory_size"] == 256  # SPEC Limits
    assert 3 <= api["lambda_timeout"] <= 29  # API Gateway gives up after 29 s anyway
    # Longer than the 1-minute schedule on purpose: the run stops claiming after its budget, the rest of the
    # timeout lets in-flight Plivo requests finish and be recorded instead of dying as `unknown` jobs.
    assert launcher["lambda_timeout"] > 60
    assert launcher["lambda_memory_size"] >= 128


@pytest.mark.parametrize("stage", ["dev", "prod", "local"])
def test_stage_environment_uses_spec_names_and_parses(config, stage):
    env = config["stages"][stage].get("environment_variables", {})
    assert set(env) <= SETTINGS
    assert all(isinstance(v, str) for v in env.values())
    Settings.from_env(env)  # raises ConfigError on a malformed value


def test_dev_stage_sets_no_environment(config):
    """chalice.test.Client (stage dev by default) lays the stage's variables over os.environ: any value
    here would silently override what a test configured."""
    assert not config["stages"]["dev"].get("environment_variables")
    assert not config.get("environment_variables")


def test_secrets_are_never_in_config(config):
    text = CONFIG.read_text()
    assert 'PLIVO_AUTH_TOKEN"' not in text


# --- infra/resources.json ---------------------------------------------------------------------------


def test_calls_table_definition(template):
    table = template["Resources"]["CallsTable"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    props = table["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [{"AttributeName": "call_id", "KeyType": "HASH"}]
    attrs = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
    assert attrs == {
        "call_id": "S",
        "status": "S",
        "due_at": "N",
        "campaign": "S",
        "outbox_shard": "S",
        "outbox_at": "N",
    }
    indexes = {g["IndexName"]: g for g in props["GlobalSecondaryIndexes"]}
    keys = {
        "status-due_at-index": ("status", "due_at"),  # the launcher's due jobs and stuck-job sweeps
        "campaign-due_at-index": ("campaign", "due_at"),  # sparse: a campaign's jobs (pause, stop, reports)
        "outbox-index": ("outbox_shard", "outbox_at"),  # sparse: jobs with events still to send
    }
    assert set(indexes) == set(keys)
    for name, (hash_key, range_key) in keys.items():
        assert indexes[name]["KeySchema"] == [
            {"AttributeName": hash_key, "KeyType": "HASH"},
            {"AttributeName": range_key, "KeyType": "RANGE"},
        ], name
        assert indexes[name]["Projection"] == {"ProjectionType": "ALL"}, name
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["DeletionPolicy"] == "Retain"


def test_campaigns_table_definition(template):
    """Campaigns and the do-not-call list, one item each under `pk` (campaign#<name>, dnc#<digits>)."""
    table = template["Resources"]["CampaignsTable"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    props = table["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert props["AttributeDefinitions"] == [{"AttributeName": "pk", "AttributeType": "S"}]
    assert "GlobalSecondaryIndexes" not in props
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["DeletionPolicy"] == "Retain"  # the do-not-call list must survive a stack deletion


def test_template_bucket_is_versioned_encrypted_and_private(template):
    bucket = template["Resources"]["TemplateBucket"]
    props = bucket["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    block = props["PublicAccessBlockConfiguration"]
    assert set(block) == {"BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"}
    assert all(block.values())


def test_both_functions_are_wired_to_bucket_table_and_token(template):
    for function in ("APIHandler", "LaunchCalls"):
        env = template["Resources"][function]["Properties"]["Environment"]["Variables"]
        assert set(env) <= SETTINGS
        assert env["TEMPLATE_BUCKET"] == {"Ref": "TemplateBucket"}
        assert env["TEMPLATE_PREFIX"] == {"Ref": "TemplatePrefix"}
        assert env["CALLS_TABLE"] == {"Ref": "CallsTable"}
        assert env["CAMPAIGNS_TABLE"] == {"Ref": "CampaignsTable"}
        assert env["EVENT_BUS"] == {"Ref": "EventBus"}
        assert env["PLIVO_AUTH_TOKEN_PARAM"] == {"Ref": "PlivoAuthTokenParam"}
        assert "PLIVO_AUTH_TOKEN" not in env
    assert template["Parameters"]["PlivoAuthTokenParam"]["Type"] == "String"
    assert template["Parameters"]["EventBus"]["Default"] == "default"  # SPEC: the account's default bus


def test_settings_read_the_v2_names():
    """The names the template sets are the names the code reads (a typo would leave them unset)."""
    settings = Settings.from_env({"CAMPAIGNS_TABLE": "c", "EVENT_BUS": "b"})
    assert settings.campaigns_table == "c" and settings.event_bus == "b"
    assert Settings.from_env({}).event_bus == "default"


def test_public_base_url_wiring_is_not_circular(template, config):
    stage = config["stages"]["prod"]["api_gateway_stage"]
    launcher = template["Resources"]["LaunchCalls"]["Properties"]["Environment"]["Variables"]
    when_custom, default = launcher["PUBLIC_BASE_URL"]["Fn::If"][1:]
    assert when_custom == {"Ref": "PublicBaseUrl"}
    assert default == {
        "Fn::Sub": f"https://${{RestAPI}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/{stage}"
    }
    # The API handler may only get a URL that does not depend on its own RestAPI.
    api = template["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"]
    assert "RestAPI" not in str(api)
    assert api["PUBLIC_BASE_URL"]["Fn::If"][1:] == [{"Ref": "PublicBaseUrl"}, {"Ref": "AWS::NoValue"}]


# --- .chalice/policy-<stage>.json -------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_policy_grants_exactly_the_actions_the_code_calls(stage):
    statements = policy(stage)["Statement"]
    actions = {a for s in statements for a in _as_list(s["Action"])}
    assert actions == EXPECTED_ACTIONS
    assert all(s["Effect"] == "Allow" and "NotAction" not in s and "NotResource" not in s for s in statements)


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_policy_resources_are_specific(stage):
    names = cfn_names(
        bucket="b",
        table="t",
        prefix="templates/",
        token_param="/callflow/token",
        campaigns="c",
        event_bus="bus",
    )
    resolved = resolve(policy(stage), names)
    by_action: dict[str, set[str]] = {}
    for statement in resolved["Statement"]:
        for action in _as_list(statement["Action"]):
            by_action.setdefault(action, set()).update(_as_list(statement["Resource"]))
    assert by_action["s3:GetObject"] == {"arn:aws:s3:::b/templates/*"}
    assert by_action["s3:ListBucket"] == {"arn:aws:s3:::b"}
    table = "arn:aws:dynamodb:us-east-1:123456789012:table/t"
    campaigns = "arn:aws:dynamodb:us-east-1:123456789012:table/c"
    # Job lifecycle, dialling lease and conversation steps on the calls table; campaign rules on the other.
    assert by_action["dynamodb:GetItem"] == {table, campaigns}
    assert by_action["dynamodb:UpdateItem"] == {table}  # campaign states change by the CLI only
    assert by_action["dynamodb:BatchGetItem"] == by_action["dynamodb:PutItem"] == {campaigns}
    # Due and stuck jobs, the event outbox; never the table itself nor the CLI's campaign-due_at-index.
    assert by_action["dynamodb:Query"] == {
        f"{table}/index/status-due_at-index",
        f"{table}/index/outbox-index",
    }
    assert by_action["events:PutEvents"] == {"arn:aws:events:us-east-1:123456789012:event-bus/bus"}
    assert by_action["ssm:GetParameter"] == {"arn:aws:ssm:us-east-1:123456789012:parameter/callflow/token"}
    for action, resources in by_action.items():
        if action.split(":")[0] in ("s3", "dynamodb", "ssm", "events"):
            assert "*" not in resources and all(r.count("*") <= 1 for r in resources), action


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_list_bucket_is_on_the_template_bucket_without_a_prefix_condition(stage):
    """ListBucket is there so S3 answers 404, not 403, for a missing template. S3 checks it on a GetObject,
    whose request carries no s3:prefix, so a prefix condition would never match; the bucket is callflow's
    own template bucket, so listing it shows nothing the function cannot already read."""
    names = cfn_names(bucket="b", prefix="templates/")
    statements = resolve(policy(stage), names)["Statement"]
    (listing,) = [s for s in statements if "s3:ListBucket" in _as_list(s["Action"])]
    assert _as_list(listing["Action"]) == ["s3:ListBucket"]
    assert _as_list(listing["Resource"]) == ["arn:aws:s3:::b"]
    assert "Condition" not in listing


def test_dev_and_prod_policies_are_identical():
    """Same code, same needs: a dev deploy proves the prod policy."""
    assert policy("dev") == policy("prod")


def test_kms_decrypt_only_through_ssm_for_the_token():
    names = cfn_names(token_param="/callflow/token")
    (kms,) = [s for s in resolve(policy(), names)["Statement"] if s["Action"] == ["kms:Decrypt"]]
    condition = kms["Condition"]["StringEquals"]
    assert condition["kms:ViaService"] == "ssm.us-east-1.amazonaws.com"
    assert condition["kms:EncryptionContext:PARAMETER_ARN"].endswith(":parameter/callflow/token")


def test_policy_references_only_what_the_template_defines(template):
    """Every Ref/GetAtt in the policy must exist in the merged stack, or CloudFormation rejects the role."""
    defined = set(template["Resources"]) | set(template["Parameters"])
    names = {k: "x" for k in cfn_names() if k.split(".")[0] in defined or k.startswith("AWS::")}
    resolve(policy(), names)
    for reference in ("CallsTable.Arn", "CampaignsTable.Arn", "EventBus"):
        with pytest.raises(UnresolvedReference):
            resolve(policy(), {k: v for k, v in names.items() if k != reference})


# --- the local stack builds its table from the same definition --------------------------------------


def test_local_stack_creates_a_working_table_from_this_definition():
    """devtools.local_aws (make run) translates the CallsTable Properties; the deploy uses them verbatim."""
    from devtools import local_aws

    args = local_aws.create_table_args(local_aws.cfn_resource("CallsTable", MERGE_TEMPLATE), "callflow-calls")
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(**args)
        described = client.describe_table(TableName="callflow-calls")["Table"]
        assert described["GlobalSecondaryIndexes"][0]["IndexName"] == "status-due_at-index"
        table = boto3.resource("dynamodb", region_name="us-east-1").Table("callflow-calls")
        table.put_item(Item={"call_id": "a", "status": "pending", "due_at": 5})
        table.put_item(Item={"call_id": "b", "status": "pending", "due_at": 50})
        page = table.query(
            IndexName="status-due_at-index",
            KeyConditionExpression="#s = :p AND due_at <= :n",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":p": "pending", ":n": 10},
        )
        assert [i["call_id"] for i in page["Items"]] == ["a"]


def test_local_stack_creates_a_working_campaigns_table_from_this_definition():
    from devtools import local_aws

    props = local_aws.cfn_resource("CampaignsTable", MERGE_TEMPLATE)
    with mock_aws():
        boto3.client("dynamodb", region_name="us-east-1").create_table(
            **local_aws.create_table_args(props, "callflow-campaigns")
        )
        table = boto3.resource("dynamodb", region_name="us-east-1").Table("callflow-campaigns")
        table.put_item(Item={"pk": "dnc#14155550100", "number": "14155550100"})
        assert table.get_item(Key={"pk": "dnc#14155550100"})["Item"]["number"] == "14155550100"
