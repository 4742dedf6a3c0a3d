"""Pinned behaviour of chalicelib.calls.call_body: SIP header rules (PLIVO.md "Custom SIP headers"), job
validation (SPEC "Call jobs") and the Call API body. Jobs here use only v1 fields and ordinary numbers, so
the tests hold while the stricter v2 rules (phone numbers, sip: URI parameters, https) are added."""

from __future__ import annotations

from decimal import Decimal

import pytest

from chalicelib.calls import call_body
from chalicelib.calls.call_body import HeaderError, JobInvalid

BASE = "https://abc.execute-api.us-east-1.amazonaws.com/api"
TO, FROM = "14155550100", "14155559999"


def job(**fields):
    base = {"call_id": "job-1", "status": "pending", "to": TO, "from": FROM}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def problems_of(**fields) -> list[str]:
    with pytest.raises(JobInvalid) as caught:
        call_body.validate_job(job(**fields))
    return str(caught.value).split("; ")


# --- headers ---------------------------------------------------------------------------------------


def test_no_headers_have_no_problems():
    assert call_body.header_problems(None) == []
    assert call_body.header_problems({}) == []
    assert call_body.header_problems({"A": "1"}) == []


@pytest.mark.parametrize("headers, kind", [(["A=1"], "list"), ("A=1", "str"), (5, "int")])
def test_headers_must_be_a_map(headers, kind):
    assert call_body.header_problems(headers) == [f"headers must be a map of name to value, not {kind}"]


def test_numeric_and_decimal_header_values_are_text():
    headers = {"N": 42, "D": Decimal("7"), "Z": 0, "E": Decimal("1E+2")}
    assert call_body.header_problems(headers) == []
    assert call_body.encode(headers) == "D=7,E=100,N=42,Z=0"


@pytest.mark.parametrize(
    "value", [True, False, None, 4.0, Decimal("4.5"), Decimal("-1"), Decimal("NaN"), Decimal("sNaN"), [1]]
)
def test_other_header_values_are_not_text(value):
    found = call_body.header_problems({"H": value})
    assert found == [f"header 'H' value must be text, not {type(value).__name__}"]


def test_decimal_infinity_is_not_a_header_value():
    assert call_body.header_problems({"H": Decimal("Infinity")}) == [
        "header 'H' value must be text, not Decimal"
    ]


def test_negative_int_value_breaks_the_character_rule():
    assert call_body.header_problems({"H": -5}) == [
        "header 'H' value '-5' may contain only letters A-Z, a-z and digits 0-9"
    ]


def test_header_limits_are_inclusive_and_exact():
    assert call_body.header_problems({"N" * 24: "V" * 120}) == []
    assert call_body.header_problems({"N" * 25: "v"}) == [
        f"header name {'N' * 25!r} is 25 characters long (at most 24)"
    ]
    assert call_body.header_problems({"n": "V" * 121}) == [
        "header 'n' value is 121 characters long (at most 120)"
    ]


def test_header_names_and_values_characters():
    assert call_body.header_problems({"X-Id": "1"}) == [
        "header name 'X-Id' may contain only letters A-Z, a-z and digits 0-9"
    ]
    assert call_body.header_problems({5: "1"}) == [
        "header name 5 may contain only letters A-Z, a-z and digits 0-9"
    ]
    assert call_body.header_problems({"": "1"}) == [
        "header name '' may contain only letters A-Z, a-z and digits 0-9"
    ]
    assert call_body.header_problems({"A": ""}) == ["header 'A' value is empty"]
    assert call_body.header_problems({"A": "a b"}) == [
        "header 'A' value 'a b' may contain only letters A-Z, a-z and digits 0-9"
    ]


def test_every_header_problem_is_listed_sorted_by_name():
    found = call_body.header_problems({"b-x": "", "a": "ok", "C" * 30: 1.5})
    assert len(found) == 4
    assert found[0].startswith("header name 'CCC") and found[1].startswith("header 'CCC")
    assert found[2].startswith("header name 'b-x'") and found[3] == "header 'b-x' value is empty"


def test_a_bad_name_and_a_bad_value_are_both_reported():
    assert len(call_body.header_problems({"a b": "c d"})) == 2


