"""Metrics are CloudWatch EMF lines on stdout, one document per set of dimensions, with bounded dimensions."""

from __future__ import annotations

import json

from chalicelib import metrics


def emf(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]


def test_counts_values_and_dimensions_flush_once(capsys):
    metrics.count(metrics.ANSWERS_SERVED)
    metrics.count(metrics.ANSWERS_SERVED)
    metrics.value(metrics.ACHIEVED_CPS, 9.8)
    metrics.count(metrics.ANSWER_FALLBACKS, Reason="missing")
    metrics.flush()
    docs = emf(capsys.readouterr().out)
    plain = next(d for d in docs if metrics.ANSWERS_SERVED in d)
    assert (
        plain[metrics.ANSWERS_SERVED] in (2, 2.0, [2.0])
        and plain["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "callflow"
    )
    units = {m["Name"]: m["Unit"] for m in plain["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert units[metrics.ACHIEVED_CPS] == "Count/Second"
    assert plain[metrics.ANSWER_FALLBACKS] == [1.0]  # the total the alarm watches
    fallback = next(d for d in docs if metrics.ANSWER_FALLBACKS in d and "Reason" in d)
    assert (
        fallback["Reason"] == "missing"
        and ["service", "Reason"] in fallback["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
    )
    metrics.flush()
    assert emf(capsys.readouterr().out) == []  # nothing twice


def test_dimension_values_stay_bounded(capsys):
    for i in range(500):
        metrics.count(metrics.ANSWER_FALLBACKS, Reason=f"made-up-{i}")
        metrics.count(metrics.RESULTS, Campaign=f"campaign-{i}")
    metrics.flush()
    docs = emf(capsys.readouterr().out)
    reasons = {d["Reason"] for d in docs if "Reason" in d}
    campaigns = {d["Campaign"] for d in docs if "Campaign" in d}
    assert reasons == {"other"}
    assert len(campaigns) <= metrics.MAX_CAMPAIGNS + 1 and "other" in campaigns
