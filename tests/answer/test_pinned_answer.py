"""Pinned behaviour of the answer wing's pure modules: Plivo XML checking (PLIVO.md "Plivo XML", 100 KB),
the template context and rendering (SPEC "The template store"), and routes.json. Exact values, so a changed
comparison, bound or flag fails a test (see `make mutation`)."""

from __future__ import annotations

import pytest

from chalicelib.answer import plivo_xml, render
from chalicelib.answer import routes as routing


@pytest.fixture(autouse=True)
def fresh_environment(monkeypatch):
    """Each test builds the shared sandbox anew, so what `environment()` configures is what is tested
    (not an environment left by an earlier test or process)."""
    monkeypatch.setattr(render, "_env", None)


# --- Plivo XML -------------------------------------------------------------------------------------


def sized(total: int) -> str:
    """A valid document of exactly `total` bytes."""
    head, tail = "<Response><Speak>", "</Speak></Response>"
    return head + "a" * (total - len(head) - len(tail)) + tail


def test_a_document_of_exactly_100_kb_is_valid():
    assert len(sized(100 * 1024).encode()) == 102_400
    assert plivo_xml.problems(sized(102_400)) == []
    assert plivo_xml.first_problem(sized(102_400)) is None


def test_one_byte_over_100_kb_is_refused_with_its_size():
    assert plivo_xml.problems(sized(102_401)) == [
        "line 1: document is 102401 bytes, over Plivo's limit of 102400"
    ]
    assert plivo_xml.problems(sized(102_401).encode()) == plivo_xml.problems(sized(102_401))


def test_a_bare_doctype_is_refused():
    assert plivo_xml.problems("<!DOCTYPE Response><Response/>") == [
        "line 1: DTDs and entity declarations are not allowed (DTDForbidden)"
    ]


def test_a_doctype_reports_its_line():
    assert plivo_xml.problems('<?xml version="1.0"?>\n<!DOCTYPE Response>\n<Response/>') == [
        "line 2: DTDs and entity declarations are not allowed (DTDForbidden)"
    ]


@pytest.mark.parametrize("document", ['<?xml version="1.0" encoding="klingon"?><Response/>'])
def test_an_unknown_xml_encoding_is_unreadable_not_an_exception(document):
    expected = ["line 1: unreadable XML (unknown encoding: klingon)"]
    assert plivo_xml.problems(document) == expected
    assert plivo_xml.problems(document.encode()) == expected
    assert plivo_xml.first_problem(document) == expected[0]


def test_declared_latin1_bytes_are_read_as_latin1():
    document = '<?xml version="1.0" encoding="ISO-8859-1"?><Response><Speak>caf\xe9</Speak></Response>'
    assert plivo_xml.problems(document.encode("latin-1")) == []


def test_not_well_formed_reports_expat_line_and_reason():
    assert plivo_xml.problems("") == ["line 1: not well-formed XML (no element found)"]
    assert plivo_xml.problems("<Response>\n<Speak>\n</Response>") == [
        "line 3: not well-formed XML (mismatched tag)"
    ]


def test_every_problem_is_listed_and_first_problem_is_the_first():
    document = "<Response>\n<Bad/>\n<Dial><Play/></Dial>\nhello\n</Response>"
    assert plivo_xml.problems(document) == [
        "line 2: <Bad> is not a Plivo verb",
        "line 3: <Play> is not allowed inside <Dial>",
        "line 5: text is not allowed directly inside <Response>",  # expat reports text where it ends
    ]
    assert plivo_xml.problems(document, first_only=True) == ["line 2: <Bad> is not a Plivo verb"]
    assert plivo_xml.first_problem(document) == "line 2: <Bad> is not a Plivo verb"


def test_the_root_must_be_response_and_is_checked_once():
    assert plivo_xml.problems("<Speak>x</Speak>") == ["line 1: root element must be <Response>, not <Speak>"]
    # a namespaced root is reported by its local name
    assert plivo_xml.problems("<x:Response xmlns:x='urn:x'/>") == [
        "line 1: root element must be <Response>, not <Response>"
    ]


def test_namespaced_children_are_named_by_local_name():
    assert plivo_xml.problems("<Response xmlns:p='urn:p'><p:Speak/></Response>") == [
        "line 1: <Speak> is not a Plivo verb"
    ]


