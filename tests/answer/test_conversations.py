"""Conversations on /answer (SPEC "Conversations", "Do-not-call"): steps served by name, `url()` signed
for by Plivo and verified, `job` read once and only when used, the step's input and result recorded once per
request in one conditional write, `optout()` to the do-not-call list, and the DynamoDB requests each kind of
answer costs, counted on the product's own client."""

from __future__ import annotations

import json
import logging
import threading
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from defusedxml.ElementTree import fromstring

from chalicelib import resources
from chalicelib.answer import plivo_xml, render
from devtools.events import proxy_event
from tests import support
from tests.answer.answerlib import BASE, form, put, signed_headers

CONF = {"X-PH-Template": "Conf"}
CALLS = "callflow-calls-conv-test"
CAMPAIGNS = "callflow-campaigns-conv-test"
DOMAIN = "abc123.execute-api.us-east-1.amazonaws.com"

TEMPLATES = {
    # the first answer: names `job`, offers a question whose answer comes back as step ConfReply
    "Conf": (
        "<Response>\n"
        '  <GetInput action="{{ url(\'ConfReply\', lang=\'en\') }}" method="POST" inputType="dtmf speech"'
        ' numDigits="1">\n'
        "    <Speak>Hello {{ job.data.Name }}, press 1 to confirm, 2 to cancel.</Speak>\n"
        "  </GetInput>\n"
        "  <Redirect>{{ url('ConfNoReply') }}</Redirect>\n"
        "</Response>\n"
    ),
    # the reply step: no `job`, sets the result
    "ConfReply": (
        "<Response>\n"
        '  {% if call.Digits == "1" or "yes" in (call.Speech or "")|lower %}{{ result(\'confirmed\') }}'
        "<Speak>Thank you, see you then.</Speak>\n"
        "  {% elif call.Digits == \"2\" %}{{ result('cancelled') }}"
        "<Speak>Your appointment is cancelled.</Speak>\n"
        '  {% elif call.Digits == "9" %}{{ optout() }}<Speak>You will not be called again.</Speak>\n'
        "  {% else %}<Redirect>{{ url('Conf') }}</Redirect>{% endif %}\n"
        "</Response>\n"
    ),
    "ConfNoReply": "<Response><Speak>We did not hear you. Goodbye.</Speak><Hangup/></Response>\n",
    # a step that reads the job and says what it got
    "ConfJob": (
        "<Response><Speak>{{ step }} for {{ job.data.Name }} (attempt {{ job.attempts }}, result"
        " {{ job.result }}): you pressed {{ call.Digits }}</Speak></Response>\n"
    ),
    "Survey": "<Response><Speak>Second question answered: {{ call.Digits }}</Speak></Response>\n",
    # sets a result, then renders invalid Plivo XML: the reply falls back and no result is recorded
    "Broken": "<Response>{{ result('confirmed') }}<Bogus/></Response>\n",
    # a first answer (no step) that sets a result
    "Notice": "<Response>{{ result('delivered') }}<Speak>Your parcel is on its way.</Speak></Response>\n",
}


@pytest.fixture
def stack(s3, env):
    """S3 (the sample templates plus TEMPLATES), the calls table and the campaigns table, in moto."""
    env.setenv("CALLS_TABLE", CALLS)
    env.setenv("CAMPAIGNS_TABLE", CAMPAIGNS)
    resources.reset()
    for name, source in TEMPLATES.items():
        put(s3, f"{name}.xml", source)
    dynamodb = boto3.resource("dynamodb", region_name="us-east-1")
    calls = support.create_calls_table(dynamodb, CALLS)
    from devtools.local_aws import cfn_resource, create_table_args

    campaigns = dynamodb.create_table(**create_table_args(cfn_resource("CampaignsTable"), CAMPAIGNS))
    return calls, campaigns


@pytest.fixture
def calls(stack):
    return stack[0]


@pytest.fixture
def campaigns(stack):
    return stack[1]


@pytest.fixture
def client(stack):
    from chalice.test import Client

    from app import app
    from tests.answer.answerlib import ROOT

    with Client(app, stage_name="answer-tests", project_dir=str(ROOT)) as test_client:
        yield test_client


