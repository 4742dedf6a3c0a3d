"""The Plivo simulator over real sockets, with plivo-python and `requests` as the clients.

plivo-python is the oracle twice: its `client.calls.create` must be accepted, and its
`validate_v3_signature` must accept every callback the simulator signs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import plivo
import pytest
import requests
from plivo.utils import validate_v3_signature

from devtools.local_aws import free_port
from devtools.plivo_sim import PlivoSimulator, parse_answer_xml, parse_sip_headers, validate_call

pytestmark = pytest.mark.e2e

AUTH_ID = "MAXXXXXXXXXXXXXXXXXX"
AUTH_TOKEN = "sim-token-123"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sim():
    with PlivoSimulator(AUTH_ID, AUTH_TOKEN, hold_seconds=5.0) as running:
        yield running


def call_url(sim: PlivoSimulator, account: str = AUTH_ID) -> str:
    return f"{sim.url}/v1/Account/{account}/Call/"


def body(**extra):
    data = {"from": "14155550100", "to": "14155550111", "answer_url": "http://127.0.0.1:9/answer"}
    data.update(extra)
    return data


def post(sim, data, auth=(AUTH_ID, AUTH_TOKEN), timeout=5.0):
    return requests.post(call_url(sim), json=data, auth=auth, timeout=timeout)


# -- Call API ----------------------------------------------------------------------------------------------


def test_plivo_python_calls_create_is_accepted(sim, monkeypatch):
    monkeypatch.setattr(plivo.rest.client, "API_VOICE_BASE_URI", f"{sim.url}/v1/Account")
    client = plivo.RestClient(AUTH_ID, AUTH_TOKEN)
    reply = client.calls.create(
        from_="14155550100",
        to_="14155550123",
        answer_url="https://example.com/answer",
        answer_method="GET",
        hangup_url="https://example.com/hangup?call_id=c1",
        sip_headers="Template=Reminder,CustomerId=42",
        caller_name="Clinic",
    )
    assert reply.message == "call fired"
    assert len(sim.calls) == 1
    call = sim.calls[0]
    assert reply.request_uuid == call["request_uuid"]
    assert reply.api_id == call["api_id"]
    assert call["body"]["sip_headers"] == "Template=Reminder,CustomerId=42"
    assert call["body"]["answer_method"] == "GET"
    assert sim.requests[-1]["status"] == 201


def test_plivo_python_wrong_token_is_rejected(sim, monkeypatch):
    monkeypatch.setattr(plivo.rest.client, "API_VOICE_BASE_URI", f"{sim.url}/v1/Account")
    client = plivo.RestClient(AUTH_ID, "wrong-token")
    with pytest.raises(plivo.exceptions.AuthenticationError):
        client.calls.create(from_="14155550100", to_="14155550123", answer_url="https://example.com/a")
    assert sim.calls == []


def test_accepted_call_reply_shape(sim):
    reply = post(sim, body())
    assert reply.status_code == 201
    data = reply.json()
    assert data["message"] == "call fired"
    assert data["request_uuid"] and data["api_id"]
    assert sim.calls[0]["time"] <= time.time()


@pytest.mark.parametrize("auth", [None, (AUTH_ID, "nope"), ("MAYYYYYYYYYYYYYYYYYY", AUTH_TOKEN)])
def test_bad_basic_auth_gets_401(sim, auth):
    reply = requests.post(call_url(sim), json=body(), auth=auth, timeout=5)
    assert reply.status_code == 401
    assert "error" in reply.json() and "api_id" in reply.json()
    assert sim.calls == []
    assert sim.requests[-1]["status"] == 401


def test_account_in_path_must_match_credentials(sim):
    reply = requests.post(
        call_url(sim, "MAZZZZZZZZZZZZZZZZZZ"), json=body(), auth=(AUTH_ID, AUTH_TOKEN), timeout=5
    )
    assert reply.status_code == 401


@pytest.mark.parametrize("missing", ["from", "to", "answer_url"])
def test_required_fields(sim, missing):
    data = body()
    del data[missing]
    reply = post(sim, data)
    assert reply.status_code == 400
    assert missing in reply.json()["error"]
    assert sim.calls == []


def test_from_and_to_must_not_overlap(sim):
    reply = post(sim, body(to="14155550100<14155550111"))
    assert reply.status_code == 400
    assert "overlap" in reply.json()["error"]


def test_bulk_destinations_fire_one_call_each(sim):
    reply = post(sim, body(to="14155550111<sip:alice@phone.plivo.com"))
    assert reply.status_code == 201
    assert reply.json()["message"] == "calls fired"
    assert len(reply.json()["request_uuid"]) == 2
    assert [c["to"] for c in sim.calls] == ["14155550111", "sip:alice@phone.plivo.com"]


@pytest.mark.parametrize(
    "headers",
    [
        "Template-Name=Reminder",  # '-' in a name
        "Template=Re minder",  # space in a value
        "Lang=es_MX",  # '_' in a value
        "Name=Val%20ue",  # '%' in a value
        "A" * 25 + "=x",  # name over 24
        "Name=" + "v" * 121,  # value over 120
        "Name",  # no '='
        "Name=a=b",  # two '='
        "=value",  # empty name
        "Name=",  # empty value
        "Good=1,,Other=2",  # empty pair
    ],
)
def test_bad_sip_headers_get_400(sim, headers):
    reply = post(sim, body(sip_headers=headers))
    assert reply.status_code == 400, headers
    assert reply.json()["error"].startswith("sip_headers")
    assert sim.calls == []


def test_sip_headers_at_the_limits_are_accepted(sim):
    reply = post(sim, body(sip_headers="A" * 24 + "=" + "v" * 120 + ",Lang=es"))
    assert reply.status_code == 201


@pytest.mark.parametrize(
    "extra",
    [
        {"answer_url": "ftp://x/answer"},
        {"answer_method": "PUT"},
        {"caller_name": "x" * 51},
        {"ring_timeout": 0},
        {"machine_detection": "maybe"},
        {"to": "12ab"},
        {"from": "sip:a@b"},
    ],
)
def test_other_validation(sim, extra):
    assert post(sim, body(**extra)).status_code == 400


def test_non_json_body_gets_400(sim):
    reply = requests.post(call_url(sim), data=b"not json", auth=(AUTH_ID, AUTH_TOKEN), timeout=5)
    assert reply.status_code == 400


def test_scripted_replies_per_destination(sim):
    sim.script["14155550111"] = [429, 503, "reset", "timeout", 201]
    assert post(sim, body()).status_code == 429
    assert post(sim, body()).status_code == 503
    with pytest.raises(requests.ConnectionError):
        post(sim, body())
    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        post(sim, body(), timeout=(2.0, 0.5))
    assert time.monotonic() - started < 3
    assert post(sim, body()).status_code == 201
    # Script exhausted: normal behaviour again; another destination was never affected.
    assert post(sim, body()).status_code == 201
    assert post(sim, body(to="14155550999")).status_code == 201
    assert [r["status"] for r in sim.requests] == [429, 503, "reset", "timeout", 201, 201, 201]
    assert len(sim.calls) == 3


def test_timeout_hold_ends_when_client_hangs_up(sim):
    sim.hold_seconds = 30
    sim.script["14155550111"] = ["timeout"]
    with pytest.raises(requests.ReadTimeout):
        post(sim, body(), timeout=(2.0, 0.3))
    started = time.monotonic()
    sim.stop()  # must not wait for the 30 s hold
    assert time.monotonic() - started < 5


def test_random_fault_rates():
    with PlivoSimulator(AUTH_ID, AUTH_TOKEN, seed=7) as sim:
        sim.set_faults(rate_429=1.0)
        assert {post(sim, body()).status_code for _ in range(5)} == {429}
        sim.set_faults(rate_5xx=1.0)
        assert all(500 <= post(sim, body()).status_code <= 599 for _ in range(5))
        sim.set_faults(rate_429=0.5)
        codes = [post(sim, body()).status_code for _ in range(40)]
        assert 5 < codes.count(429) < 35 and codes.count(201) == 40 - codes.count(429)
        sim.set_faults()
        assert post(sim, body()).status_code == 201
    with pytest.raises(ValueError):
        sim.set_faults(rate_429=0.7, rate_5xx=0.7)


def test_latency_overlaps_across_concurrent_requests():
    latency = 0.4
    with PlivoSimulator(AUTH_ID, AUTH_TOKEN, latency=latency) as sim:
        started, wall = time.monotonic(), time.time()
        with ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(lambda _: post(sim, body()).status_code, range(6)))
        elapsed, done = time.monotonic() - started, time.time()
    assert codes == [201] * 6
    # calls are stamped with their arrival, before the simulated latency: every reply came back at least
    # `latency` after its stamp (bounds that hold however late a loaded machine sends the requests)
    assert all(wall - 0.01 <= call["time"] <= done - latency + 0.01 for call in sim.calls)
    assert elapsed >= latency
    assert elapsed < 6 * latency / 2, "requests were served one after another"


# -- Plivo's side of the call -------------------------------------------------------------------------------


class AppServer:
    """A stand-in answer/hangup app that checks every signature with plivo-python."""

    def __init__(
        self, xml: str = "<Response><Speak>Hello</Speak></Response>", content_type: str = "application/xml"
    ) -> None:
        self.xml = xml
        self.content_type = content_type
        self.seen: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                parts = urlsplit(self.path)
                url = f"http://127.0.0.1:{owner.port}{self.path}"
                form = dict(parse_qsl(raw, keep_blank_values=True))
                query = dict(parse_qsl(parts.query, keep_blank_values=True))
                valid = validate_v3_signature(
                    self.command,
                    url,
                    self.headers.get("X-Plivo-Signature-V3-Nonce", ""),
                    AUTH_TOKEN,
                    self.headers.get("X-Plivo-Signature-V3", ""),
                    form if self.command == "POST" else {},
                )
                owner.seen.append(
                    {"method": self.command, "path": parts.path, "query": query, "form": form, "valid": valid}
                )
                reply = owner.xml.encode() if parts.path.startswith("/answer") else b"<Response/>"
                self.send_response(200)
                self.send_header("Content-Type", owner.content_type)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = _handle
            do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def app():
    server = AppServer()
    yield server
    server.close()


@pytest.fixture
def player():
    with PlivoSimulator(AUTH_ID, AUTH_TOKEN, play_calls=True, status_by_suffix={"0": "busy"}) as running:
        yield running


def app_call(app, **extra):
    return body(
        answer_url=f"http://127.0.0.1:{app.port}/answer",
        hangup_url=f"http://127.0.0.1:{app.port}/hangup?call_id=job1",
        **extra,
    )


def test_plays_answer_url_with_signed_plivo_parameters(player, app):
    app.xml = (
        '<Response><Speak voice="MAN">Hello <break time="1s"/> Ann</Speak>'
        '<GetDigits action="http://x/d" numDigits="1"><Play>http://x/menu.mp3</Play></GetDigits>'
        '<Hangup reason="busy"/></Response>'
    )
    reply = post(player, app_call(app, sip_headers="Template=Reminder,Name=Ann", caller_name="Clinic"))
    assert reply.status_code == 201
    assert player.wait_for(lambda s: len(s.heard) == 1, 10)
    heard = player.heard[0]
    assert heard["spoken"] == ["Hello Ann"]
    assert heard["played"] == ["http://x/menu.mp3"]
    assert heard["digits"][0]["num_digits"] == "1"
    assert heard["hangup"]["reason"] == "busy"
    assert heard["call_status"] == "completed" and heard["hangup_status"] == 200
    answer, hangup = app.seen
    assert answer["method"] == "POST" and answer["valid"]
    form = answer["form"]
    assert form["X-PH-Template"] == "Reminder" and form["X-PH-Name"] == "Ann"
    assert form["RequestUUID"] == reply.json()["request_uuid"]
    assert form["CallUUID"] == heard["call_uuid"] and form["Direction"] == "outbound"
    assert form["Event"] == "StartApp" and form["CallStatus"] == "in-progress"
    assert form["From"] == "14155550100" and form["To"] == "14155550111"
    assert form["CallerName"] == "Clinic"
    assert hangup["valid"] and hangup["query"] == {"call_id": "job1"}
    assert hangup["form"]["CallStatus"] == "completed" and hangup["form"]["Event"] == "Hangup"
    assert hangup["form"]["CallUUID"] == heard["call_uuid"]
    assert hangup["form"]["X-PH-Template"] == "Reminder"
    assert int(hangup["form"]["Duration"]) >= 1


def test_get_answer_method_puts_parameters_in_the_query(player, app):
    post(player, app_call(app, answer_method="GET", sip_headers="Lang=es"))
    assert player.wait_for(lambda s: len(s.heard) == 1, 10)
    answer = app.seen[0]
    assert answer["method"] == "GET" and answer["valid"]
    assert answer["query"]["X-PH-Lang"] == "es" and answer["query"]["Event"] == "StartApp"
    assert player.heard[0]["spoken"] == ["Hello"]


def test_busy_destination_never_reaches_answer_url(player, app):
    post(player, app_call(app, to="14155550110"))
    assert player.wait_for(lambda s: len(s.heard) == 1, 10)
    assert [seen["path"] for seen in app.seen] == ["/hangup"]
    assert app.seen[0]["form"]["CallStatus"] == "busy"
    assert app.seen[0]["form"]["Duration"] == "0"
    assert player.heard[0]["spoken"] == []


def test_status_script_then_suffix_default(player, app):
    player.status_script["14155550111"] = ["no-answer"]
    post(player, app_call(app))
    post(player, app_call(app))
    assert player.wait_for(lambda s: len(s.heard) == 2, 10)
    statuses = sorted(h["form"]["CallStatus"] for h in app.seen if h["path"] == "/hangup")
    assert statuses == ["completed", "no-answer"]


@pytest.mark.parametrize(
    ("xml", "content_type", "problem"),
    [
        ("<Response><Speek>hi</Speek></Response>", "application/xml", "Speek"),
        ("<Response><Speak>hi</Response>", "application/xml", "well-formed"),
        ("<Reply><Speak>hi</Speak></Reply>", "application/xml", "Response"),
        ("<Response><Dial><Speak>x</Speak></Dial></Response>", "application/xml", "Speak"),
        ("<Response><Speak>hi</Speak></Response>", "text/html", "Content-Type"),
    ],
)
def test_invalid_answer_xml_ends_the_call(player, xml, content_type, problem):
    app = AppServer(xml, content_type)
    try:
        post(player, app_call(app))
        assert player.wait_for(lambda s: len(s.heard) == 1, 10)
    finally:
        app.close()
    heard = player.heard[0]
    assert problem in heard["error"]
    assert heard["spoken"] == []
    assert heard["hangup_cause"] == "Invalid Answer XML"


def test_redirect_is_followed(player, app):
    app.xml = "<Response><Speak>Hi</Speak></Response>"
    first = AppServer(
        f"<Response><Speak>One</Speak><Redirect>http://127.0.0.1:{app.port}/answer2</Redirect>"
        "<Speak>never</Speak></Response>"
    )
    try:
        post(player, body(answer_url=f"http://127.0.0.1:{first.port}/answer"))
        assert player.wait_for(lambda s: len(s.heard) == 1, 10)
    finally:
        first.close()
    assert player.heard[0]["spoken"] == ["One", "Hi"]
    assert app.seen[0]["valid"] and app.seen[0]["form"]["Event"] == "Redirect"


def test_unreachable_answer_url_is_recorded(player):
    port = free_port()
    post(player, body(answer_url=f"http://127.0.0.1:{port}/answer"))
    assert player.wait_for(lambda s: len(s.heard) == 1, 15)
    assert "unreachable" in player.heard[0]["error"]


# -- pure helpers ---------------------------------------------------------------------------------------


def test_helpers():
    assert parse_sip_headers("A=1,B=x") == ({"A": "1", "B": "x"}, None)
    assert parse_sip_headers(None) == ({}, None)
    assert validate_call(body()) is None
    assert validate_call([]) == "request body must be a JSON object"
    assert parse_answer_xml("<Response/>").tag == "Response"


# -- process mode --------------------------------------------------------------------------------------------


def test_process_mode_with_control_endpoints(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devtools.plivo_sim",
            "--port",
            str(port),
            "--auth-id",
            AUTH_ID,
            "--auth-token",
            AUTH_TOKEN,
            "--status",
            "0=busy",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert "listening on" in proc.stdout.readline()
        base = f"http://127.0.0.1:{port}"
        config = requests.post(f"{base}/__sim/config", json={"script": {"14155550111": [503]}}, timeout=5)
        assert config.status_code == 200 and config.json()["status_by_suffix"] == {"0": "busy"}
        assert requests.post(f"{base}/__sim/config", json={"bogus": 1}, timeout=5).status_code == 400
        url = f"{base}/v1/Account/{AUTH_ID}/Call/"
        assert requests.post(url, json=body(), auth=(AUTH_ID, AUTH_TOKEN), timeout=5).status_code == 503
        assert requests.post(url, json=body(), auth=(AUTH_ID, AUTH_TOKEN), timeout=5).status_code == 201
        calls = requests.get(f"{base}/__sim/calls", timeout=5).json()
        assert [c["body"]["to"] for c in calls] == ["14155550111"]
        assert [r["status"] for r in requests.get(f"{base}/__sim/requests", timeout=5).json()] == [503, 201]
        assert requests.get(f"{base}/__sim/heard", timeout=5).json() == []
        assert requests.post(f"{base}/__sim/reset", timeout=5).json() == {"reset": True}
        assert requests.get(f"{base}/__sim/calls", timeout=5).json() == []
        json.dumps(requests.get(f"{base}/__sim/config", timeout=5).json())
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()
