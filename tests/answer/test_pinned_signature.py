"""Pinned behaviour of chalicelib.signature (issue 10, "tests that pin behaviour down").

Each test states one documented rule (PLIVO.md "Request signatures (V3)", SPEC "Signatures") with exact
values, and plivo-python's `validate_v3_signature` is the oracle wherever a signature is involved. Written to
kill the mutants that the older, property-based tests let live (see `make mutation`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from plivo.utils import validate_v3_signature

from chalicelib import signature
from tests.answer.answerlib import plivo_sign

TOKEN = "pinned-token"
URL = "https://example.com/api/answer"
NONCE = "12345"


def sdk_signs(method: str, uri: str, params: dict, nonce: str = NONCE) -> str:
    return plivo_sign(method, uri, params, nonce, token=TOKEN)


def sdk_accepts(method: str, uri: str, params: dict, sig: str, nonce: str = NONCE) -> bool:
    return validate_v3_signature(method, uri, nonce, TOKEN, sig, params={k: v for k, v in params.items()})


# --- the signing string, piece by piece --------------------------------------------------------------


def test_published_vector_exactly():
    body = {"CallUUID": ["abc"], "From": ["14155551234"], "To": ["14155550000"], "Direction": ["outbound"]}
    assert (
        signature.compute("my_auth_token", "https://example.com/answer/", "12345", {}, body)
        == "1xRjXfOInXbhQa0/uJjetftLDewemcPLaoVtVIw31vQ="
    )


def test_compute_is_base64_hmac_sha256_of_the_string_dot_nonce():
    message = f"{URL}?a=1.nonce-x".encode()
    expected = base64.b64encode(hmac.new(b"tok", message, hashlib.sha256).digest()).decode()
    assert signature.compute("tok", URL, "nonce-x", {"a": ["1"]}) == expected


def test_get_without_parameters_is_the_bare_url():
    assert signature.signing_string(URL, {}) == URL
    assert signature.signing_string(URL, {}, {}) == URL
    assert signature.signing_string(URL, {}, None) == URL


def test_get_query_is_sorted_by_key_then_value_joined_with_ampersands():
    query = {"b": ["2"], "B": ["3"], "a": ["z", "y"]}
    # code point order: upper case before lower case; a repeated key gives one pair per value, sorted
    assert signature.sorted_query(query) == "B=3&a=y&a=z&b=2"
    assert signature.signing_string(URL, query) == URL + "?B=3&a=y&a=z&b=2"


def test_query_values_of_every_shape():
    assert signature.sorted_query({"k": ["b", "a"]}) == "k=a&k=b"
    assert signature.sorted_query({"k": ("b", "a")}) == "k=a&k=b"
    assert signature.sorted_query({"k": "plain"}) == "k=plain"
    assert signature.sorted_query({"k": 7}) == "k=7"
    assert signature.sorted_query({"k": [7]}) == "k=7"
    assert signature.sorted_query({"k": [b"\xe9"]}) == "k=\xe9"  # bytes are read as latin-1
    assert signature.sorted_query({"k": b"\xe9t\xe9"}) == "k=\xe9t\xe9"
    assert signature.sorted_query({"k": [""]}) == "k="


def test_post_body_has_no_separators_and_a_question_mark_even_without_query():
    body = {"To": ["2"], "From": ["1"]}
    assert signature.sorted_body(body) == "From1To2"
    assert signature.signing_string(URL, {}, body) == URL + "?From1To2"
    sig = signature.compute(TOKEN, URL, NONCE, {}, body)
    assert sig == sdk_signs("POST", URL, {"To": "2", "From": "1"})
    assert sdk_accepts("POST", URL, {"To": "2", "From": "1"}, sig)


def test_post_with_a_query_puts_a_dot_between_query_and_body():
    assert signature.signing_string(URL, {"call_id": ["x"]}, {"A": ["1"]}) == URL + "?call_id=x.A1"
    sig = signature.compute(TOKEN, URL, NONCE, {"call_id": ["x"]}, {"A": ["1"]})
    assert sdk_accepts("POST", URL + "?call_id=x", {"A": "1"}, sig)


def test_post_body_repeated_and_mixed_values():
    body = {"b": ["2", "1"], "a": ["x"], "c": "s", "d": [5]}
    assert signature.sorted_body(body) == "axb1b2csd5"
    assert signature.sorted_body({"k": [b"\xe9"]}) == "k\xe9"
    assert signature.sorted_body({"k": [""], "j": ["v"]}) == "jvk"  # empty values are kept


def test_post_body_nested_objects_recurse_sorted():
    body = {"z": ["1"], "obj": {"c": "3", "b": {"y": "2", "x": "1"}}}
    assert signature.sorted_body(body) == "objbx1y2c3z1"
    params = {"z": "1", "obj": {"c": "3", "b": {"y": "2", "x": "1"}}}
    sig = signature.compute(TOKEN, URL, NONCE, {}, body)
    assert sig == sdk_signs("POST", URL, params)


def test_one_value_lists_of_non_text_take_the_general_path():
    # [5] is one value but not text: it must still read as "5" (query) and "k5" (body)
    assert signature.sorted_body({"k": [5], "j": ["1"]}) == "j1k5"
    assert signature.sorted_query({"k": [b"ab"]}) == "k=ab"


# --- matching the headers ---------------------------------------------------------------------------


def _valid() -> str:
    return signature.compute(TOKEN, URL, NONCE, {"a": ["1"]})


def test_a_valid_signature_that_is_not_the_last_candidate_verifies():
    good = _valid()
    other = "A" * 43 + "="
    assert signature.matches(good, [f"{good},{other}"])
    assert signature.matches(good, [f"{other},{good},{other}"])
    assert signature.matches(good, [f"{other},{good}"])
    assert sdk_accepts("GET", URL + "?a=1", {}, f"{good},{other}")


def test_any_header_may_hold_it_and_empty_headers_are_skipped():
    good = _valid()
    assert signature.matches(good, [None, "", good])
    assert signature.matches(good, ["", None, "x", good])
    assert signature.matches(good, [good, None])
    assert not signature.matches(good, [None, ""])
    assert not signature.matches(good, [])
    assert not signature.matches(good, ["nope", "also,nope"])


def test_a_candidate_with_a_lone_surrogate_is_compared_not_raised():
    good = _valid()
    assert signature.matches(good, ["\ud800," + good])
    assert not signature.matches(good, ["\ud800"])


def test_candidates_are_exact_no_trimming():
    good = _valid()
    assert not signature.matches(good, [" " + good])
    assert not signature.matches(good, [good + "x"])


def test_verify_accepts_the_sdk_signature_and_rejects_a_changed_byte():
    sig = sdk_signs("GET", URL + "?a=1", {})
    assert signature.verify(TOKEN, URL, NONCE, [sig], {"a": ["1"]})
    assert signature.verify(TOKEN, URL, NONCE, [None, sig], {"a": ["1"]})
    assert not signature.verify(TOKEN, URL, NONCE, [sig], {"a": ["2"]})
    assert not signature.verify(TOKEN, URL, "12346", [sig], {"a": ["1"]})
    assert not signature.verify("other", URL, NONCE, [sig], {"a": ["1"]})


def test_verify_with_a_body():
    sig = sdk_signs("POST", URL, {"From": "1"})
    assert signature.verify(TOKEN, URL, NONCE, [sig], {}, {"From": ["1"]})
    assert not signature.verify(TOKEN, URL, NONCE, [sig], {}, {"From": ["2"]})


@pytest.mark.parametrize("stand_in", ["None", "", "null"])
def test_verify_with_no_nonce_never_verifies(stand_in):
    # a missing nonce header is not the text "None" or an empty nonce
    sig = signature.compute(TOKEN, URL, stand_in, {"a": ["1"]})
    assert not signature.verify(TOKEN, URL, None, [sig], {"a": ["1"]})


def test_verify_with_an_empty_nonce_is_checked_like_any_other():
    sig = signature.compute(TOKEN, URL, "", {"a": ["1"]})
    assert signature.verify(TOKEN, URL, "", [sig], {"a": ["1"]})


def test_verify_with_no_signature_never_verifies():
    assert not signature.verify(TOKEN, URL, NONCE, [], {"a": ["1"]})
    assert not signature.verify(TOKEN, URL, NONCE, [None, ""], {"a": ["1"]})
