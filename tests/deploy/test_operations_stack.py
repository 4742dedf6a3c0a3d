"""The stack's alarms and dashboard watch only metrics the code emits, in the namespace and dimensions it
emits them with."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from chalicelib import metrics

from .cfn import UnresolvedReference, conditions, resolve

ROOT = Path(__file__).resolve().parents[2]
RESOURCES = json.loads((ROOT / "infra" / "resources.json").read_text())


def emitted_names() -> set[str]:
    """Metric names the deployed code passes to metrics.count / metrics.value (read from the source)."""
    constants = {k: v for k, v in vars(metrics).items() if k.isupper() and isinstance(v, str)}
    used: set[str] = set()
    for path in (ROOT / "chalicelib").rglob("*.py"):
        for name in re.findall(r"metrics\.(?:count|value)\(\s*metrics\.([A-Z0-9_]+)", path.read_text()):
            used.add(constants[name])
        for name in re.findall(r"\(\"[a-z]+\", metrics\.([A-Z0-9_]+)\)", path.read_text()):
            used.add(constants[name])
    return used


def test_every_alarm_watches_an_emitted_metric():
    alarms = {
        k: v["Properties"]
        for k, v in RESOURCES["Resources"].items()
        if v.get("Type") == "AWS::CloudWatch::Alarm"  # the functions' entries are chalice's, merged, untyped
    }
    assert len(alarms) >= 5
    emitted = emitted_names()
    for name, alarm in alarms.items():
        assert alarm["Namespace"] == metrics.NAMESPACE, name
        assert alarm["MetricName"] in emitted, f"{name} watches {alarm['MetricName']}, which nothing emits"
        assert alarm["Dimensions"] == [{"Name": "service", "Value": metrics.SERVICE}]


def test_the_dashboard_shows_only_emitted_metrics():
    body = RESOURCES["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    widgets = json.loads(body)["widgets"]
    shown = {line[1] for w in widgets for line in w["properties"]["metrics"]}
    assert shown <= emitted_names(), shown - emitted_names()
    assert {
        metrics.ANSWER_FALLBACKS,
        metrics.CALLS_PLACED,
        metrics.ACHIEVED_CPS,
        metrics.PLIVO_LATENCY_P99,
    } <= shown


def test_alarms_notify_the_optional_topic():
    params = RESOURCES["Parameters"]
    assert params["AlarmTopicArn"]["Default"] == "" and params["AlarmEmail"]["Default"] == ""
    topic = RESOURCES["Resources"]["AlarmTopic"]
    assert topic["Condition"] == "CreatesAlarmTopic"
    assert topic["Properties"]["Subscription"][0]["Endpoint"] == {"Ref": "AlarmEmail"}


def _alarms() -> dict[str, dict]:
    return {k: v for k, v in RESOURCES["Resources"].items() if v.get("Type") == "AWS::CloudWatch::Alarm"}


TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:ops-pager"
CREATED_TOPIC = "arn:aws:sns:us-east-1:123456789012:callflow-prod-AlarmTopic-1XYZ"


@pytest.mark.parametrize(
    ("topic_arn", "email", "expected"),
    [
        (TOPIC_ARN, "", [TOPIC_ARN]),  # the operator's own topic
        (TOPIC_ARN, "ops@example.com", [TOPIC_ARN]),  # a given topic wins; no topic is created
        ("", "ops@example.com", [CREATED_TOPIC]),  # the stack's topic, with the e-mail subscribed
        ("", "", None),  # nobody to notify: no actions at all (the alarms still show in the console)
    ],
)
def test_alarm_actions_follow_the_topic_parameters(topic_arn, email, expected):
    params = {"AlarmTopicArn": topic_arn, "AlarmEmail": email}
    when = conditions(RESOURCES, params)
    assert when["CreatesAlarmTopic"] == (not topic_arn and bool(email))
    names = {**params, "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012"}
    if when["CreatesAlarmTopic"]:
        names["AlarmTopic"] = CREATED_TOPIC  # Ref of an AWS::SNS::Topic is its ARN
    alarms = _alarms()
    assert len(alarms) >= 5
    for name, alarm in alarms.items():
        assert "Condition" not in alarm, name  # every alarm exists whatever the parameters
        for key in ("AlarmActions", "OKActions"):
            assert resolve(alarm["Properties"][key], names, when) == expected, (name, key)


def test_alarm_actions_never_name_a_topic_that_is_not_created():
    """Without the condition resolved, the created topic's Ref is unresolvable: the resolver does not
    silently pick a branch, so the test above really follows the template's conditions."""
    params = {"AlarmTopicArn": "", "AlarmEmail": ""}
    when = conditions(RESOURCES, params)
    (alarm, *_) = _alarms().values()
    with pytest.raises(UnresolvedReference):
        resolve(alarm["Properties"]["AlarmActions"], params, {**when, "NotifiesSomebody": True})
