"""V3 signatures: plivo-python's validate_v3_signature is the oracle, for the pure functions and for
random requests through the app (accepted when signed, 403 when a byte of URL, params, nonce or
signature changes)."""

from __future__ import annotations

import json
import logging
import string
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plivo.utils import validate_v3_signature
from plivo.utils.signature_v3 import construct_get_url, construct_post_url

from chalicelib import resources, signature
from tests.answer.answerlib import BASE, PLIVO_QUERY, TOKEN, form, plivo_sign, signed_headers

URL = BASE + "/answer"
B64 = string.ascii_letters + string.digits + "+/="
ASCII_SAFE = string.ascii_letters + string.digits + "-_.~ !$'()*,;:@/?+&=%#"

unicode_text = st.text(st.characters(codec="utf-8"), max_size=10)
unicode_keys = st.text(st.characters(codec="utf-8"), min_size=1, max_size=10)
ascii_text = st.text(st.sampled_from(ASCII_SAFE), max_size=10)
ascii_keys = st.text(st.sampled_from(ASCII_SAFE), min_size=1, max_size=10)
# name -> one or more values: repeated keys, empty values, unicode
unicode_params = st.dictionaries(unicode_keys, st.lists(unicode_text, min_size=1, max_size=3), max_size=6)
# plivo-python parses the URL's own query as ASCII bytes, so URL queries given to the oracle are ASCII
ascii_params = st.dictionaries(ascii_keys, st.lists(ascii_text, min_size=1, max_size=3), max_size=5)
nonces = st.text(st.sampled_from(string.ascii_letters + string.digits), min_size=1, max_size=24)