def test_text_rules():
    assert plivo_xml.problems("<Response>\n  <Speak>hi</Speak>\n</Response>") == []
    assert plivo_xml.problems("<Response><GetDigits>x</GetDigits></Response>") == [
        "line 1: text is not allowed directly inside <GetDigits>"
    ]
    assert plivo_xml.problems("<Response><Speak>a<s>b</s><w>c</w></Speak><Hangup/></Response>") == []


def test_nesting_rules():
    assert plivo_xml.problems("<Response><Hangup><Speak/></Hangup></Response>") == [
        "line 1: <Speak> is not allowed inside <Hangup>"
    ]
    assert plivo_xml.problems("<Response><PreAnswer><Dial/></PreAnswer></Response>") == [
        "line 1: <Dial> is not allowed inside <PreAnswer>"
    ]
    assert plivo_xml.problems("<Response><Speak><s><p/></s></Speak></Response>") == []
    assert plivo_xml.problems("<Response><Wait/><Speak/></Response>") == []


def test_a_document_after_its_root_closes_is_not_valid():
    assert plivo_xml.problems("<Response/><Response/>") == [
        "line 1: not well-formed XML (junk after document element)"
    ]


def test_name_strips_a_namespace():
    assert plivo_xml._name("urn:x}Speak") == "Speak"
    assert plivo_xml._name("a}b}Speak") == "Speak"
    assert plivo_xml._name("Speak") == "Speak"


def test_str_and_bytes_agree():
    document = "<Response><Speak>\u00e9\u20ac</Speak></Response>"
    assert plivo_xml.problems(document) == plivo_xml.problems(document.encode("utf-8")) == []


# --- the template context --------------------------------------------------------------------------


def test_case_insensitive_mapping():
    m = render.CaseInsensitive({"CustomerId": "C1", "lang": "es"})
    assert m["CustomerId"] == "C1" and m["customerid"] == "C1" and m["CUSTOMERID"] == "C1"
    assert m["LANG"] == "es"
    assert "customerID" in m and "Lang" in m and "other" not in m and 5 not in m
    assert list(m) == ["CustomerId", "lang"] and len(m) == 2
    assert repr(m) == "CaseInsensitive({'CustomerId': 'C1', 'lang': 'es'})"
    assert m.get("nope") is None
    with pytest.raises(KeyError):
        m["nope"]


def test_exact_name_wins_over_case_folding():
    m = render.CaseInsensitive({"ab": "1", "AB": "2"})
    assert m["ab"] == "1" and m["AB"] == "2"


def test_answer_context_splits_the_parameters():
    params = {
        "X-PH-Template": "Promo",
        "x-ph-lang": "es",
        "X-Ph-Tier": "Gold",
        "SIP-H-To": "<sip:a@b>",
        "sip-h-From": "c",
        "From": "1415",
        "X-PH-": "empty name",
        "Xylophone": "x",
        "Sipx-h-A": "no",
        "S": "short",
    }
    context = render.answer_context(params)
    assert dict(context["headers"]) == {"Template": "Promo", "lang": "es", "Tier": "Gold"}
    assert dict(context["sip"]) == {"To": "<sip:a@b>", "From": "c"}
    assert context["call"] == params and context["call"] is not params
    assert context["headers"]["LANG"] == "es" and context["sip"]["to"] == "<sip:a@b>"
    assert set(context) == {"headers", "call", "sip"}


def test_context_of_no_parameters():
    context = render.answer_context({})
    assert dict(context["headers"]) == {} and dict(context["sip"]) == {} and context["call"] == {}


# --- rendering -------------------------------------------------------------------------------------


def rendered(source: str, params: dict | None = None, **kw) -> str:
    return render.render(render.compile_template(source), render.answer_context(params or {}), **kw)


def test_values_are_escaped_and_characters_xml_cannot_carry_are_removed():
    out = rendered("<Speak>{{ headers.N }}</Speak>", {"X-PH-N": 'a<b>&"\x00\x0b\ud800\ufffe\t\n\r'})
    assert out == "<Speak>a&lt;b&gt;&amp;&#34;\t\n\r</Speak>"


def test_missing_values_render_empty_even_chained():
    assert rendered("[{{ headers.Nope }}|{{ headers.a.b.c }}|{{ call.X }}|{{ sip.Y }}]") == "[|||]"


def test_none_renders_empty_and_numbers_as_text():
    assert rendered("[{{ n }}|{{ 5 }}|{{ 1.5 }}]", {}) == "[|5|1.5]"
    assert render._finalize(None) == ""
    assert render._finalize(5) == 5
    assert render._finalize("a\x00b") == "ab"


