"""Pure parts: Plivo XML validation, routes.json, template context, rendering and `validate_template`.
No AWS here."""

from __future__ import annotations

import json
import pathlib
from urllib.parse import parse_qsl

import pytest
from defusedxml.ElementTree import fromstring
from hypothesis import given, settings
from hypothesis import strategies as st

from callflow_cli.templates import validate_template
from chalicelib.answer import plivo_xml, render
from chalicelib.answer import routes as routing
from chalicelib.answer.pipeline import answer as answer_for
from chalicelib.answer.store import StoreUnavailable, TemplateBroken, TemplateMissing
from chalicelib.handlers import parse_form
from chalicelib.settings import Settings

SAMPLES = pathlib.Path(__file__).resolve().parents[2] / "templates"


# ---------------------------------------------------------------- Plivo XML


@pytest.mark.parametrize(
    "document",
    [
        "<Response/>",
        '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Speak voice="MAN">Hi</Speak><Hangup/></Response>',
        "<Response><Speak>Hi <break time='1s'/><prosody rate='slow'><emphasis>you</emphasis></prosody></Speak>"  # noqa: E501
        "</Response>",
        "<Response><GetDigits action='https://x/y'><Speak>Press</Speak><Play>https://x/a.mp3</Play><Wait/>"
        "</GetDigits></Response>",
        "<Response><Dial><Number>14155551234</Number><User>sip:a@phone.plivo.com</User></Dial></Response>",
        "<Response><PreAnswer><Speak>x</Speak><GetDigits><Speak>y</Speak></GetDigits></PreAnswer></Response>",
        "<Response>\n  <Conference>room</Conference>\n  <Record/><Redirect>https://x</Redirect><DTMF>12</DTMF>"
        "<Message>m</Message><MultiPartyCall role='customer'>mpc</MultiPartyCall><Stream>wss://x</Stream><GetInput/></Response>",
    ],
)
def test_valid_plivo_xml(document):
    assert plivo_xml.problems(document) == []


@pytest.mark.parametrize(
    "document,fragment",
    [
        ("<Response><Speak>x</Speak>", "not well-formed"),
        ("<Speak>x</Speak>", "root element must be <Response>"),
        ("<response/>", "root element must be <Response>"),  # names are case-sensitive
        ("<Response><speak>x</speak></Response>", "<speak> is not a Plivo verb"),
        ("<Response><Dial><Speak>x</Speak></Dial></Response>", "<Speak> is not allowed inside <Dial>"),
        ("<Response><GetDigits><Dial/></GetDigits></Response>", "<Dial> is not allowed inside <GetDigits>"),
        ("<Response><Speak><Play/></Speak></Response>", "<Play> is not allowed inside <Speak>"),
        ("<Response><Number>1</Number></Response>", "<Number> is not a Plivo verb"),
        ("<Response><Hangup><Speak/></Hangup></Response>", "not allowed inside <Hangup>"),
        ("<Response>hello</Response>", "text is not allowed directly inside <Response>"),
        ('<!DOCTYPE Response [<!ENTITY x "y">]><Response/>', "DTDs and entity declarations"),
        (
            '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><Response>&lol2;</Response>',
            "DTD",
        ),
        ("<Response>" + "<Wait/>" * 20000 + "</Response>", "over Plivo's limit"),
        ("", "not well-formed"),
        ("<x:Response xmlns:x='urn:x'/>", "root element"),
    ],
)
def test_invalid_plivo_xml(document, fragment):
    found = plivo_xml.problems(document)
    assert found and fragment in found[0], found
    assert plivo_xml.first_problem(document) == found[0]


def test_problem_lines_are_reported():
    found = plivo_xml.problems("<Response>\n<Speak/>\n<Bad/>\n</Response>")
    assert found == ["line 3: <Bad> is not a Plivo verb"]


def test_size_limit_counts_bytes_not_characters():
    speak = "<Response><Speak>" + "é" * 52_000 + "</Speak></Response>"  # ~104 KB in UTF-8
    assert len(speak) < plivo_xml.MAX_BYTES < len(speak.encode())
    assert "over Plivo's limit" in plivo_xml.first_problem(speak)


# ---------------------------------------------------------------- routes.json


