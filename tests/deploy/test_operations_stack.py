"""The stack's alarms and dashboard watch only metrics the code emits, in the namespace and dimensions it
emits them with."""

from __future__ import annotations

import json
import re
from pathlib import Path

from chalicelib import metrics

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
        k: v["Properties"] for k, v in RESOURCES["Resources"].items() if v["Type"] == "AWS::CloudWatch::Alarm"
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