class DynamoTraffic:
    """Every HTTP request the product's own DynamoDB client sends (retries included), by operation."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.down = False
        self._lock = threading.Lock()
        resources.dynamodb_resource().meta.client.meta.events.register_first(
            "before-send.dynamodb", self._before_send
        )

    def _before_send(self, request, **kwargs):
        target = request.headers.get("X-Amz-Target", b"")
        target = target.decode() if isinstance(target, bytes) else target
        with self._lock:
            self.calls.append(target.rsplit(".", 1)[-1])
        if self.down:
            raise EndpointConnectionError(endpoint_url=request.url)
        return None

    def reset(self) -> None:
        self.calls.clear()


@pytest.fixture
def ddb(stack):
    return DynamoTraffic()


def add_job(calls, call_id: str = "J1", v1: bool = False, **fields):
    """A placed job; v2 jobs carry an empty `responses` map, v1 ones (written before v2) have none."""
    job = support.make_job(call_id, status="placed", attempts=1, data={"Name": "Ann & Bo"}, **fields)
    if not v1:
        job.setdefault("responses", {})
    calls.put_item(Item=json.loads(json.dumps(job), parse_float=Decimal))
    return job


def item(calls, call_id: str = "J1") -> dict | None:
    return calls.get_item(Key={"call_id": call_id}, ConsistentRead=True).get("Item")


def call_params(**extra) -> dict:
    params = {
        "CallUUID": "uuid-conv-1",
        "From": "14155559999",
        "To": "14155550100",
        "Direction": "outbound",
        "Event": "StartApp",
        "CallStatus": "in-progress",
    }
    params.update(extra)
    return params


def post_to(client, url: str, params: dict, nonce: str = "4242"):
    """POST `params` to the absolute `url` (its query included) as Plivo does: signed for exactly that URL."""
    parts = urlsplit(url)
    assert url.startswith(BASE + "/answer"), url
    headers = signed_headers("POST", url, params, nonce)
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    path = parts.path[len(urlsplit(BASE).path) :] + ("?" + parts.query if parts.query else "")
    return client.http.post(path, headers=headers, body=form(params))


def step_url(step: str, call_id: str | None = "J1", **params: str) -> str:
    from chalicelib.answer.steps import step_url as build

    return build(BASE + "/answer", step, call_id, params)


def served(response) -> str:
    assert response.status_code == 200, response.body
    assert response.headers["Content-Type"] == "application/xml"
    body = response.body.decode() if isinstance(response.body, bytes) else response.body
    assert plivo_xml.problems(body) == [], body
    return body


def spoken(body: str) -> str:
    return " ".join("".join(el.itertext()) for el in fromstring(body).iter("Speak"))


def action_of(body: str) -> tuple[str, str]:
    root = fromstring(body)
    return root.find("GetInput").get("action"), root.find("Redirect").text


# ---------------------------------------------------------------- compile-time names


def test_compiled_templates_know_which_conversation_names_they_use():
    assert render.uses(render.compile_template(TEMPLATES["Conf"])) == {"url", "job"}
    assert render.uses(render.compile_template(TEMPLATES["ConfReply"])) == {"url", "result", "optout"}
    assert render.uses(render.compile_template(TEMPLATES["ConfNoReply"])) == frozenset()
    # a template's own variable of that name is not the conversation's
    assert render.uses(render.compile_template("{% set job = 1 %}<Response/>")) == frozenset()
    v1_sample = (support.ROOT / "templates/Welcome.xml").read_text()
    assert render.uses(render.compile_template(v1_sample)) == frozenset()


# ---------------------------------------------------------------- steps and url()


def test_step_parameter_serves_that_template(client, calls):
    add_job(calls)
    body = served(post_to(client, step_url("ConfNoReply"), call_params()))
    assert spoken(body) == "We did not hear you. Goodbye."


def test_step_beats_the_headers_selection(client, calls):
    body = served(post_to(client, step_url("ConfNoReply"), call_params(**{"X-PH-Template": "Welcome"})))
    assert spoken(body) == "We did not hear you. Goodbye."


@pytest.mark.parametrize("step", ["NoSuchStep", "Broken"])
def test_missing_or_broken_step_is_a_broken_flow(client, calls, caplog, capsys, step):
    """Selection step 0: a step that names no (working) template falls back with an ERROR, never a guess
    from the headers; the metric says step-missing (or invalid-xml for one that renders badly)."""
    caplog.set_level(logging.INFO, logger="callflow")
    body = served(post_to(client, step_url(step), call_params(**{"X-PH-Template": "Welcome"})))
    assert "We are sorry" in spoken(body)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and step in errors[0].getMessage() + str(errors[0].__dict__)
    out = capsys.readouterr().out
    docs = [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]
    reasons = {d.get("Reason") for d in docs if "AnswerFallbacks" in d and "Reason" in d}
    assert reasons == ({"step-missing"} if step == "NoSuchStep" else {"invalid-xml"})


def test_url_uses_public_base_url_and_carries_call_id_and_params(client, calls):
    add_job(calls)
    reply = post_to(client, BASE + "/answer?call_id=J1", call_params(**CONF))
    body = served(reply)
    action, redirect = action_of(body)
    assert action == f"{BASE}/answer?step=ConfReply&call_id=J1&lang=en" or action == step_url(
        "ConfReply", lang="en"
    )
    assert parse_qs(urlsplit(action).query) == {"step": ["ConfReply"], "call_id": ["J1"], "lang": ["en"]}
    assert redirect == f"{BASE}/answer?step=ConfNoReply&call_id=J1"
    assert "&amp;call_id=J1" in body  # XML autoescaping: the & of the query is escaped in the document
    assert spoken(body).startswith("Hello Ann & Bo, press 1")


def test_url_without_a_call_id_has_none(client, s3):
    body = served(post_to(client, BASE + "/answer", call_params(**{"X-PH-Template": "ConfReply"})))
    assert fromstring(body).find("Redirect").text == f"{BASE}/answer?step=Conf"


def test_url_refuses_a_name_that_is_not_a_template_name(client, s3):
    put(s3, "BadUrl.xml", "<Response><Redirect>{{ url('../x') }}</Redirect></Response>")
    body = served(post_to(client, BASE + "/answer", call_params(**{"X-PH-Template": "BadUrl"})))
    assert "We are sorry" in spoken(body)


@pytest.mark.parametrize(
    "source",
    [
        "{{ url.__globals__ }}",
        "{{ url.__globals__['os'] }}",
        "{{ result.__self__ }}",
        "{{ result.__self__.__dict__ }}",
        "{{ optout.__func__.__code__ }}",
        "{{ url.__closure__ }}",
    ],
)
def test_the_step_functions_open_nothing(client, s3, source):
    """The sandbox refuses the functions' `__` attributes (they render as nothing): no new way out."""
    put(s3, "Escape.xml", f"<Response><Speak>{source}</Speak></Response>")
    body = served(post_to(client, BASE + "/answer", call_params(**{"X-PH-Template": "Escape"})))
    assert spoken(body) == ""