def test_exactly_the_characters_xml_1_0_cannot_carry_are_removed():
    """Every code point: kept if and only if XML 1.0's Char production allows it (the pattern is spelled
    as the forbidden set, for its compile time, so a wrong bound there must fail here)."""

    def allowed(code: int) -> bool:
        return (
            code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or code >= 0x10000
        )

    every = "".join(map(chr, range(0x110000)))
    assert render._finalize(every) == "".join(c for c in every if allowed(ord(c)))


def test_block_whitespace_is_trimmed_and_the_trailing_newline_kept():
    source = "<Response>\n  {% if true %}\n  <Hangup/>\n  {% endif %}\n</Response>\n"
    assert rendered(source) == "<Response>\n  <Hangup/>\n</Response>\n"


def test_the_environment_is_shared_and_sandboxed():
    assert render.environment() is render.environment()
    env = render.environment()
    assert env.autoescape is True
    assert env.keep_trailing_newline and env.trim_blocks and env.lstrip_blocks
    with pytest.raises(render.TemplateError):
        rendered("{{ call.update({'a': 1}) }}")
    assert rendered("{{ ''.__class__.__mro__ }}") == ""  # internals read as undefined, never leak


def test_syntax_errors_name_their_line():
    with pytest.raises(render.TemplateError) as caught:
        render.compile_template("<Response>\n{% if %}\n</Response>")
    assert str(caught.value) == "line 2: Expected an expression, got 'end of statement block'"


def test_non_text_sources_are_template_errors():
    with pytest.raises(render.TemplateError) as caught:
        render.compile_template(None)
    assert str(caught.value).startswith("line 1: cannot compile: ")


def test_render_errors_name_the_template_line_and_the_exception():
    with pytest.raises(render.TemplateError) as caught:
        rendered("<Response>\n\n{{ 1 / 0 }}\n</Response>")
    assert str(caught.value) == "line 3: render failed: ZeroDivisionError: division by zero"


def test_render_error_outside_the_template_is_line_0():
    assert render._error_line(ValueError("x")) == 0


def test_output_of_exactly_the_limit_is_kept_and_one_more_is_refused():
    assert rendered("{{ 'a' * 10 }}", limit=10) == "a" * 10
    with pytest.raises(render.TemplateError) as caught:
        rendered("{{ 'a' * 11 }}", limit=10)  # refused before the string is even built (the budget)
    assert str(caught.value) == "line 1: render stopped: a repeated value would be over 10 characters"
    with pytest.raises(render.TemplateError) as caught:
        rendered("{{ 'a' * 6 }}{{ 'b' * 5 }}", limit=10)  # each part fits; the output does not
    assert str(caught.value) == "rendered output is over 10 bytes"


def test_the_default_limit_is_100_kb():
    assert len(rendered("{{ 'a' * 102400 }}")) == 102_400
    with pytest.raises(render.TemplateError):
        rendered("{{ 'a' * 102401 }}")


def test_the_limit_counts_across_chunks():
    source = "{% for i in range(6) %}ab{% endfor %}"
    assert rendered(source, limit=12) == "ab" * 6
    with pytest.raises(render.TemplateError):
        rendered(source, limit=11)


def test_the_builtin_fallback_is_valid_plivo_xml():
    assert plivo_xml.problems(render.BUILTIN_FALLBACK) == []


# --- routes.json -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["A", "a" * 64, "Reminder2"])
def test_template_names(name):
    assert routing.is_template_name(name)


@pytest.mark.parametrize("name", ["", "a" * 65, "a-b", "a\n", "é", None, 5])
def test_not_template_names(name):
    assert not routing.is_template_name(name)


def test_parse_routes_gives_rules_in_order():
    parsed = routing.parse_routes(
        b'{"default": "Welcome", "rules": [{"when": {"X-PH-Campaign": "Spring"}, "template": "Promo"},'
        b' {"when": {"Lang": "es", "Tier": "Gold"}, "template": "GoldEs"}, {"when": {}, "template": "Any"}]}'
    )
    assert parsed == routing.Routes(
        "Welcome",
        (
            routing.Rule((("Campaign", "Spring"),), "Promo"),
            routing.Rule((("Lang", "es"), ("Tier", "Gold")), "GoldEs"),
            routing.Rule((), "Any"),
        ),
    )