def test_encode_is_sorted_name_value_pairs():
    assert call_body.encode({"b": "2", "a": "1", "C": "3"}) == "C=3,a=1,b=2"
    assert call_body.encode({}) == ""
    assert call_body.encode(None) == ""


def test_encode_raises_with_every_problem_joined():
    with pytest.raises(HeaderError) as caught:
        call_body.encode({"a": "", "b": "x y"})
    assert str(caught.value) == (
        "header 'a' value is empty; header 'b' value 'x y' may contain only letters A-Z, a-z and digits 0-9"
    )


# --- whole numbers and how values are shown ----------------------------------------------------------


@pytest.mark.parametrize(
    "value, number",
    [
        (3, 3),
        (0, 0),
        (-2, -2),
        (Decimal("3"), 3),
        (Decimal("3.0"), 3),
        (3.0, 3),
        ("3", 3),
        (" 12 ", 12),
        ("000000000007", 7),
    ],
)
def test_whole_numbers(value, number):
    assert call_body.whole_number(value) == number
    assert type(call_body.whole_number(value)) is int


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        None,
        Decimal("2.5"),
        Decimal("NaN"),
        Decimal("Infinity"),
        2.5,
        "2.5",
        "-1",
        "",
        "1" * 13,
        "٣",
    ],
)
def test_not_whole_numbers(value):
    assert call_body.whole_number(value) is None


def test_values_in_last_error_are_shown_plainly():
    assert call_body._shown(Decimal("2.5")) == "2.5"
    assert call_body._shown("x") == "'x'"
    assert call_body._shown(True) == "True"
    assert call_body._shown("x" * 58) == repr("x" * 58)  # 60 characters: shown whole
    assert call_body._shown("x" * 59) == "'" + "x" * 56 + "..."  # 61: cut to 57 and "..."
    assert len(call_body._shown("y" * 500)) == 60


# --- validating a job ------------------------------------------------------------------------------


def test_a_minimal_job_is_valid_with_nothing_to_normalise():
    assert call_body.validate_job(job()) == {}


def test_sip_uris_are_valid_destinations():
    assert call_body.validate_job(job(to="sip:alice@example.com")) == {}
    assert call_body.validate_job(job(to="sips:alice@example.com")) == {}


@pytest.mark.parametrize(
    "to", [None, 14155550100, "", "1" * 21, "+1415555010x", "tel:1415", "sip:", "sip:a b@c"]
)
def test_bad_destinations(to):
    assert problems_of(to=to) == [f"to {to!r} must be digits (E.164, with or without '+') or a sip: URI"]


def test_a_leading_plus_is_normalised_away():
    assert call_body.validate_job(job(to="+14155550100")) == {"to": "14155550100"}


@pytest.mark.parametrize("to", ["1415", "+999123"])
def test_numbers_phonenumbers_rejects_are_bad_destinations(to):
    [problem] = problems_of(to=to)
    assert problem.startswith(f"to {to!r} is not a")


@pytest.mark.parametrize("from_", [None, 1415, "", "1" * 21, "sip:alice@example.com"])
def test_bad_caller_ids(from_):
    assert problems_of(**{"from": from_}) == [f"from {from_!r} must be digits (E.164 without '+')"]


def test_to_and_from_must_differ():
    assert problems_of(**{"from": TO}) == ["to and from must differ"]


def test_answer_url_and_method_are_optional_and_normalised():
    clean = call_body.validate_job(job(answer_url="https://example.com/a?x=1", answer_method="get"))
    assert clean == {"answer_url": "https://example.com/a?x=1", "answer_method": "GET"}
    assert call_body.validate_job(job(answer_url="", answer_method="")) == {}
    assert call_body.validate_job(job(answer_method="Post")) == {"answer_method": "POST"}


@pytest.mark.parametrize("url", ["ftp://example.com/a", "example.com", "https://exa mple.com", 5])
def test_bad_answer_urls(url):
    assert problems_of(answer_url=url) == [f"answer_url {url!r} must be an http(s) URL"]


@pytest.mark.parametrize("method", ["PUT", "get ", 1])
def test_bad_answer_methods(method):
    assert problems_of(answer_method=method) == [f"answer_method {method!r} must be GET or POST"]