def test_action_request_signed_for_url_verifies_and_records(client, calls):
    """The whole loop with PUBLIC_BASE_URL set: url() makes the action, Plivo signs its POST for exactly
    that URL (query included; plivo-python is the oracle in signed_headers), and the step verifies."""
    add_job(calls)
    action, _ = action_of(served(post_to(client, BASE + "/answer?call_id=J1", call_params(**CONF))))
    body = served(post_to(client, action, call_params(Digits="1", InputType="dtmf")))
    assert spoken(body) == "Thank you, see you then."
    job = item(calls)
    assert job["result"] == "confirmed" and job["last_step"] == "ConfReply"
    response = job["responses"]["ConfReply"]
    assert response["Digits"] == "1" and response["InputType"] == "dtmf" and response["key"]
    assert response["CallUUID"] == "uuid-conv-1" and float(response["at"]) > 0
    # the same request signed for a URL one parameter away is refused
    headers = signed_headers("POST", action.replace("lang=en", "lang=fr"), call_params(Digits="1"), "1")
    refused = client.http.post(
        "/answer?" + urlsplit(action).query,
        headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
        body=form(call_params(Digits="1")),
    )
    assert refused.status_code == 403


def raw_event(url: str, params: dict, method: str = "POST") -> dict:
    parts = urlsplit(url)
    assert parts.netloc == DOMAIN and parts.path == "/api/answer", url
    query = parse_qs(parts.query, keep_blank_values=True)
    headers = {"Host": DOMAIN, "User-Agent": "PlivoHTTP/1.0", "X-Forwarded-Proto": "https"}
    if method == "POST":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    headers.update(signed_headers(method, url, params if method == "POST" else {}, "777"))
    body = form(params).decode() if method == "POST" else None
    return proxy_event(method, "/answer", domain=DOMAIN, headers=headers, query=query or None, body=body)