def test_spec_example_routes():
    routes = routing.parse_routes(
        json.dumps(
            {
                "default": "Welcome",
                "rules": [
                    {"when": {"Campaign": "Spring"}, "template": "Promo"},
                    {"when": {"Lang": "es", "Tier": "Gold"}, "template": "GoldEs"},
                ],
            }
        )
    )
    headers = render.answer_context({"X-PH-lang": "es", "X-PH-TIER": "Gold"})["headers"]
    assert routes.choose(headers) == "GoldEs"
    assert routes.choose(render.answer_context({"X-PH-Lang": "es"})["headers"]) == "Welcome"
    assert routing.EMPTY_ROUTES.choose({}) is None


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("{", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"default": "../x"}', "default"),
        ('{"rules": {}}', "must be a list"),
        ('{"rules": [{"when": {"A": "b"}}]}', "exactly"),
        ('{"rules": [{"when": {"A": "b"}, "template": "x.xml"}]}', "not a template name"),
        ('{"rules": [{"when": {"A b": "c"}, "template": "X"}]}', "letters and digits"),
        ('{"rules": [{"when": {"A": 1}, "template": "X"}]}', "must be a string"),
        ('{"rules": [{"when": [], "template": "X"}]}', "must be an object"),
        ('{"default": "A", "extra": 1}', "unknown key"),
    ],
)
def test_bad_routes(text, fragment):
    with pytest.raises(routing.RoutesError, match=fragment):
        routing.parse_routes(text)


def test_sample_routes_and_templates_are_valid():
    routes = routing.parse_routes((SAMPLES / "routes.json").read_text())
    names = {p.stem for p in SAMPLES.glob("*.xml")}
    assert len(names) >= 4
    assert {routes.default, *(rule.template for rule in routes.rules)} <= names
    for path in SAMPLES.glob("*.xml"):
        assert validate_template(path.stem, path.read_text()) == [], path.name


# ---------------------------------------------------------------- context and rendering


def test_context_splits_headers_call_and_sip():
    params = {
        "X-PH-CustomerId": "42",
        "x-ph-lang": "es",
        "SIP-H-To": "<sip:a@b>",
        "From": "1",
        "CallUUID": "u",
    }
    context = render.answer_context(params)
    assert context["headers"]["customerid"] == "42" and context["headers"]["CustomerId"] == "42"
    assert dict(context["headers"]) == {"CustomerId": "42", "lang": "es"}
    assert context["sip"]["to"] == "<sip:a@b>"
    assert context["call"] == params


def test_missing_variables_render_empty():
    source = (
        "<Response><Speak>[{{ headers.Nope }}|{{ call.Nope.deeper }}|{{ sip.X }}|{{ nothing }}]"
        "</Speak></Response>"
    )
    out = render.render(render.compile_template(source), render.answer_context({}))
    assert out == "<Response><Speak>[|||]</Speak></Response>"


def test_sandbox_blocks_mutation_and_internals():
    context = render.answer_context({"From": "1"})
    for source in ("{{ call.update({'From': '2'}) }}", "{{ ''.__class__.__mro__[1].__subclasses__() }}"):
        with pytest.raises(render.TemplateError, match="SecurityError"):
            render.render(render.compile_template(source), context)


def test_render_stops_early_when_output_is_too_big():
    template = render.compile_template(
        "{% for i in range(99999) %}{% for j in range(99999) %}xxxxxxxx{% endfor %}{% endfor %}"
    )
    with pytest.raises(render.TemplateError, match="over"):
        render.render(template, {})


@pytest.mark.parametrize(
    "value",
    [
        "</Speak><Dial><Number>1900</Number></Dial><Speak>",
        "&",
        "'",
        '"',
        "]]>",
        "<!--",
        "&#x26;",
        "\x01\x0b\ufffe",
    ],
)
def test_values_are_escaped_in_text_and_attributes(value):
    source = (  # free-text attributes: the attribute check leaves their values alone
        '<Response><Speak language="{{ call.CallerName }}">{{ call.From }}</Speak>'
        "<Message src='{{ headers.Loop }}'>https://x/{{ sip.A }}</Message></Response>"
    )
    out = render.render(
        render.compile_template(source),
        render.answer_context({"CallerName": value, "From": value, "X-PH-Loop": value, "SIP-H-A": value}),
    )
    assert plivo_xml.problems(out) == []
    root = fromstring(out)
    assert [el.tag for el in root] == ["Speak", "Message"]
    clean = "".join(c for c in value if c not in "\x01\x0b\ufffe")
    assert (root[0].text or "") == clean and root[0].get("language") == clean
    assert root[1].get("src") == clean and root[1].text == "https://x/" + clean


# ---------------------------------------------------------------- validate_template (CLI)


def test_validate_template_reports_lines():
    source = "<Response>\n<Speak>{{ customer }}</Speak>\n<Dial>{{ headers.To }}</Dial>\n</Response>"
    problems = validate_template("Reminder", source)
    assert problems[0] == "line 2: undefined variable 'customer' (use headers., call. or sip.)"
    assert problems[1].startswith("line 3: text is not allowed directly inside <Dial>")


