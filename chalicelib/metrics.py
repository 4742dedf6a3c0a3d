"""Metrics through Powertools for AWS Lambda's Metrics: CloudWatch embedded metric format (EMF), namespace
`callflow`, flushed once per invocation by the handlers (and by `callflow launch`).

Dimensions only ever take values from small fixed sets (`REASONS`, `ROUTES`, `OUTCOMES` ...) or, for
campaign names, the first MAX_CAMPAIGNS names a container sees (later ones count as "other"), so no
dimension can take unbounded values however many templates or campaigns a stranger invents.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

NAMESPACE = "callflow"
SERVICE = "callflow"
MAX_CAMPAIGNS = 50
OTHER = "other"

# The names the code emits (the stack's alarms and dashboard may reference only these: a test parses both).
ANSWERS_SERVED = "AnswersServed"
ANSWER_FALLBACKS = "AnswerFallbacks"
SIGNATURE_REJECTIONS = "SignatureRejections"
STEP_INPUTS = "StepInputsRecorded"
CALLS_PLACED = "CallsPlaced"
CALLS_DEFERRED = "CallsDeferred"
CALLS_FAILED = "CallsFailed"
CALLS_UNKNOWN = "CallsUnknown"
CALLS_CANCELLED = "CallsCancelled"
ACHIEVED_CPS = "AchievedCPS"
PLIVO_LATENCY_P50 = "PlivoLatencyP50"
PLIVO_LATENCY_P99 = "PlivoLatencyP99"
PLIVO_AUTH_ERRORS = "PlivoAuthErrors"
LAUNCHER_ERRORS = "LauncherErrors"
HANGUP_OUTCOMES = "HangupOutcomes"
RESULTS = "Results"
EVENTS_DEFERRED = "EventsDeferred"

UNITS = {
    ACHIEVED_CPS: "Count/Second",
    PLIVO_LATENCY_P50: "Milliseconds",
    PLIVO_LATENCY_P99: "Milliseconds",
}

REASONS = frozenset(
    {
        "missing",
        "broken",
        "invalid-xml",
        "render-failed",
        "store-unavailable",
        "no-template",
        "error",
        "step-missing",
    }
)
ROUTES = frozenset({"answer", "hangup", "machine"})
OUTCOMES = frozenset({"completed", "busy", "no-answer", "timeout", "failed", "cancel", "machine", "missing"})
DIMENSION_VALUES = {"Reason": REASONS, "Route": ROUTES, "Outcome": OUTCOMES}


class Recorder:
    """Counts within one invocation; `flush` writes one EMF document per set of dimensions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plain: dict[str, float] = {}
        self._values: dict[str, float] = {}
        self._dimensioned: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._campaigns: set[str] = set()
        self._templates: dict[tuple[str, ...], str] = {}

    def bounded(self, name: str, value: str) -> str:
        if name == "Campaign":
            with self._lock:
                if value in self._campaigns or len(self._campaigns) < MAX_CAMPAIGNS:
                    self._campaigns.add(value)
                    return value
            return OTHER
        allowed = DIMENSION_VALUES.get(name)
        if allowed is None:
            raise ValueError(f"{name} is not a dimension callflow emits")
        return value if value in allowed else OTHER

    def count(self, metric: str, value: float = 1, **dimensions: str) -> None:
        """Add to `metric`; with dimensions, to the total (what the alarms watch) and to its breakdown."""
        if dimensions:
            dims = tuple(sorted((k, self.bounded(k, v)) for k, v in dimensions.items()))
            with self._lock:
                key = (metric, dims)
                self._dimensioned[key] = self._dimensioned.get(key, 0.0) + value
        with self._lock:
            self._plain[metric] = self._plain.get(metric, 0.0) + value

    def value(self, metric: str, value: float) -> None:
        with self._lock:
            self._values[metric] = value

    def _template(self, names: tuple[str, ...]) -> str:
        """The EMF line for this set of metric names (newline included), as a %-format of the timestamp and
        the values: built once per set, later invocations only fill it in (building Powertools' `Metrics` per
        invocation costs about 150 µs, several times a warm answer's own work).

        The document is the one Powertools' `Metrics.serialize_metric_set` writes for these names (a test
        holds them equal for every name callflow emits), written here rather than asked of Powertools: that
        would import Powertools on every cold start, whose first answer otherwise needs none of it."""
        template = self._templates.get(names)
        if template is None:
            document: dict[str, Any] = {
                "_aws": {
                    "Timestamp": "@@TS@@",
                    "CloudWatchMetrics": [
                        {
                            "Namespace": NAMESPACE,
                            "Dimensions": [["service"]],
                            "Metrics": [{"Name": name, "Unit": UNITS.get(name, "Count")} for name in names],
                        }
                    ],
                },
                "service": SERVICE,
            }
            for index, name in enumerate(names):
                document[name] = f"@@V{index}@@"
            template = json.dumps(document, separators=(",", ":")).replace("%", "%%")
            template = template.replace('"@@TS@@"', "%d")
            for index in range(len(names)):
                template = template.replace(f'"@@V{index}@@"', "[%r]")
            template += "\n"  # one write per document, newline included
            self._templates[names] = template
        return template

    def flush(self) -> None:
        with self._lock:
            plain, values, dimensioned = self._plain, self._values, self._dimensioned
            self._plain, self._values, self._dimensioned = {}, {}, {}
        if not (plain or values or dimensioned):
            return
        if plain or values:
            # the warm answer's case is one count and no values: no merged copy, no generator
            numbers = {**plain, **values} if values else plain
            names = tuple(sorted(numbers))
            sys.stdout.write(
                self._template(names)
                % (int(time.time() * 1000), *map(float, map(numbers.__getitem__, names)))
            )
        if not dimensioned:
            return
        from aws_lambda_powertools.metrics import single_metric

        for (name, dims), total in dimensioned.items():
            unit: Any = UNITS.get(name, "Count")
            with single_metric(name=name, unit=unit, value=total, namespace=NAMESPACE) as metric:
                metric.add_dimension(name="service", value=SERVICE)
                for key, value in dims:
                    metric.add_dimension(name=key, value=value)


recorder = Recorder()
count = recorder.count
value = recorder.value
flush = recorder.flush