def test_url_without_public_base_url_is_the_url_the_request_was_signed_for(stack, calls, env):
    """PUBLIC_BASE_URL unset: url() builds on API Gateway's requestContext (domainName + stage path), and
    the action request Plivo signs for it verifies, query and all."""
    from app import app

    env.delenv("PUBLIC_BASE_URL")
    resources.reset()
    add_job(calls)
    first = app(raw_event(f"https://{DOMAIN}/api/answer?call_id=J1", call_params(**CONF)), None)
    assert first["statusCode"] == 200, first
    action, redirect = action_of(first["body"])
    assert action == f"https://{DOMAIN}/api/answer?step=ConfReply&call_id=J1&lang=en"
    assert redirect == f"https://{DOMAIN}/api/answer?step=ConfNoReply&call_id=J1"
    reply = app(raw_event(action, call_params(Digits="2")), None)
    assert reply["statusCode"] == 200 and "cancelled" in reply["body"]
    assert item(calls)["result"] == "cancelled"
    # Plivo's GET to the Redirect URL (query only) verifies too
    again = app(raw_event(redirect, {}, method="GET"), None)
    assert again["statusCode"] == 200 and "We did not hear you" in again["body"]


# ---------------------------------------------------------------- recording


def test_retry_of_the_same_request_writes_nothing_new(client, calls, ddb):
    add_job(calls)
    url = step_url("ConfReply", lang="en")
    served(post_to(client, url, call_params(Digits="1")))
    first = item(calls)
    ddb.reset()
    body = served(post_to(client, url, call_params(Digits="1"), nonce="other-nonce"))  # Plivo's retry
    assert spoken(body) == "Thank you, see you then."
    assert item(calls) == first  # `at` included: nothing was rewritten
    assert ddb.calls == ["UpdateItem"]  # one conditional write, refused by its condition


def test_same_step_with_new_input_is_recorded_again(client, calls):
    add_job(calls)
    url = step_url("ConfReply")
    served(post_to(client, url, call_params(Digits="3")))  # an unknown choice: asked again
    assert "result" not in item(calls)
    served(post_to(client, url, call_params(Digits="2")))
    job = item(calls)
    assert job["responses"]["ConfReply"]["Digits"] == "2" and job["result"] == "cancelled"


def test_two_steps_each_record_their_own_input(client, calls):
    add_job(calls)
    served(post_to(client, step_url("ConfReply"), call_params(Digits="1")))
    served(post_to(client, step_url("Survey"), call_params(Digits="5")))
    job = item(calls)
    assert job["responses"]["ConfReply"]["Digits"] == "1"
    assert job["responses"]["Survey"]["Digits"] == "5"
    assert job["last_step"] == "Survey" and job["result"] == "confirmed"


def test_step_without_input_or_result_writes_nothing(client, calls, ddb):
    add_job(calls)
    before = item(calls)
    ddb.reset()
    served(post_to(client, step_url("ConfNoReply"), call_params()))
    assert ddb.calls == [] and item(calls) == before


def test_a_reply_that_fell_back_records_no_result(client, calls):
    add_job(calls)
    body = served(post_to(client, step_url("Broken"), call_params(Digits="1")))
    assert "We are sorry" in spoken(body)
    job = item(calls)
    assert "result" not in job
    assert job["responses"]["Broken"]["Digits"] == "1"  # what the caller pressed is still kept