@pytest.mark.parametrize(
    "name,source,fragment",
    [
        ("bad-name", "<Response/>", "template name"),
        ("Ok", "<Response>{% if %}</Response>", "line 1:"),
        ("Ok", b"<Response>\xff</Response>", "not UTF-8"),
        ("Ok", "<Response>" + " " * 110_000 + "</Response>", "over"),
        ("Ok", "<Response><Speak>{{ 1 / 0 }}</Speak></Response>", "ZeroDivisionError"),
        ("Ok", "<Response><Speak>x</Speak><Oops/></Response>", "<Oops> is not a Plivo verb"),
    ],
)
def test_validate_template_problems(name, source, fragment):
    problems = validate_template(name, source)
    assert any(fragment in p for p in problems), problems
    assert all(p.startswith("line ") for p in problems)


@pytest.mark.parametrize("name", ["A", "Reminder", "x" * 64, "a1B2"])
def test_template_names(name):
    assert routing.TEMPLATE_NAME_RE.match(name) and routing.is_template_name(name)


@pytest.mark.parametrize("name", ["", "x" * 65, "a-b", "a.xml", "../a", "a/b", "é", "a\n", None, 5])
def test_not_template_names(name):
    assert not routing.is_template_name(name)


# ---------------------------------------------------------------- pipeline with an in-memory store


class DictStore:
    """A stand-in store over plain dicts: the pipeline's contract with any store, no S3 needed."""

    def __init__(self, sources: dict[str, str], routes: str | None = None, down: bool = False) -> None:
        self.sources, self.routes_text, self.down = sources, routes, down

    def template(self, name):
        if self.down:
            raise StoreUnavailable("down")
        if name not in self.sources:
            raise TemplateMissing(name)
        try:
            return render.compile_template(self.sources[name])
        except render.TemplateError as exc:
            raise TemplateBroken(str(exc)) from None

    def routes(self):
        if self.down:
            raise StoreUnavailable("down")
        return routing.parse_routes(self.routes_text) if self.routes_text else routing.EMPTY_ROUTES


SOURCES = {name: f"<Response><Speak>{name}</Speak></Response>" for name in ("One", "Two", "Three", "Dflt")}
ROUTES = json.dumps({"default": "Three", "rules": [{"when": {"Pick": "two"}, "template": "Two"}]})


@pytest.mark.parametrize(
    "params,routes,default,expected",
    [
        ({"X-PH-Template": "One", "X-PH-Pick": "two"}, ROUTES, "Dflt", "One"),  # 1: header
        ({"X-PH-Template": "Zzz", "X-PH-Pick": "two"}, ROUTES, "Dflt", "Two"),  # unknown name -> 2: rule
        ({"X-PH-Pick": "two"}, ROUTES, "Dflt", "Two"),  # 2: rule
        ({"X-PH-Pick": "Two"}, ROUTES, "Dflt", "Three"),  # 3: routes default
        ({}, json.dumps({"rules": []}), "Dflt", "Dflt"),  # 4: DEFAULT_TEMPLATE
        ({}, None, None, "We are sorry"),  # 5: built-in
        ({"X-PH-Template": "One"}, "{broken", "Dflt", "One"),  # header wins over bad routes
        ({}, "{broken", "Dflt", "Dflt"),  # bad routes -> fallback
    ],
)
def test_selection_order(params, routes, default, expected):
    xml = answer_for(DictStore(SOURCES, routes), Settings(default_template=default), params).xml
    assert plivo_xml.problems(xml) == []
    assert expected in xml


def test_store_down_gives_builtin():
    xml = answer_for(DictStore(SOURCES, ROUTES, down=True), Settings(default_template="Dflt"), {}).xml
    assert "We are sorry" in xml and [el.tag for el in fromstring(xml)] == ["Speak", "Hangup"]


def test_broken_default_template_gives_builtin():
    store = DictStore({"Bad": "<Response><Nope/></Response>"}, json.dumps({"default": "Bad"}))
    assert "We are sorry" in answer_for(store, Settings(default_template="Bad"), {}).xml


# ---------------------------------------------------------------- form parsing


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from("ab=&%+2Fzé;# "), max_size=24) | st.text(max_size=24))
def test_parse_form_agrees_with_parse_qsl(text):
    expected: dict[str, list[str]] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        expected.setdefault(key, []).append(value)
    assert parse_form(text) == expected


# ---------------------------------------------------------------- the render budget (issue 10 #10)

