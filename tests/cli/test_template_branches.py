"""`validate_template` renders every branch a template's comparisons select (pure: no AWS).

The property: random branch-heavy templates that `templates check` says are OK never fall back at call time
for any of the values their comparisons name (nor with none), checked against a runtime-like context built
with the runtime's own `answer_context` and step rules."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callflow_cli import branches
from callflow_cli.templates import validate_template
from chalicelib.answer import plivo_xml
from chalicelib.answer.render import TemplateError, answer_context, compile_template, render
from chalicelib.answer.steps import StepEffects, step_url

# variable → (how the template compares it, where a call carries it)
VARIABLES = {
    "digits": ('call.Digits == "{}"', ("call", "Digits")),
    "lang": ('headers.Lang == "{}"', ("call", "X-PH-Lang")),
    "speech": ('"{}" in (call.Speech or "")|lower', ("call", "Speech")),
    "tier": ('job.data.Tier in ["{}", "platinum"]', ("job", "Tier")),
}
CONSTANTS = {"digits": "123", "lang": ("fr", "es", "de"), "speech": ("yes", "no"), "tier": ("gold", "silver")}
VALID = [
    "<Speak>Hello {{ headers.Name }}.</Speak>",
    '<Wait length="2"/>',
    "<Hangup/>",
    "<Redirect>{{ url('Next', n=1) }}</Redirect>",
    "{{ result('confirmed') }}<Speak>Thanks.</Speak>",
    '<GetDigits action="{{ url(step) }}" numDigits="1"><Speak>Press.</Speak></GetDigits>',
    "",
]
INVALID = [
    "<Bogus/>",
    '<Wait length="soon"/>',
    "<Speak>unclosed",
    '<Hangup reason="nope"/>',
    "stray text",
    "{{ result('Not OK') }}",
    '<Play loop="{{ call.Digits }}x">u</Play>',
]


@st.composite
def templates(draw: Any) -> tuple[str, dict[str, list[str]]]:
    chosen = draw(st.lists(st.sampled_from(sorted(VARIABLES)), min_size=1, max_size=3, unique=True))
    used: dict[str, list[str]] = {}

    def leaf() -> str:
        return draw(
            st.sampled_from(VALID + INVALID) if draw(st.integers(0, 5)) == 0 else st.sampled_from(VALID)
        )

    def block(depth: int) -> str:
        if depth >= 3 or draw(st.integers(0, 3)) == 0:
            return leaf()
        parts = []
        for i in range(draw(st.integers(1, 3))):
            variable = draw(st.sampled_from(chosen))
            constant = draw(st.sampled_from(CONSTANTS[variable]))
            used.setdefault(variable, [])
            if constant not in used[variable]:
                used[variable].append(constant)
            test = VARIABLES[variable][0].format(constant)
            parts.append(f"{{% {'if' if i == 0 else 'elif'} {test} %}}{block(depth + 1)}\n")
        if draw(st.booleans()):
            parts.append(f"{{% else %}}{block(depth + 1)}\n")
        return "".join(parts) + "{% endif %}" + leaf()

    body = "\n".join(block(0) for _ in range(draw(st.integers(1, 2))))
    return f"<Response>\n{body}\n</Response>\n", used


def runtime_context(step: str, values: dict[str, str | None]) -> dict[str, Any]:
    """What the answer route gives a template: Plivo's parameters, the job (if any), the functions."""
    params = dict(branches.PLIVO_BASICS)
    job: dict[str, Any] | None = None
    for variable, value in values.items():
        where, key = VARIABLES[variable][1]
        if value is None:
            continue
        if where == "call":
            params[key] = value
        else:
            job = {"call_id": "c1", "attempts": 1, "data": {key: value}}
    ctx = answer_context(params)
    effects = StepEffects()
    ctx.update(
        step=step,
        url=lambda target, **query: step_url("https://x.example/answer", target, "c1", query),
        result=effects.set_result,
        optout=effects.set_opt_out,
    )
    if job is not None:
        ctx["job"] = job
    return ctx