def test_first_answer_result_is_recorded(client, calls):
    add_job(calls)
    served(post_to(client, BASE + "/answer?call_id=J1", call_params(**{"X-PH-Template": "Notice"})))
    job = item(calls)
    assert job["result"] == "delivered" and job["last_step"] == "Notice" and job["responses"] == {}


def test_unknown_call_id_answers_and_writes_nothing(client, calls):
    body = served(post_to(client, step_url("ConfReply", call_id="nope"), call_params(Digits="1")))
    assert spoken(body) == "Thank you, see you then."
    body = served(post_to(client, step_url("ConfJob", call_id="nope"), call_params(Digits="1")))
    assert spoken(body) == "ConfJob for  (attempt , result ): you pressed 1"
    assert calls.scan()["Items"] == []


def test_v1_job_without_responses_map_gets_one(client, calls):
    add_job(calls, v1=True)
    served(post_to(client, step_url("ConfReply"), call_params(Digits="1")))
    served(post_to(client, step_url("Survey"), call_params(Digits="4")))
    job = item(calls)
    assert set(job["responses"]) == {"ConfReply", "Survey"} and job["result"] == "confirmed"


def test_job_is_read_for_templates_that_use_it(client, calls):
    add_job(calls, result="pending-reply")
    body = served(post_to(client, step_url("ConfJob"), call_params(Digits="7")))
    assert spoken(body) == "ConfJob for Ann & Bo (attempt 1, result pending-reply): you pressed 7"
    assert item(calls)["responses"]["ConfJob"]["Digits"] == "7"


def test_write_failure_still_serves_the_reply(client, calls, ddb, caplog):
    add_job(calls)
    caplog.set_level(logging.INFO, logger="callflow")
    ddb.down = True
    body = served(post_to(client, step_url("ConfReply"), call_params(Digits="1")))
    assert spoken(body) == "Thank you, see you then."
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "not recorded" in errors[0].getMessage()
    assert getattr(errors[0], "call_id", None) == "J1"
    assert getattr(errors[0], "call_uuid", None) == "uuid-conv-1"
    ddb.down = False
    assert "result" not in item(calls)


# ---------------------------------------------------------------- optout()


def dnc_numbers(campaigns) -> dict[str, dict]:
    return {i["number"]: i for i in campaigns.scan()["Items"] if i["pk"].startswith("dnc#") or "number" in i}


def test_optout_adds_the_callee_of_an_outbound_call(client, calls, campaigns):
    add_job(calls, to="+1 415 555 0100")
    body = served(post_to(client, step_url("ConfReply"), call_params(Digits="9", To="sip:x@example.com")))
    assert spoken(body) == "You will not be called again."
    listed = dnc_numbers(campaigns)
    assert set(listed) == {"14155550100"}
    assert listed["14155550100"]["reason"] == "opted out during call J1"
    assert item(calls)["result"] == "opted-out"


def test_optout_of_an_inbound_call_adds_the_caller(client, calls, campaigns):
    params = call_params(Direction="inbound", From="+442071838750", Digits="9")
    served(post_to(client, step_url("ConfReply", call_id=None), params))
    assert set(dnc_numbers(campaigns)) == {"442071838750"}


def test_optout_skips_sip_callers(client, calls, campaigns, caplog):
    caplog.set_level(logging.INFO, logger="callflow")
    params = call_params(Direction="inbound", From="sip:alice@example.com", Digits="9")
    served(post_to(client, step_url("ConfReply", call_id=None), params))
    assert dnc_numbers(campaigns) == {}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_optout_in_a_reply_that_fell_back_does_nothing(client, calls, campaigns, s3):
    put(s3, "OptBroken.xml", "<Response>{{ optout() }}<Nope/></Response>")
    add_job(calls)
    served(post_to(client, step_url("OptBroken"), call_params(Digits="9")))
    assert dnc_numbers(campaigns) == {} and "result" not in item(calls)


# ---------------------------------------------------------------- what each answer costs in DynamoDB