HUGE = "200000000"  # 200M characters would kill a 256 MB Lambda
ALLOCATING = {
    "repeat": '{{ "a" * (headers.N|int) }}',
    "repeat-list": "{{ [1] * (headers.N|int) }}",
    "power": "{{ 7 ** (headers.N|int) }}",
    "center": '{{ "a"|center(headers.N|int) }}',
    "indent": '{{ "a\nb"|indent(headers.N|int, true) }}',
    "wordwrap": '{{ ("ab " * 30000)|wordwrap(1, true, "x" * 100000) }}',
    "format-width": '{{ "%*d"|format(headers.N|int, 1) }}',
    "format-literal-width": '{{ "%0999999999d"|format(1) }}',
    "percent": '{{ "%0999999999d" % 1 }}',
    "str-format": '{{ "{:>999999999}".format(1) }}',
    "str-format-nested": '{{ "{:>{}}".format(1, headers.N|int) }}',
    "str-center": '{{ "a".center(headers.N|int) }}',
    "str-zfill": '{{ "1".zfill(headers.N|int) }}',
    "replace-empty": '{{ ("x" * 100000)|replace("", "y" * 100000) }}',
    "batch-fill": '{{ [1]|batch(headers.N|int, "x")|list }}',
    "truncate": '{{ "a"|truncate(headers.N|int, end="x" * 100000 * 2) }}',
    "concat-chain": '{% set a = "x" * 100000 %}{{ a ~ a ~ a ~ a }}',
    "plus-chain": '{% set a = "x" * 100000 %}{{ a + a + a + a }}',
    "list-repr": '{% set a = "x" * 100000 %}{{ [a, a, a, a] }}',
    "namespace-doubling": '{% set ns = namespace(s="a") %}{% for i in range(60) %}'
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
    "macro-doubling": "{% macro f(s, n) %}{{ f(s ~ s, n - 1) if n else s|length }}{% endmacro %}"
    "{{ f('a', 60) }}",
}


@pytest.mark.parametrize("name", sorted(ALLOCATING))
def test_a_template_cannot_let_a_number_choose_the_allocation(name):
    """Regression: `{{ "a" * (headers.N|int) }}` allocated whatever the caller's header said."""
    import time
    import tracemalloc

    context = render.answer_context({"X-PH-N": HUGE})
    tracemalloc.start()
    started = time.monotonic()
    try:  # compiling is measured too: Jinja folds constant expressions when it compiles
        template = render.compile_template("<Response><Speak>" + ALLOCATING[name] + "</Speak></Response>")
        with pytest.raises(render.TemplateError, match="over|too large|format width|budget"):
            render.render(template, context)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 1.5
    assert peak < 8 * 1024 * 1024, peak  # a few copies of a 100 KB value at most


LOOPING = {
    "nested-ranges": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "nested-strings": '{% set s = "x" * 50000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}',
    "nested-with-output": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}.{% endfor %}",
    "macro-calls": "{% macro f() %}{% endmacro %}{% for i in range(100000) %}{% for j in range(100000) %}"
    "{{ f() }}{% endfor %}{% endfor %}",
    "attribute-lookups": "{% for i in range(100000) %}{% for j in range(100000) %}{{ headers.x }}{% endfor %}"
    "{% endfor %}",
}


@pytest.mark.parametrize("name", sorted(LOOPING))
def test_a_template_stops_within_its_time_budget(name):
    """Regression: nested loops ran to the Lambda's 15 s timeout."""
    import time

    template = render.compile_template("<Response><Speak>" + LOOPING[name] + "</Speak></Response>")
    started = time.monotonic()
    with pytest.raises(render.TemplateError, match="time budget|over"):
        render.render(template, render.answer_context({}), seconds=0.2)
    assert time.monotonic() - started < 1.0


def test_the_default_time_budget_is_fixed_and_short():
    assert 0 < render.MAX_RENDER_SECONDS <= 2.0


@pytest.mark.parametrize(
    "source,expected",
    [
        (
            '{{ "ab" * 3 }}|{{ 2 ** 10 }}|{{ "x"|center(5) }}|{{ "%05d"|format(42) }}',
            "ababab|1024|  x  |00042",
        ),
        (
            "{% for i in range(3) %}{{ i }}{% endfor %}|{{ range(4)|length }}|{{ 3 in range(5) }}",
            "012|4|True",
        ),
        ('{{ "a" ~ "b" ~ 1 }}|{{ [1, 2] + [3] }}|{{ "{:>4}".format(7) }}', "ab1|[1, 2, 3]|   7"),
        (
            '{{ "a b c"|wordwrap(2) }}|{{ "ab"|replace("a", "xy") }}|{{ "x\ny"|indent(2) }}',
            "a\nb\nc|xyb|x\n  y",
        ),
    ],
)
def test_the_budget_leaves_ordinary_templates_alone(source, expected):
    assert render.render(render.compile_template(source), render.answer_context({})) == expected


def test_an_over_budget_template_falls_back_with_one_error(caplog):
    import logging

    store = DictStore({"Big": '<Response><Speak>{{ "a" * (headers.N|int) }}</Speak></Response>'}, None)
    caplog.set_level(logging.INFO, logger="callflow")
    xml = answer_for(store, Settings(), {"X-PH-Template": "Big", "X-PH-N": HUGE, "CallUUID": "cu-big"}).xml
    assert "We are sorry" in xml
    [error] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert error.levelno == logging.ERROR and error.call_uuid == "cu-big" and "Big" in error.cause