def test_header_problems_are_job_problems():
    assert problems_of(headers={"A": ""}) == ["header 'A' value is empty"]
    assert call_body.validate_job(job(headers={"A": "1"})) == {}


def test_window_and_zone_are_kept_when_valid():
    clean = call_body.validate_job(job(window="09:00-17:00", tz="Europe/Berlin"))
    assert clean == {"window": "09:00-17:00", "tz": "Europe/Berlin"}
    assert call_body.validate_job(job(window="", tz="")) == {}


def test_bad_window_and_zone_are_each_reported():
    found = problems_of(window="9-17", tz="Europe/Nowhere")
    assert found == [
        "calling window '9-17' is not HH:MM-HH:MM",
        "time zone 'Europe/Nowhere' is not a known IANA zone",
    ]


def test_non_text_window_and_zone():
    found = problems_of(window=900, tz=Decimal("1"))
    assert found == [
        "window 900 must be text like HH:MM-HH:MM",
        "tz 1 must be text naming an IANA time zone",
    ]


def test_caller_name_limit_is_50_characters():
    assert call_body.validate_job(job(caller_name="n" * 50)) == {"caller_name": "n" * 50}
    assert problems_of(caller_name="n" * 51) == ["caller_name must be text of at most 50 characters"]
    assert problems_of(caller_name=5) == ["caller_name must be text of at most 50 characters"]
    assert call_body.validate_job(job(caller_name="")) == {}


@pytest.mark.parametrize("field", ["max_attempts", "ring_timeout", "time_limit"])
def test_numbers_are_normalised_within_their_range(field):
    assert call_body.validate_job(job(**{field: "1"})) == {field: 1}
    assert call_body.validate_job(job(**{field: Decimal("30")})) == {field: 30}
    assert call_body.validate_job(job(**{field: call_body.MAX_NUMBER})) == {field: 1_000_000}
    assert call_body.validate_job(job(**{field: ""})) == {}


@pytest.mark.parametrize(
    "field, unit", [("max_attempts", ""), ("ring_timeout", " of seconds"), ("time_limit", " of seconds")]
)
@pytest.mark.parametrize(
    "value, shown", [(0, "0"), (1_000_001, "1000001"), ("x", "'x'"), (Decimal("1.5"), "1.5")]
)
def test_numbers_out_of_range(field, unit, value, shown):
    assert problems_of(**{field: value}) == [
        f"{field} {shown} must be a whole number{unit} from 1 to 1000000"
    ]


@pytest.mark.parametrize(
    "value, clean", [(True, "true"), ("true", "true"), ("HANGUP", "hangup"), ("Hangup", "hangup")]
)
def test_machine_detection_values(value, clean):
    assert call_body.validate_job(job(machine_detection=value)) == {"machine_detection": clean}


@pytest.mark.parametrize("value", [False, None, ""])
def test_machine_detection_absent(value):
    assert call_body.validate_job(job(machine_detection=value)) == {}


@pytest.mark.parametrize(
    "value, shown",
    [
        ("yes", "'yes'"),
        (1, "1"),
        ("voicemail", "'voicemail'"),
        ("voicemail:", "'voicemail:'"),
        ("voicemail:a b", "'voicemail:a b'"),
        ("hangup:X", "'hangup:X'"),
    ],
)
def test_bad_machine_detection(value, shown):
    assert problems_of(machine_detection=value) == [
        f"machine_detection {shown} must be hangup, voicemail:<Template> "
        "(a template name of 1 to 64 letters and digits) or true"
    ]


@pytest.mark.parametrize(
    "value, clean", [("voicemail:Vm1", "voicemail:Vm1"), ("VOICEMAIL:Vm1", "voicemail:Vm1")]
)
def test_voicemail_machine_detection_keeps_the_template_name(value, clean):
    assert call_body.validate_job(job(machine_detection=value)) == {"machine_detection": clean}


def test_every_problem_is_reported_at_once_in_field_order():
    found = problems_of(to="x", answer_method="PUT", caller_name="n" * 60, time_limit=0)
    assert found[0].startswith("to 'x'")
    assert found[1].startswith("answer_method 'PUT'")
    assert found[2] == "caller_name must be text of at most 50 characters"
    assert found[3].startswith("time_limit 0 must be")
    assert len(found) == 4