RELAXED = settings(
    max_examples=110,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def oracle(method: str, uri: str, nonce: str, sig: str, params: dict) -> bool:
    return validate_v3_signature(method, uri, nonce, TOKEN, sig, params=json.loads(json.dumps(params)))


def qs(params: dict) -> str:
    return urlencode([(k, v) for k, vs in params.items() for v in vs])


def _change_char(text: str, data, alphabet: str) -> str:
    if not text:
        return data.draw(st.sampled_from(alphabet))
    i = data.draw(st.integers(0, len(text) - 1))
    new = data.draw(st.sampled_from(alphabet).filter(lambda c: c != text[i]))
    return text[:i] + new + text[i + 1 :]


def _mutate_params(params: dict, data) -> dict:
    mutated = {k: list(v) for k, v in params.items()}
    if not mutated:
        return {"X-PH-Extra": [""]}
    key = data.draw(st.sampled_from(sorted(mutated)))
    how = data.draw(st.sampled_from(["value", "key", "drop", "add"]))
    if how == "value":
        i = data.draw(st.integers(0, len(mutated[key]) - 1))
        mutated[key][i] = _change_char(mutated[key][i], data, "aZ9é€")
    elif how == "key":
        new_key = _change_char(key, data, "aZ9é€")
        mutated.setdefault(new_key, []).extend(mutated.pop(key))
    elif how == "drop":
        mutated[key].pop()
        if not mutated[key]:
            del mutated[key]
    else:
        mutated[key].append(data.draw(unicode_text))
    return mutated


def _signature_headers(sig: str, nonce: str, data) -> dict:
    style = data.draw(st.sampled_from(["v3", "ma", "list"]))
    if style == "ma":
        return {"X-Plivo-Signature-Ma-V3": sig, "X-Plivo-Signature-V3-Nonce": nonce}
    if style == "list":
        return {"X-Plivo-Signature-V3": f"{'A' * 43}=,{sig}", "X-Plivo-Signature-V3-Nonce": nonce}
    return {"X-Plivo-Signature-V3": sig, "X-Plivo-Signature-V3-Nonce": nonce}


def _check_mutations(send, method, uri, params, sig, nonce, data) -> None:
    """Change one thing at a time; the app must agree with the oracle, and reject the forgeries."""
    kind = data.draw(st.sampled_from(["signature", "nonce", "url", "params"]))
    if kind == "signature":
        bad = _change_char(sig, data, B64)
        assert send(params, bad, nonce).status_code == 403
        assert not oracle(method, uri, nonce, bad, params)
    elif kind == "nonce":
        bad = _change_char(nonce, data, string.ascii_letters + string.digits)
        assert send(params, sig, bad).status_code == 403
    elif kind == "url":
        head = len("https://")
        i = data.draw(st.integers(head, len(URL) - 1))
        other = URL[:i] + data.draw(st.sampled_from("xQ7").filter(lambda c: c != URL[i])) + URL[i + 1 :]
        forged_uri = other + uri[len(URL) :]
        forged = plivo_sign(method, forged_uri, params, nonce)
        assert send(params, forged, nonce).status_code == 403
        assert not oracle(method, uri, nonce, forged, params)
    else:
        changed = _mutate_params(params, data)
        expected = 200 if oracle(method, uri, nonce, sig, changed) else 403
        assert send(changed, sig, nonce).status_code == expected


@RELAXED
@given(url_part=ascii_params, param_part=unicode_params, nonce=nonces, data=st.data())
def test_random_get_requests_agree_with_plivo_python(client, url_part, param_part, nonce, data):
    param_part = {k: v for k, v in param_part.items() if k not in url_part}
    uri = URL + ("?" + qs(url_part) if url_part else "")
    sig = plivo_sign("GET", uri, param_part, nonce)
    assert validate_v3_signature("GET", uri, nonce, TOKEN, sig, params=dict(param_part))

    def send(params, signature_value, nonce_value):
        # Plivo's GET puts every parameter in the query string of the answer URL.
        query = qs(params)
        headers = _signature_headers(signature_value, nonce_value, data)
        return client.http.get("/answer" + ("?" + query if query else ""), headers=headers)

    everything = {**url_part, **param_part}
    reply = send(everything, sig, nonce)
    assert reply.status_code == 200, reply.body
    _check_mutations(send, "GET", URL, everything, sig, nonce, data)


@RELAXED
@given(url_part=ascii_params, body=unicode_params, nonce=nonces, as_json=st.booleans(), data=st.data())
def test_random_post_requests_agree_with_plivo_python(client, url_part, body, nonce, as_json, data):
    query = qs(url_part)
    uri = URL + ("?" + query if query else "")
    sig = plivo_sign("POST", uri, body, nonce)
    assert validate_v3_signature("POST", uri, nonce, TOKEN, sig, params=json.loads(json.dumps(body)))

    def send(params, signature_value, nonce_value):
        headers = _signature_headers(signature_value, nonce_value, data)
        if as_json:
            headers["Content-Type"] = "application/json"
            payload = json.dumps({k: v[0] if len(v) == 1 else v for k, v in params.items()}).encode()
        else:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            payload = form(params)
        return client.http.post("/answer" + ("?" + query if query else ""), headers=headers, body=payload)

    reply = send(body, sig, nonce)
    assert reply.status_code == 200, reply.body
    _check_mutations(send, "POST", uri, body, sig, nonce, data)


@settings(max_examples=300, deadline=None)
@given(url_part=ascii_params, params=unicode_params, method=st.sampled_from(["GET", "POST"]))
def test_signing_string_matches_plivo_python(url_part, params, method):
    query = qs(url_part)
    uri = URL + ("?" + query if query else "")
    if method == "GET":
        params = {k: v for k, v in params.items() if k not in url_part}
        expected = construct_get_url(uri, json.loads(json.dumps(params))).decode()
        ours = signature.signing_string(URL, {**url_part, **params})
    else:
        expected = construct_post_url(uri, json.loads(json.dumps(params))).decode()
        ours = signature.signing_string(URL, url_part, params)
    assert ours == expected


def test_plivo_published_vector():
    params = {"CallUUID": "abc", "From": "14155551234", "To": "14155550000", "Direction": "outbound"}
    expected = "1xRjXfOInXbhQa0/uJjetftLDewemcPLaoVtVIw31vQ="
    assert signature.compute("my_auth_token", "https://example.com/answer/", "12345", {}, params) == expected
    assert validate_v3_signature(
        "POST", "https://example.com/answer/", "12345", "my_auth_token", expected, params=dict(params)
    )


def test_plivo_published_vector_through_the_app(client, env):
    env.setenv("PLIVO_AUTH_TOKEN", "my_auth_token")
    env.setenv("PUBLIC_BASE_URL", "https://example.com")
    resources.reset()
    params = {"CallUUID": "abc", "From": "14155551234", "To": "14155550000", "Direction": "outbound"}
    headers = {
        "X-Plivo-Signature-V3": "1xRjXfOInXbhQa0/uJjetftLDewemcPLaoVtVIw31vQ=",
        "X-Plivo-Signature-V3-Nonce": "12345",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    assert client.http.post("/answer/", headers=headers, body=form(params)).status_code == 200
    headers["X-Plivo-Signature-V3-Nonce"] = "12346"
    assert client.http.post("/answer/", headers=headers, body=form(params)).status_code == 403


def test_plivo_docs_query_string_is_verified(client):
    uri = URL + "?" + PLIVO_QUERY
    reply = client.http.get("/answer?" + PLIVO_QUERY, headers=signed_headers("GET", uri))
    assert reply.status_code == 200
    tampered = PLIVO_QUERY.replace("From=1111111111", "From=1111111112")
    assert client.http.get("/answer?" + tampered, headers=signed_headers("GET", uri)).status_code == 403


def test_missing_headers_are_rejected_and_logged(client, caplog):
    """The 403's log line says which header is missing (a `chalice local` user's first question)."""
    caplog.set_level(logging.WARNING, logger="callflow")
    assert client.http.get("/answer?" + PLIVO_QUERY).status_code == 403
    only_sig = signed_headers("GET", URL + "?" + PLIVO_QUERY)
    del only_sig["X-Plivo-Signature-V3-Nonce"]
    reply = client.http.get("/answer?" + PLIVO_QUERY, headers=only_sig)
    assert reply.status_code == 403 and b"Traceback" not in reply.body
    only_nonce = {"X-Plivo-Signature-V3-Nonce": "1"}
    assert client.http.get("/answer?" + PLIVO_QUERY, headers=only_nonce).status_code == 403
    rejected = [r for r in caplog.records if r.getMessage() == "callback rejected"]
    assert [r.reason for r in rejected] == [
        "missing X-Plivo-Signature-V3 (or X-Plivo-Signature-Ma-V3) and X-Plivo-Signature-V3-Nonce",
        "missing X-Plivo-Signature-V3-Nonce",
        "missing X-Plivo-Signature-V3 (or X-Plivo-Signature-Ma-V3)",
    ]
    assert all(r.levelno == logging.WARNING for r in rejected)


def test_verification_can_be_turned_off(client, env):
    env.setenv("VERIFY_SIGNATURES", "false")
    resources.reset()
    reply = client.http.get("/answer?" + PLIVO_QUERY)
    assert reply.status_code == 200 and b"Sample" in reply.body


def test_url_from_host_header_under_chalice_local(client, env):
    env.delenv("PUBLIC_BASE_URL")
    resources.reset()
    uri = "http://127.0.0.1:8000/answer?" + PLIVO_QUERY
    headers = {"Host": "127.0.0.1:8000", **signed_headers("GET", uri)}
    assert client.http.get("/answer?" + PLIVO_QUERY, headers=headers).status_code == 200
    headers["Host"] = "127.0.0.1:8001"
    assert client.http.get("/answer?" + PLIVO_QUERY, headers=headers).status_code == 403


def test_no_way_to_rebuild_the_url_is_a_clean_403(client, env):
    env.delenv("PUBLIC_BASE_URL")
    resources.reset()
    headers = signed_headers("GET", URL + "?" + PLIVO_QUERY)
    assert client.http.get("/answer?" + PLIVO_QUERY, headers=headers).status_code == 403


def test_unreadable_token_on_answer_is_the_apology_and_one_error(client, env, caplog):
    """Regression (issue 10 #5): callflow's own token failure was a 403 (the call ended in silence).
    Now the caller hears the built-in apology, no template is rendered, and the operator gets an ERROR."""
    env.delenv("PLIVO_AUTH_TOKEN")
    resources.reset()
    caplog.set_level(logging.WARNING, logger="callflow")
    headers = signed_headers("GET", URL + "?" + PLIVO_QUERY)
    reply = client.http.get("/answer?" + PLIVO_QUERY, headers=headers)
    assert reply.status_code == 200 and b"We are sorry" in reply.body and b"Plivo test" not in reply.body
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.levelno == logging.ERROR and "PLIVO_AUTH_TOKEN" in record.cause
    assert record.call_uuid == "5260e820-958c-11e4-b6bf-498d468c930b"


def test_unreadable_token_on_hangup_is_500_and_a_bad_signature_still_403(client, env, caplog):
    """Regression (issue 10 #5): /hangup answered 403, so Plivo did not retry and the job stayed placed."""
    env.delenv("PLIVO_AUTH_TOKEN")
    resources.reset()
    caplog.set_level(logging.WARNING, logger="callflow")
    query = "call_id=job-1&CallStatus=completed&Event=Hangup"
    headers = signed_headers("GET", BASE + "/hangup?" + query)
    reply = client.http.get("/hangup?" + query, headers=headers)
    assert reply.status_code == 500 and b"Traceback" not in reply.body
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.levelno == logging.ERROR and "PLIVO_AUTH_TOKEN" in record.cause
    caplog.clear()
    env.setenv("PLIVO_AUTH_TOKEN", TOKEN)
    resources.reset()
    forged = {**headers, "X-Plivo-Signature-V3": "bm90IGl0"}
    assert client.http.get("/hangup?" + query, headers=forged).status_code == 403
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.levelno == logging.WARNING and record.reason == "signature does not match"


@pytest.mark.parametrize("header", ["", ",", "x,y", "é", "A" * 5000])
def test_matches_handles_odd_headers(header):
    assert signature.matches("abc=", [header, None]) is False
    assert signature.matches("abc=", [header + ",abc="]) is True


scalars = st.one_of(unicode_text, st.integers(), st.booleans(), st.floats(allow_nan=False))
json_values = st.recursive(
    st.one_of(scalars, st.none(), st.lists(st.one_of(unicode_text, st.integers()), min_size=1, max_size=3)),
    lambda children: st.dictionaries(unicode_keys, children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(body=st.dictionaries(unicode_keys, json_values, min_size=1, max_size=5))
def test_json_bodies_sign_like_plivo_python(body):
    """Plivo posts forms, but a JSON body is parsed too: nested values must sign as the SDK does."""
    from plivo.utils.signature_v3 import get_sorted_params_string

    assert signature.sorted_body(body) == get_sorted_params_string(body)
    assert signature.signing_string(URL, {}, body) == construct_post_url(URL, body).decode()