def test_dynamodb_requests_per_answer(client, calls, ddb):
    add_job(calls)

    def cost(url: str, params: dict) -> list[str]:
        ddb.reset()
        served(post_to(client, url, params))
        return list(ddb.calls)

    # a step with input whose template does not use `job`: the one conditional write
    assert cost(step_url("ConfReply"), call_params(Digits="1")) == ["UpdateItem"]
    # a step with input whose template uses `job`: the GetItem, then the write
    assert cost(step_url("ConfJob"), call_params(Digits="2")) == ["GetItem", "UpdateItem"]
    # no input, no job, no result(): nothing
    assert cost(step_url("ConfNoReply"), call_params()) == []
    assert cost(step_url("ConfReply"), call_params(Digits="")) == []  # url('Conf'): nothing to record
    # a first answer that uses `job`: one GetItem
    assert cost(BASE + "/answer?call_id=J1", call_params(**CONF)) == ["GetItem"]
    # the v1 path: no step, no job
    assert cost(BASE + "/answer?call_id=J1", call_params(**{"X-PH-Template": "Welcome"})) == []
    assert cost(BASE + "/answer", call_params(**{"X-PH-Template": "Welcome"})) == []


def test_dynamodb_requests_for_a_v1_job(client, calls, ddb):
    """A job written before v2 (no `responses` map): when the job was read, the right write is chosen at
    once; when not, the path write fails validation once and the whole map is written."""
    add_job(calls, v1=True)
    ddb.reset()
    served(post_to(client, step_url("ConfJob"), call_params(Digits="2")))
    assert ddb.calls == ["GetItem", "UpdateItem"]
    add_job(calls, "J2", v1=True)
    ddb.reset()
    served(post_to(client, step_url("ConfReply", call_id="J2"), call_params(Digits="1")))
    assert ddb.calls == ["UpdateItem", "UpdateItem"]
    assert item(calls, "J2")["responses"]["ConfReply"]["Digits"] == "1"


# ---------------------------------------------------------------- metrics


def test_each_answer_flushes_its_metrics_once(client, calls, capsys):
    add_job(calls)
    capsys.readouterr()
    served(post_to(client, step_url("ConfReply"), call_params(Digits="1")))
    docs = totals(capsys.readouterr().out)
    assert len(docs) == 1  # one EMF document of totals: this invocation's counts, flushed once
    assert docs[0]["AnswersServed"] in (1, 1.0, [1.0]) and docs[0]["StepInputsRecorded"] in (1, 1.0, [1.0])
    served(post_to(client, step_url("ConfReply"), call_params(Digits="1")))  # Plivo's retry: no new input
    docs = totals(capsys.readouterr().out)
    assert len(docs) == 1 and "StepInputsRecorded" not in docs[0]


def totals(out: str) -> list[dict]:
    """The EMF documents without a breakdown dimension (the per-Reason/Campaign ones are separate)."""
    docs = [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]
    return [d for d in docs if d["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]]


def test_the_names_a_template_uses_are_what_jinja_finds_undeclared():
    """`render.step_names` skips Jinja's `meta` pass when no Name or NSRef names a conversation name: the
    same answer as asking `meta` every time, for the repository's templates and for the tricky spellings."""
    from jinja2 import meta

    sources = [
        *TEMPLATES.values(),
        *(p.read_text() for p in sorted((support.ROOT / "templates").glob("*.xml"))),
    ]
    sources += [
        "{% set job = 1 %}{{ job }}",
        "{% set ns = namespace(a=1) %}{% set ns.a = 2 %}{{ ns.a }}",
        "{% set job.x = 1 %}",  # an NSRef reads `job`
        "{% for step in [1] %}{{ step }}{% endfor %}{{ step }}",
        "{% with url = 1 %}{{ url }}{% endwith %}{{ url('A') }}",
        "{% macro result() %}x{% endmacro %}{{ result() }}",
        "{{ headers.job }}{{ call['step'] }}{{ 'optout' }}",
        "{% if optout is defined %}{{ optout() }}{% endif %}",
        "{% call job() %}x{% endcall %}",
    ]
    env = render.environment()
    for source in sources:
        tree = env.parse(source)
        expected = frozenset(meta.find_undeclared_variables(tree) & render.STEP_NAMES)
        assert render.step_names(tree) == expected, source