def test_choose_first_matching_rule_then_default():
    parsed = routing.parse_routes(
        '{"default": "D", "rules": [{"when": {"A": "1", "B": "2"}, "template": "AB"},'
        ' {"when": {"A": "1"}, "template": "A"}]}'
    )
    headers = render.CaseInsensitive
    assert parsed.choose(headers({"a": "1", "b": "2"})) == "AB"
    assert parsed.choose(headers({"A": "1", "B": "3"})) == "A"
    assert parsed.choose(headers({"A": "2"})) == "D"
    assert parsed.choose(headers({})) == "D"
    assert routing.Routes(None, parsed.rules).choose(headers({})) is None
    assert routing.Routes("", ()).choose({}) is None
    assert routing.EMPTY_ROUTES.choose({"A": "1"}) is None


def test_a_rule_matches_only_when_every_pair_is_equal():
    rule = routing.Rule((("A", "1"), ("B", "2")), "T")
    assert rule.matches({"A": "1", "B": "2", "C": "3"})
    assert (
        not rule.matches({"A": "1"})
        and not rule.matches({"B": "2"})
        and not rule.matches({"A": "1", "B": "x"})
    )
    assert routing.Rule((), "T").matches({})


def test_defaults_of_an_empty_object():
    assert routing.parse_routes("{}") == routing.Routes(None, ())
    assert routing.parse_routes('{"rules": []}') == routing.EMPTY_ROUTES
    assert routing.parse_routes('{"default": null}') == routing.EMPTY_ROUTES


@pytest.mark.parametrize(
    "text, message",
    [
        ("[]", 'routes.json must be a JSON object with "default" and/or "rules"'),
        ('{"zeta": 1, "alpha": 2, "default": "A"}', "routes.json has unknown key(s): alpha, zeta"),
        ('{"default": "a-b"}', "routes.json default 'a-b' is not a template name ([A-Za-z0-9]{1,64})"),
        ('{"default": 5}', "routes.json default 5 is not a template name ([A-Za-z0-9]{1,64})"),
        ('{"rules": {}}', 'routes.json "rules" must be a list'),
        ('{"rules": [[]]}', 'routes.json rule 1 must be an object with exactly "when" and "template"'),
        (
            '{"rules": [{"when": {}, "template": "A"}, {"when": {}}]}',
            'routes.json rule 2 must be an object with exactly "when" and "template"',
        ),
        (
            '{"rules": [{"when": {}, "template": "A", "x": 1}]}',
            'routes.json rule 1 must be an object with exactly "when" and "template"',
        ),
        (
            '{"rules": [{"when": {}, "template": "a b"}]}',
            "routes.json rule 1: template 'a b' is not a template name",
        ),
        (
            '{"rules": [{"when": [], "template": "A"}]}',
            'routes.json rule 1: "when" must be an object of header name -> value',
        ),
        (
            '{"rules": [{"when": {"a-b": "1"}, "template": "A"}]}',
            "routes.json rule 1: header name 'a-b' must be letters and digits",
        ),
        (
            '{"rules": [{"when": {"X-PH-": "1"}, "template": "A"}]}',
            "routes.json rule 1: header name '' must be letters and digits",
        ),
        (
            '{"rules": [{"when": {"A": 1}, "template": "A"}]}',
            "routes.json rule 1: value of 'A' must be a string, not 1",
        ),
        (
            '{"rules": [{"when": {"A": null}, "template": "A"}]}',
            "routes.json rule 1: value of 'A' must be a string, not null",
        ),
    ],
)
def test_bad_routes_name_the_problem(text, message):
    with pytest.raises(routing.RoutesError) as caught:
        routing.parse_routes(text)
    assert str(caught.value) == message


@pytest.mark.parametrize("text", ["{", b"\xff\xfe{", ""])
def test_not_json(text):
    with pytest.raises(routing.RoutesError) as caught:
        routing.parse_routes(text)
    assert str(caught.value).startswith("routes.json is not valid JSON: ")


def test_the_header_prefix_is_stripped_case_insensitively():
    parsed = routing.parse_routes(
        '{"rules": [{"when": {"x-ph-Lang": "es", "X-Ph-A": "1"}, "template": "T"}]}'
    )
    assert parsed.rules[0].when == (("Lang", "es"), ("A", "1"))
    with pytest.raises(routing.RoutesError) as caught:  # stripped once only
        routing.parse_routes('{"rules": [{"when": {"X-PH-x-ph-A": "1"}, "template": "T"}]}')
    assert "'x-ph-A'" in str(caught.value)