# --- the Call API body -----------------------------------------------------------------------------


def test_minimal_body_is_the_sdk_defaults_plus_the_call():
    body = call_body.build_call_body(job(), BASE)
    assert body.pop("answer_url").split("?")[0] == BASE + "/answer"
    assert body == {
        "answer_method": "POST",
        "ring_method": "POST",
        "hangup_method": "POST",
        "fallback_method": "POST",
        "machine_detection_time": 5000,
        "machine_detection_method": "POST",
        "ring_timeout": 120,
        "error_if_parent_not_found": False,
        "from": FROM,
        "to": TO,
        "hangup_url": BASE + "/hangup?call_id=job-1",
    }


def test_a_trailing_slash_on_public_base_url_makes_no_double_slash():
    body = call_body.build_call_body(job(), BASE + "/")
    assert body["hangup_url"] == BASE + "/hangup?call_id=job-1"
    assert body["answer_url"].split("?")[0] == BASE + "/answer"
    assert call_body.hangup_url(BASE + "//", "x") == BASE + "/hangup?call_id=x"


def test_call_id_is_url_encoded_in_the_hangup_url():
    assert call_body.hangup_url(BASE, "a b/c&d") == BASE + "/hangup?call_id=a%20b%2Fc%26d"
    assert call_body.hangup_url(BASE, 42) == BASE + "/hangup?call_id=42"


def test_job_fields_override_the_defaults():
    body = call_body.build_call_body(
        job(
            answer_url="https://example.com/x",
            answer_method="get",
            caller_name="Clinic",
            ring_timeout="30",
            time_limit=Decimal("600"),
            machine_detection=True,
            max_attempts=2,
            window="09:00-17:00",
            tz="Europe/Berlin",
        ),
        BASE,
    )
    assert body["answer_url"] == "https://example.com/x" and body["answer_method"] == "GET"
    assert (body["caller_name"], body["ring_timeout"], body["time_limit"]) == ("Clinic", 30, 600)
    assert body["machine_detection"] == "true"
    assert type(body["ring_timeout"]) is int and type(body["time_limit"]) is int
    for absent in ("max_attempts", "window", "tz", "sip_headers", "call_id", "status"):
        assert absent not in body


def test_sip_headers_are_sent_encoded_only_when_there_are_some():
    body = call_body.build_call_body(job(headers={"Lang": "en", "Id": Decimal("42"), "N": 7}), BASE)
    assert body["sip_headers"] == "Id=42,Lang=en,N=7"
    assert "sip_headers" not in call_body.build_call_body(job(headers={}), BASE)


def test_an_invalid_job_builds_no_body():
    with pytest.raises(JobInvalid):
        call_body.build_call_body(job(headers={"A": ""}), BASE)
    with pytest.raises(JobInvalid):
        call_body.build_call_body(job(to="x"), BASE)


def test_the_sdk_defaults_are_not_shared_between_bodies():
    first = call_body.build_call_body(job(ring_timeout=30), BASE)
    second = call_body.build_call_body(job(), BASE)
    assert first["ring_timeout"] == 30 and second["ring_timeout"] == 120
    assert call_body.SDK_DEFAULTS["ring_timeout"] == 120


def test_a_zone_is_checked_even_without_a_window():
    assert problems_of(tz="Europe/Nowhere") == ["time zone 'Europe/Nowhere' is not a known IANA zone"]
    assert call_body.validate_job(job(tz="Europe/Berlin")) == {"tz": "Europe/Berlin"}


def test_header_names_of_mixed_types_are_sorted_as_text():
    assert call_body.header_problems({5: "1", "a": "1"}) == [
        "header name 5 may contain only letters A-Z, a-z and digits 0-9"
    ]


def test_decimal_zero_is_a_header_value():
    assert call_body.encode({"Z": Decimal("0")}) == "Z=0"


def test_only_slashes_are_trimmed_from_public_base_url():
    assert call_body.hangup_url("https://h/APIX/", "a") == "https://h/APIX/hangup?call_id=a"
    assert (
        call_body.build_call_body(job(), "https://h/APIX")["answer_url"].split("?")[0]
        == "https://h/APIX/answer"
    )
