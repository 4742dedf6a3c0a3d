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


def _powertools_template(names: tuple[str, ...]) -> str:
    """What Powertools' Metrics writes for these names, turned into the recorder's %-format (the recorder
    writes the same document without asking Powertools, so a cold start does not import it)."""
    from aws_lambda_powertools.metrics import Metrics

    built = Metrics(namespace=metrics.NAMESPACE, service=metrics.SERVICE)
    for name in names:
        built.add_metric(name=name, unit=metrics.UNITS.get(name, "Count"), value=0)
    document = dict(built.serialize_metric_set())
    built.clear_metrics()
    document["_aws"] = {**document["_aws"], "Timestamp": "@@TS@@"}
    for index, name in enumerate(names):
        document[name] = f"@@V{index}@@"
    template = json.dumps(document, separators=(",", ":")).replace("%", "%%").replace('"@@TS@@"', "%d")
    for index in range(len(names)):
        template = template.replace(f'"@@V{index}@@"', "[%r]")
    return template + "\n"  # one write per document


def test_the_emf_lines_are_the_ones_powertools_writes():
    emitted = sorted(
        value
        for key, value in vars(metrics).items()
        if key.isupper() and isinstance(value, str) and value not in (metrics.NAMESPACE, metrics.OTHER)
    )
    assert metrics.ANSWERS_SERVED in emitted and metrics.ACHIEVED_CPS in emitted
    sets = [(name,) for name in emitted] + [tuple(emitted)]
    sets += [tuple(sorted(pair)) for pair in zip(emitted, emitted[1:], strict=False)]
    for names in sets:
        assert metrics.Recorder()._template(names) == _powertools_template(names), names