def call_time_failures(source: str, used: dict[str, list[str]]) -> list[str]:
    template = compile_template(source)
    names = sorted(used)
    failures = []
    for values in itertools.product(*([None, *used[name]] for name in names)):
        chosen = dict(zip(names, values, strict=True))
        try:
            xml = render(template, runtime_context("Step", chosen))
        except TemplateError as exc:
            failures.append(f"{chosen}: {exc}")
            continue
        problem = plivo_xml.first_problem(xml)
        if problem:
            failures.append(f"{chosen}: {problem}")
    return failures


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(templates())
def test_check_ok_means_no_fallback_for_any_compared_value(generated):
    source, used = generated
    problems = validate_template("Step", source)
    failures = call_time_failures(source, used)
    if not problems:
        assert failures == [], (source, failures)
    if failures:
        assert problems, (source, failures)
        assert all(p.startswith("line ") for p in problems), problems


def test_every_branch_is_rendered():
    source = """<Response>
{% if call.Digits == "1" %}<Speak>one</Speak>
{% elif call.Digits == "2" %}{% if headers.Lang == "fr" %}<Bogus/>{% endif %}
{% elif job.data.Tier in ["gold"] %}<Wait length="x"/>
{% endif %}
</Response>"""
    problems = validate_template("Step", source)
    assert problems == [
        "line 3: <Bogus> is not a Plivo verb (in the XML rendered with call.Digits='2', headers.Lang='fr')",
        'line 4: <Wait> length="x" is not valid: expected a whole number of at least 1 '
        "(in the XML rendered with job.data.Tier='gold')",
    ], problems


def test_the_v1_check_still_sees_only_the_placeholder_branch_as_before():
    # Without comparisons there is nothing to vary: one rendering with placeholders, one with no values.
    assert validate_template("A", "<Response><Speak>{{ headers.Name }}</Speak></Response>") == []


def test_no_job_is_a_case_of_its_own():
    # A step for an unknown call_id has no job: `job.attempts > 1` cannot be compared, the call falls back.
    source = "<Response>{% if job.attempts > 1 %}<Hangup/>{% endif %}</Response>"
    problems = validate_template("A", source)
    assert len(problems) == 1 and "no job" in problems[0], problems
    guarded = "<Response>{% if job and job.attempts > 1 %}<Hangup/>{% endif %}</Response>"
    assert validate_template("A", guarded) == []


@pytest.mark.parametrize(
    "source,fragment",
    [
        ("<Response>{{ result('Bad Label') }}</Response>", "line 1: result(): label 'Bad Label'"),
        (
            "<Response>\n{% if false %}{{ result('x' * 2) }}{{ url('not a name!') }}{% endif %}</Response>",
            "line 2: url()",
        ),
        ("<Response><Redirect>{{ url('A', step=1) }}</Redirect></Response>", "not step or call_id"),
    ],
)
def test_bad_literals_are_errors_with_their_line(source, fragment):
    problems = validate_template("A", source)
    assert any(p.startswith("line ") and fragment in p for p in problems), problems


def test_step_names_and_functions_are_known():
    source = (
        "<Response><Redirect>{{ url(step, n=job.attempts) }}</Redirect>{{ result('ok') }}{{ optout() }}"
        "<Speak>{{ job.data.Name }} {{ job.campaign }} {{ job.result }}</Speak></Response>"
    )
    assert validate_template("A", source) == []


def test_url_targets_are_followed_when_names_are_given():
    source = "<Response>\n<Redirect>{{ url('B') }}</Redirect><Redirect>{{ url(step) }}</Redirect></Response>"
    assert validate_template("A", source, templates={"A", "B"}) == []
    assert validate_template("A", source, templates={"A"}) == ["line 2: url('B') names no template"]
    assert validate_template("A", source) == []


def test_many_combinations_are_sampled_and_said():
    tests = "".join(
        f'{{% if headers.H{i} == "a" or headers.H{i} == "b" %}}<Hangup/>{{% endif %}}' for i in range(6)
    )
    notes: list[str] = []
    assert validate_template("A", f"<Response>{tests}</Response>", notes=notes) == []
    assert notes and "rendered" in notes[0], notes
    bad = tests + '{% if headers.H5 == "b" %}<Bogus/>{% endif %}'
    assert any("<Bogus>" in p for p in validate_template("A", f"<Response>{bad}</Response>"))
