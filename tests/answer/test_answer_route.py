"""/answer through chalice.test.Client (and once as a raw API Gateway event): selection, escaping,
faults, parsing. Every 200 must be valid Plivo XML."""

from __future__ import annotations

import base64
import json
import logging
from urllib.parse import urlencode

import pytest
from defusedxml.ElementTree import fromstring

from chalicelib import resources
from chalicelib.answer import plivo_xml
from devtools.events import proxy_event
from tests.answer.answerlib import BASE, PLIVO_QUERY, TOKEN, S3Traffic, form, put, signed_headers

URL = BASE + "/answer"


def get(client, query: str = "", headers: dict | None = None, sign: bool = True):
    uri = URL + ("?" + query if query else "")
    h = signed_headers("GET", uri) if sign else {}
    h.update(headers or {})
    return client.http.get("/answer" + ("?" + query if query else ""), headers=h)


def post(
    client,
    params: dict,
    query: str = "",
    content_type="application/x-www-form-urlencoded",
    body: bytes | None = None,
    sign_params: dict | None = None,
):
    uri = URL + ("?" + query if query else "")
    h = signed_headers("POST", uri, params if sign_params is None else sign_params)
    if content_type:
        h["Content-Type"] = content_type
    return client.http.post(
        "/answer" + ("?" + query if query else ""), headers=h, body=form(params) if body is None else body
    )


def spoken(response) -> str:
    """What the caller hears: the reply must be valid Plivo XML."""
    assert response.status_code == 200, response.body
    assert response.headers["Content-Type"] == "application/xml"
    problems = plivo_xml.problems(response.body)
    assert problems == [], problems
    return " ".join("".join(el.itertext()) for el in fromstring(response.body) if el.tag == "Speak")


def verbs(response) -> list[str]:
    return [el.tag for el in fromstring(response.body)]


def outbound(**extra) -> dict:
    params = {
        "CallUUID": "uuid-1",
        "From": "14155551234",
        "To": "14155550000",
        "Direction": "outbound",
        "Event": "StartApp",
        "CallStatus": "in-progress",
    }
    params.update(extra)
    return params


# ---------------------------------------------------------------- selection


def test_plivo_docs_query_string_selects_rule_and_renders_header(client):
    reply = get(client, PLIVO_QUERY)
    text = spoken(reply)
    assert "This is the Plivo test call" in text
    assert "Your test header says Sample." in text


def test_x_ph_template_names_a_template(client):
    text = spoken(post(client, outbound(**{"X-PH-Template": "Reminder", "X-PH-Name": "Ann"})))
    assert text.startswith("Hello Ann, this is your appointment reminder")


def test_header_names_match_case_insensitively(client):
    text = spoken(post(client, outbound(**{"x-ph-template": "Reminder", "X-PH-NAME": "Bo"})))
    assert text.startswith("Hello Bo,")
    # routes.json rule written as "Campaign" matches a header sent as X-PH-campaign
    assert spoken(post(client, outbound(**{"X-PH-campaign": "Spring"}))).startswith("Spring promotion!")


def test_unknown_x_ph_template_falls_through_to_rules(client):
    text = spoken(post(client, outbound(**{"X-PH-Template": "NoSuchOne", "X-PH-Campaign": "Spring"})))
    assert text.startswith("Spring promotion! Your Spring discount code is SPRING.")


def test_invalid_template_name_is_never_an_s3_key(client, app_s3):
    reply = post(client, outbound(**{"X-PH-Template": "../Promo", "X-PH-Campaign": "Spring"}))
    assert spoken(reply).startswith("Spring promotion!")
    assert not any("%2E%2E" in c or ".." in c for c in app_s3.calls)


def test_rule_values_compare_exactly(client):
    assert spoken(post(client, outbound(**{"X-PH-Campaign": "spring"}))).startswith("Welcome to callflow")


def test_rule_needs_all_pairs(client, s3):
    put(
        s3,
        "routes.json",
        json.dumps(
            {
                "rules": [
                    {"when": {"Lang": "es", "Tier": "Gold"}, "template": "Promo"},
                    {"when": {"Lang": "es"}, "template": "Reminder"},
                ]
            }
        ),
    )
    assert spoken(post(client, outbound(**{"X-PH-Lang": "es", "X-PH-Tier": "Gold"}))).startswith("Spring")
    assert spoken(post(client, outbound(**{"X-PH-Lang": "es", "X-PH-Tier": "Silver"}))).startswith("Hello")


def test_routes_default(client):
    assert spoken(post(client, outbound())).startswith("Welcome to callflow. This is the default greeting.")


def test_default_template_setting_when_routes_has_no_default(client, s3, env):
    put(s3, "routes.json", json.dumps({"rules": [{"when": {"Campaign": "Spring"}, "template": "Promo"}]}))
    env.setenv("DEFAULT_TEMPLATE", "Reminder")
    resources.reset()
    assert spoken(post(client, outbound())).startswith("Hello there, this is your appointment reminder.")


def test_builtin_fallback_when_nothing_is_configured(client, s3):
    s3.delete_object(Bucket="callflow-templates-test", Key="templates/routes.json")
    text = spoken(post(client, outbound()))
    assert text.startswith("We are sorry")
    assert verbs(post(client, outbound())) == ["Speak", "Hangup"]


# ---------------------------------------------------------------- injection

INJECTIONS = [
    "</Speak><Dial><Number>1900</Number></Dial><Speak>",
    'Tom & Jerry\'s "shop"',
    "<![CDATA[x]]><!-- -->&amp;&#x41;",
    "bell\x07 nul\x00 ok",
]


@pytest.mark.parametrize("value", INJECTIONS)
def test_caller_values_are_escaped(client, s3, value):
    put(
        s3,
        "Echo.xml",
        "<Response><Speak>{{ call.CallerName }}|{{ call.From }}|{{ sip.To }}</Speak>"
        "<Play>https://x/a.mp3?n={{ headers.Name }}</Play></Response>",
    )
    reply = post(
        client,
        outbound(
            **{
                "X-PH-Template": "Echo",
                "CallerName": value,
                "From": value,
                "SIP-H-To": value,
                "X-PH-Name": value,
            }
        ),
    )
    text = spoken(reply)
    assert verbs(reply) == ["Speak", "Play"]
    clean = value.replace("\x07", "").replace("\x00", "")
    assert text == f"{clean}|{clean}|{clean}"
    assert "<Dial>" not in reply.body.decode()


def test_welcome_escapes_caller_name_in_attribute_free_text(client):
    reply = post(client, outbound(CallerName="</Speak><Dial><Number>1900</Number></Dial><Speak>"))
    assert verbs(reply) == ["Speak", "Hangup"]
    assert "&lt;/Speak&gt;&lt;Dial&gt;" in reply.body.decode()


# ---------------------------------------------------------------- faults: always valid XML


def _log_lines(caplog):
    return [r for r in caplog.records if r.levelno == logging.ERROR]


def test_missing_template_from_rule_falls_back_to_builtin_and_logs(client, s3, caplog):
    put(s3, "routes.json", json.dumps({"default": "Gone"}))
    caplog.set_level(logging.ERROR, logger="callflow")
    text = spoken(post(client, outbound(CallUUID="cu-missing")))
    assert text.startswith("We are sorry")
    errors = _log_lines(caplog)
    assert len(errors) == 1
    assert errors[0].call_uuid == "cu-missing"
    assert "'Gone' not found" in errors[0].cause


def test_missing_template_falls_back_to_default_template(client, s3, env, caplog):
    put(s3, "routes.json", json.dumps({"default": "Gone"}))
    env.setenv("DEFAULT_TEMPLATE", "Promo")
    resources.reset()
    caplog.set_level(logging.ERROR, logger="callflow")
    assert spoken(post(client, outbound())).startswith("Spring promotion!")
    assert len(_log_lines(caplog)) == 1


@pytest.mark.parametrize(
    "source",
    [
        "<Response><Speak>unclosed</Response>",
        "<Response><Speak>ok</Speak><Dial><Speak>no</Speak></Dial></Response>",
        "<Response><Bogus/></Response>",
        "<Speak>no root</Speak>",
        "<Response>{{ call.From }}</Response>",  # text directly under Response
        "<Response><Speak>{{ 1 / 0 }}</Speak></Response>",
        "<Response><Speak>{{ ''.__class__.__mro__[1].__subclasses__() }}</Speak></Response>",  # sandbox
        "<Response><Speak>{% for x in %}</Speak></Response>",  # syntax error
        "<Response>" + "<Speak>fill</Speak>" * 8000 + "</Response>",  # over 100 KB as rendered
        "<Response>{% for i in range(20000) %}<Speak>{{ i }} bottles of beer</Speak>{% endfor %}</Response>",
        b"<Response><Speak>\xff\xfe not utf-8</Speak></Response>",
    ],
)
def test_broken_templates_get_the_fallback(client, s3, caplog, source):
    put(s3, "Broken.xml", source)
    caplog.set_level(logging.ERROR, logger="callflow")
    reply = post(client, outbound(**{"X-PH-Template": "Broken", "CallUUID": "cu-broken"}))
    assert spoken(reply).startswith("We are sorry")
    errors = _log_lines(caplog)
    assert len(errors) == 1 and errors[0].call_uuid == "cu-broken"
    assert "Broken" in errors[0].cause


def test_s3_unreachable_with_warm_cache_serves_stale(client, app_s3, env):
    assert spoken(post(client, outbound(**{"X-PH-Template": "Reminder"}))).startswith("Hello")
    env.setenv("TEMPLATE_CACHE_TTL", "0")  # would revalidate on every request
    store = resources.template_store()
    store.ttl = 0.0
    app_s3.down = True
    app_s3.reset()
    assert spoken(post(client, outbound(**{"X-PH-Template": "Reminder"}))).startswith("Hello")
    assert app_s3.calls  # it did try S3, and served the cached version when that failed


@pytest.mark.parametrize(
    "extra,expected",
    [
        ({"X-PH-Campaign": "Spring"}, "Spring promotion!"),  # the cached rule's template
        ({}, "Welcome to callflow"),  # the cached routes.json default
    ],
)
def test_s3_outage_uncached_x_ph_template_falls_through_to_cached_routes(
    client, app_s3, caplog, extra, expected
):
    """Regression (issue 10 #8): an uncached X-PH-Template during an outage got the built-in apology
    though routes.json, the rule's template and the default were all cached."""
    assert spoken(post(client, outbound(**{"X-PH-Campaign": "Spring"}))).startswith("Spring promotion!")
    assert spoken(post(client, outbound())).startswith("Welcome to callflow")
    store = resources.template_store()
    store.ttl = 0.0  # everything cached must be revalidated: S3 is asked, and fails
    app_s3.down = True
    caplog.set_level(logging.WARNING, logger="callflow")
    reply = post(client, outbound(**{"X-PH-Template": "NotCached", **extra}))
    assert spoken(reply).startswith(expected)
    assert _log_lines(caplog) == []
    assert any(r.getMessage().startswith("S3 unavailable and X-PH-Template") for r in caplog.records)


def test_s3_outage_uncached_x_ph_template_and_no_routes_is_the_fallback_with_the_cause(
    client, app_s3, caplog
):
    app_s3.down = True
    caplog.set_level(logging.ERROR, logger="callflow")
    reply = post(client, outbound(**{"X-PH-Template": "NotCached", "CallUUID": "cu-down"}))
    assert spoken(reply).startswith("We are sorry")
    [error] = _log_lines(caplog)
    assert "'NotCached'" in error.cause and "routes.json" in error.cause


def test_s3_unreachable_cold_serves_fallback(client, app_s3, caplog):
    app_s3.down = True
    caplog.set_level(logging.ERROR, logger="callflow")
    reply = post(client, outbound(**{"X-PH-Template": "Reminder", "CallUUID": "cu-cold"}))
    assert spoken(reply).startswith("We are sorry")
    errors = _log_lines(caplog)
    assert len(errors) == 1 and "EndpointConnectionError" in errors[0].cause


def test_no_bucket_configured_still_answers(client, env):
    env.delenv("TEMPLATE_BUCKET")
    resources.reset()
    assert spoken(post(client, outbound())).startswith("We are sorry")


# ---------------------------------------------------------------- parsing


def test_get_without_content_type(client):
    reply = client.http.get("/answer?" + PLIVO_QUERY, headers=signed_headers("GET", URL + "?" + PLIVO_QUERY))
    assert "Sample" in spoken(reply)


def test_post_json_body(client):
    params = outbound(**{"X-PH-Template": "Reminder", "X-PH-Name": "Jay"})
    reply = post(client, params, content_type="application/json", body=json.dumps(params).encode())
    assert spoken(reply).startswith("Hello Jay")


def test_post_merges_url_query(client):
    reply = post(client, outbound(), query="X-PH-Template=Reminder&X-PH-Name=Quinn")
    assert spoken(reply).startswith("Hello Quinn")


@pytest.mark.parametrize(
    "body,content_type",
    [
        (b"\xff\xfe\x00garbage", "application/x-www-form-urlencoded"),
        (b"{not json", "application/json"),
        (b"[1, 2, 3]", "application/json"),
        (b"a=%ZZ&&=&b", None),
        (b"x" * 600_000, "application/x-www-form-urlencoded"),
        (b"a=1&" * 5000, "application/x-www-form-urlencoded"),
        (b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--", "multipart/form-data; boundary=b"),
    ],
)
def test_garbage_bodies_never_5xx(client, env, body, content_type):
    # Signed as if the body were empty: it cannot match, so verification rejects cleanly...
    reply = post(client, {}, content_type=content_type, body=body, sign_params={})
    assert reply.status_code == 403
    # ...and with verification off the caller still hears valid XML.
    env.setenv("VERIFY_SIGNATURES", "false")
    resources.reset()
    spoken(post(client, {}, content_type=content_type, body=body, sign_params={}))


def test_base64_body_flag_is_honoured(client):
    """API Gateway may deliver the body base64-encoded (binary media types)."""
    from app import app

    params = outbound(**{"X-PH-Template": "Promo", "X-PH-Campaign": "Spring"})
    event = api_gateway_event("POST", form(params), signed_headers("POST", URL, params))
    event["body"] = base64.b64encode(form(params)).decode()
    event["isBase64Encoded"] = True
    reply = app(event, None)
    assert reply["statusCode"] == 200
    assert "Spring promotion" in reply["body"]


# ---------------------------------------------------------------- raw API Gateway proxy event

DOMAIN = "abc123.execute-api.us-east-1.amazonaws.com"


def api_gateway_event(method: str, body: bytes | None, headers: dict, query: dict | None = None) -> dict:
    headers = {"Host": DOMAIN, "User-Agent": "PlivoHTTP/1.0", "X-Forwarded-Proto": "https", **headers}
    if body is not None:
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
    return proxy_event(
        method,
        "/answer",
        domain=DOMAIN,
        headers=headers,
        query=query,
        body=body.decode() if body is not None else None,
    )


def test_raw_api_gateway_event_like_lambda(s3, env):
    """No PUBLIC_BASE_URL: the URL is rebuilt from requestContext (domainName + stage path)."""
    from app import app

    env.delenv("PUBLIC_BASE_URL")
    resources.reset()
    public = f"https://{DOMAIN}/api/answer"
    params = dict(pair.split("=", 1) for pair in PLIVO_QUERY.split("&"))
    from urllib.parse import unquote

    params = {k: unquote(v) for k, v in params.items()}
    event = api_gateway_event("POST", form(params), signed_headers("POST", public, params))
    reply = app(event, None)
    assert reply["statusCode"] == 200
    assert reply["headers"]["Content-Type"] == "application/xml"
    assert plivo_xml.problems(reply["body"]) == []
    assert "Your test header says Sample." in reply["body"]

    forged = api_gateway_event("POST", form({**params, "From": "1900"}), event["headers"])
    assert app(forged, None)["statusCode"] == 403


def test_raw_api_gateway_get_event(s3, env):
    from urllib.parse import parse_qs

    from app import app

    env.delenv("PUBLIC_BASE_URL")
    resources.reset()
    query = parse_qs(PLIVO_QUERY, keep_blank_values=True)
    headers = signed_headers("GET", f"https://{DOMAIN}/api/answer?{PLIVO_QUERY}")
    reply = app(api_gateway_event("GET", None, headers, query), None)
    assert reply["statusCode"] == 200 and "Sample" in reply["body"]


def test_auth_token_is_never_logged(client, caplog):
    caplog.set_level(logging.DEBUG, logger="callflow")
    post(client, outbound(), sign_params={"forged": "1"})
    spoken(post(client, outbound(**{"X-PH-Template": "Nope"})))
    assert TOKEN not in caplog.text


def test_s3_traffic_helper_counts(s3):
    traffic = S3Traffic(s3)
    s3.get_object(Bucket="callflow-templates-test", Key="templates/Welcome.xml")
    assert len(traffic.calls) == 1


def test_urlencode_roundtrip_fixture():
    assert urlencode({"a": "b c"}) == "a=b+c"


@pytest.mark.slow
def test_fallback_test_passes_alone_whatever_the_shells_log_level():
    """Regression: run alone with LOG_LEVEL=CRITICAL in the shell, the fallback test saw no ERROR line
    (reading the settings set the logger's level over caplog's)."""
    import os
    import subprocess
    import sys

    from tests.answer.answerlib import ROOT

    node = "tests/answer/test_answer_route.py::test_broken_templates_get_the_fallback"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            node + "[<Response><Bogus/></Response>]",
        ],
        cwd=ROOT,
        env={**os.environ, "LOG_LEVEL": "CRITICAL"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:]
