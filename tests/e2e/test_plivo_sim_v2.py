"""The simulator's v2 behaviour over real sockets: scripted callees, the flow of actions and redirects,
machine detection, call control and call records, Plivo's hangup information.

A tiny answer app in the test (not callflow) serves XML per path and checks every request the simulator
sends with plivo-python's `validate_v3_signature`; plivo-python's REST client is the oracle for the API.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import plivo
import pytest
import requests
from plivo.utils import validate_v3_signature

from devtools.local_aws import free_port
from devtools.plivo_sim import PlivoSimulator
from devtools.plivo_sim.callee import ScriptError, parse_script

pytestmark = pytest.mark.e2e

AUTH_ID = "MAXXXXXXXXXXXXXXXXXX"
AUTH_TOKEN = "sim-token-v2"
AUTH = (AUTH_ID, AUTH_TOKEN)
TO = "14155550111"
ROOT = Path(__file__).resolve().parents[2]
STANDARD = ("CallUUID", "From", "To", "CallStatus", "Direction", "ALegUUID", "ALegRequestUUID")


class App:
    """Serves XML per path (a string, or a function of the form); records and verifies every request."""

    def __init__(self) -> None:
        self.routes: dict[str, str | Callable[[dict], str]] = {}
        self.hooks: dict[str, Callable[[dict], None]] = {}
        self.seen: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                parts = urlsplit(self.path)
                form = dict(parse_qsl(raw, keep_blank_values=True))
                valid = validate_v3_signature(
                    self.command,
                    f"http://127.0.0.1:{owner.port}{self.path}",
                    self.headers.get("X-Plivo-Signature-V3-Nonce", ""),
                    AUTH_TOKEN,
                    self.headers.get("X-Plivo-Signature-V3", ""),
                    form if self.command == "POST" else {},
                )
                params = form if self.command == "POST" else dict(parse_qsl(parts.query))
                owner.seen.append(
                    {"method": self.command, "path": parts.path, "form": params, "valid": valid}
                )
                if parts.path in owner.hooks:
                    owner.hooks[parts.path](params)
                route = owner.routes.get(parts.path, "<Response/>")
                reply = (route(params) if callable(route) else route).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = _handle
            do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def paths(self) -> list[str]:
        return [seen["path"] for seen in self.seen]

    def one(self, path: str) -> dict:
        (found,) = [seen for seen in self.seen if seen["path"] == path]
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def app():
    server = App()
    yield server
    server.close()
    assert all(seen["valid"] for seen in server.seen), [s for s in server.seen if not s["valid"]]


@pytest.fixture
def sim():
    with PlivoSimulator(
        AUTH_ID, AUTH_TOKEN, play_calls=True, status_by_suffix={"0": "busy"}, transfer_wait=3.0
    ) as running:
        yield running


def dial(sim, app, to=TO, **extra) -> dict:
    data = {
        "from": "14155550100",
        "to": to,
        "answer_url": app.url("/answer?call_id=job1"),
        "hangup_url": app.url("/hangup?call_id=job1"),
        **extra,
    }
    reply = requests.post(f"{sim.url}/v1/Account/{AUTH_ID}/Call/", json=data, auth=AUTH, timeout=5)
    assert reply.status_code == 201, reply.text
    return reply.json()


def finished(sim, count=1, timeout=15.0) -> list[dict]:
    assert sim.wait_for(lambda s: len(s.heard) >= count, timeout), "the call never ended"
    return sim.heard


REMINDER = (
    '<Response><GetInput action="{action}" inputType="dtmf speech" numDigits="1">'
    "<Speak>Press 1 to confirm, 2 to cancel.</Speak></GetInput>"
    '<Redirect method="GET">{noreply}</Redirect></Response>'
)


def reminder(app) -> None:
    app.routes["/answer"] = REMINDER.format(
        action=app.url("/answer?step=Reply&amp;call_id=job1"), noreply=app.url("/noreply")
    )
    app.routes["/noreply"] = "<Response><Speak>We did not hear you.</Speak></Response>"


# -- scripts -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "status", "name", "source"),
    [
        ("busy", "busy", "Busy Line", "Callee"),
        ("no-answer", "no-answer", "No Answer", "Carrier"),
        ("timeout", "timeout", "Ring Timeout", "Plivo"),
        ("decline", "cancel", "Rejected", "Callee"),
        ({"answer": "decline", "call_status": "busy"}, "busy", "Rejected", "Callee"),
        ("failed", "failed", "Destination Out Of Service", "Carrier"),
    ],
)
def test_unanswered_scripts_end_with_plivos_hangup_information(sim, app, script, status, name, source):
    sim.set_callee(TO, script)
    reply = dial(sim, app, sip_headers="Campaign=Spring")
    (heard,) = finished(sim)
    assert app.paths() == ["/hangup"]
    form = app.one("/hangup")["form"]
    assert form["CallStatus"] == status and form["Event"] == "Hangup"
    assert form["HangupCauseName"] == name and form["HangupSource"] == source
    assert form["HangupCauseCode"].isdigit() and form["HangupCause"]
    assert form["Duration"] == "0" and form["BillDuration"] == "0" and form["AnswerTime"] == ""
    assert form["RequestUUID"] == reply["request_uuid"] and form["STIRVerification"] == "Not Applicable"
    assert form["X-PH-Campaign"] == "Spring"
    assert heard["hangup_cause_name"] == name and heard["steps"] == []


def test_v1_default_rules_still_apply(sim, app):
    dial(sim, app, to="14155550110")  # ends in 0: busy
    (heard,) = finished(sim)
    assert heard["call_status"] == "busy" and heard["hangup_cause"] == "USER_BUSY"


@pytest.mark.parametrize(
    ("inputs", "params"),
    [
        (["1"], {"Digits": "1", "InputType": "dtmf"}),
        (["21"], {"Digits": "2", "InputType": "dtmf"}),  # numDigits=1
        (
            ["say:yes please"],
            {"Speech": "yes please", "InputType": "speech", "SpeechConfidenceScore": "0.90"},
        ),
        ([{"speech": "no", "confidence": 0.42}], {"Speech": "no", "SpeechConfidenceScore": "0.42"}),
    ],
)
def test_get_input_action_gets_plivos_parameters(sim, app, inputs, params):
    reminder(app)
    app.routes["/answer"] = lambda form: (
        ("<Response><Speak>Thanks.</Speak></Response>" if "Digits" in form or "Speech" in form else None)
        or REMINDER.format(action=app.url("/answer?step=Reply&amp;call_id=job1"), noreply=app.url("/noreply"))
    )
    sim.set_callee(TO, {"inputs": inputs})
    reply = dial(sim, app, sip_headers="Lang=en")
    (heard,) = finished(sim)
    assert app.paths() == ["/answer", "/answer", "/hangup"]
    action = app.seen[1]["form"]
    for key, value in params.items():
        assert action[key] == value
    for key in STANDARD:
        assert action[key]
    assert action["CallStatus"] == "in-progress" and action["X-PH-Lang"] == "en"
    assert action["ALegRequestUUID"] == reply["request_uuid"]
    assert heard["spoken"] == ["Press 1 to confirm, 2 to cancel.", "Thanks."]
    first, second = heard["steps"]
    assert first["kind"] == "answer" and first["params"]["Event"] == "StartApp"
    assert first["heard"] == ["Press 1 to confirm, 2 to cancel."] and first["inputs"][0]["kind"] in (
        "digits",
        "speech",
    )
    assert second["kind"] == "GetInput" and second["url"].endswith("step=Reply&call_id=job1")
    assert second["heard"] == ["Thanks."]
    assert heard["hangup_cause_code"] == "4010" and heard["hangup_source"] == "Plivo"


def test_silence_falls_through_to_the_next_verb_and_redirect(sim, app):
    reminder(app)
    sim.set_callee(TO, {"inputs": ["silence"]})
    dial(sim, app)
    (heard,) = finished(sim)
    assert app.paths() == ["/answer", "/noreply", "/hangup"]
    redirect = app.one("/noreply")
    assert redirect["method"] == "GET" and redirect["form"]["Event"] == "Redirect"
    assert heard["spoken"][-1] == "We did not hear you."
    assert heard["inputs"] == [{"prompt": "GetInput", "kind": "silence", "heard_by_prompt": False}]


def test_silence_then_digits_over_two_prompts(sim, app):
    app.routes["/answer"] = (
        f'<Response><GetDigits action="{app.url("/d")}" numDigits="1"><Speak>First</Speak></GetDigits>'
        f'<GetDigits action="{app.url("/d")}" numDigits="1"><Speak>Second</Speak></GetDigits></Response>'
    )
    sim.set_callee(TO, {"inputs": [None, "2"]})
    dial(sim, app)
    finished(sim)
    assert app.paths() == ["/answer", "/d", "/hangup"]
    assert app.one("/d")["form"]["Digits"] == "2" and "InputType" not in app.one("/d")["form"]


def test_speech_is_not_heard_by_get_digits_and_retries_replay_the_prompt(sim, app):
    app.routes["/answer"] = (
        f'<Response><GetDigits action="{app.url("/d")}" retries="2" validDigits="12">'
        "<Speak>Menu</Speak></GetDigits></Response>"
    )
    sim.set_callee(TO, {"inputs": ["say:one", "9", "1"]})
    dial(sim, app)
    (heard,) = finished(sim)
    # try 1 hears speech (not for GetDigits), try 2 gets an invalid 9: no action, the call ends
    assert app.paths() == ["/answer", "/hangup"]
    assert heard["spoken"] == ["Menu", "Menu"]


def test_callee_hangs_up_mid_call(sim, app):
    reminder(app)
    sim.set_callee(TO, {"inputs": ["hangup"]})
    dial(sim, app)
    (heard,) = finished(sim)
    form = app.one("/hangup")["form"]
    assert (form["CallStatus"], form["HangupSource"], form["HangupCauseName"]) == (
        "completed",
        "Callee",
        "Normal Hangup",
    )
    assert form["HangupCauseCode"] == "4000" and int(form["Duration"]) >= 1 and form["AnswerTime"]


def test_hangup_after_seconds_and_scripts_used_one_per_call(sim, app):
    app.routes["/answer"] = "<Response>" + "<Speak>one two three four five</Speak>" * 10 + "</Response>"
    sim.set_callee(TO, [{"hangup_after": 3}, "busy"])
    dial(sim, app)
    dial(sim, app)
    dial(sim, app)
    heard = finished(sim, 3)
    by_status = sorted((h["call_status"], len(h["spoken"])) for h in heard)
    assert by_status[0] == ("busy", 0)
    assert ("completed", 2) in by_status and ("completed", 10) in by_status  # the 3rd call: defaults again


def test_hangup_verb_and_loop_protection(sim, app):
    app.routes["/answer"] = "<Response><Speak>Bye</Speak><Hangup/><Speak>never</Speak></Response>"
    dial(sim, app)
    (heard,) = finished(sim)
    assert heard["spoken"] == ["Bye"] and heard["hangup_source"] == "Answer XML"
    sim.reset()
    sim.max_steps = 4
    app.seen.clear()
    app.routes["/answer"] = f"<Response><Redirect>{app.url('/answer')}</Redirect></Response>"
    dial(sim, app)
    (heard,) = finished(sim)
    assert len(heard["steps"]) == 4 and heard["hangup_cause_name"] == "Loop Detected"


def test_record_and_dial_actions(sim, app):
    app.routes["/answer"] = f'<Response><Record action="{app.url("/rec")}" maxLength="30"/></Response>'
    app.routes["/rec"] = (
        f'<Response><Dial action="{app.url("/dialed")}"><Number>14155550199</Number></Dial></Response>'
    )
    app.routes["/dialed"] = "<Response><Speak>Done</Speak></Response>"
    sim.set_callee(TO, {"record_seconds": 7, "dial": "busy"})
    dial(sim, app)
    (heard,) = finished(sim)
    assert app.paths() == ["/answer", "/rec", "/dialed", "/hangup"]
    rec = app.one("/rec")["form"]
    assert rec["RecordingDuration"] == "7" and rec["RecordUrl"].endswith(rec["RecordingID"] + ".mp3")
    dialed = app.one("/dialed")["form"]
    assert dialed["DialStatus"] == "busy" and dialed["DialBLegUUID"] == ""
    assert dialed["DialALegUUID"] == heard["call_uuid"]
    assert [s["kind"] for s in heard["steps"]] == ["answer", "Record", "Dial"]


def test_redirect_false_notifies_the_action_and_goes_on(sim, app):
    app.routes["/answer"] = (
        f'<Response><GetDigits action="{app.url("/note")}" redirect="false"><Speak>Q</Speak></GetDigits>'
        "<Speak>After</Speak></Response>"
    )
    app.routes["/note"] = "<Response><Speak>ignored</Speak></Response>"
    sim.set_callee(TO, {"inputs": ["5"]})
    dial(sim, app)
    (heard,) = finished(sim)
    assert app.paths() == ["/answer", "/note", "/hangup"] and heard["spoken"] == ["Q", "After"]


# -- machine detection -----------------------------------------------------------------


def test_machine_detection_hangup(sim, app):
    app.routes["/answer"] = "<Response><Speak>Hello</Speak></Response>"
    sim.set_callee(TO, "machine")
    reply = dial(sim, app, machine_detection="hangup", machine_detection_url=app.url("/machine?call_id=job1"))
    (heard,) = finished(sim)
    assert app.paths() == ["/answer", "/machine", "/hangup"]
    machine = app.one("/machine")["form"]
    assert machine["Machine"] == "true" and machine["IfMachine"] == "hangup"
    assert machine["Event"] == "MachineDetection" and machine["CallStatus"] == "in-progress"
    assert machine["RequestUUID"] == machine["ALegRequestUUID"] == reply["request_uuid"]
    assert machine["CallUUID"] == machine["ALegUUID"] == heard["call_uuid"]
    assert machine["Direction"] == "outbound"
    assert heard["machine"] and heard["spoken"] == []
    assert app.one("/hangup")["form"]["HangupSource"] == "Plivo"


def test_machine_detection_true_then_transfer_to_voicemail(sim, app):
    app.routes["/answer"] = "<Response><Speak>Hello human</Speak></Response>"
    app.routes["/voicemail"] = (
        f'<Response><Speak>Please call us back.</Speak><Record action="{app.url("/left")}"/></Response>'
    )

    def transfer(form):
        url = f"{sim.url}/v1/Account/{AUTH_ID}/Call/{form['CallUUID']}/"
        data = {"legs": "aleg", "aleg_url": app.url("/voicemail?call_id=job1"), "aleg_method": "POST"}
        reply = requests.post(url, json=data, auth=AUTH, timeout=5)
        assert reply.status_code == 202 and reply.json()["message"] == "call transferred"

    app.hooks["/machine"] = transfer
    sim.set_callee(TO, "machine")
    dial(sim, app, machine_detection="true", machine_detection_url=app.url("/machine"))
    (heard,) = finished(sim)
    assert app.paths() == ["/answer", "/machine", "/voicemail", "/left", "/hangup"]
    assert app.one("/machine")["form"]["IfMachine"] == "continue"
    assert app.one("/voicemail")["form"]["Event"] == "Transfer"
    assert heard["spoken"] == ["Please call us back."] and heard["transfers"]
    assert heard["recordings"] and heard["call_status"] == "completed"


def test_no_machine_callback_for_a_human(sim, app):
    app.routes["/answer"] = "<Response><Speak>Hi</Speak></Response>"
    dial(sim, app, machine_detection="true", machine_detection_url=app.url("/machine"))
    finished(sim)
    assert "/machine" not in app.paths()


# -- call control and records -----------------------------------------------------------------


@pytest.fixture
def client(sim, monkeypatch):
    monkeypatch.setattr(plivo.rest.client, "API_VOICE_BASE_URI", f"{sim.url}/v1/Account")
    return plivo.RestClient(AUTH_ID, AUTH_TOKEN)


def test_hangup_api_ends_a_live_call_and_the_record_is_served(sim, app, client):
    gate = threading.Event()
    app.hooks["/answer"] = lambda form: gate.wait(5)
    app.routes["/answer"] = "<Response><Speak>One</Speak><Speak>Two</Speak></Response>"
    reply = dial(sim, app)
    assert sim.wait_for(lambda s: any(c.state == "in-progress" for c in s.live.values()), 5)
    call_uuid = next(iter(sim.live))
    live = client.live_calls.get(call_uuid)
    assert live.call_status == "in-progress"
    client.calls.delete(call_uuid)  # 204
    gate.set()
    (heard,) = finished(sim)
    assert heard["hangup_source"] == "API Request" and heard["spoken"] == []
    record = client.calls.get(call_uuid)
    assert record.call_uuid == call_uuid and record.call_state == "ANSWER"
    assert record.hangup_source == "API Request" and record.hangup_cause_code == 4000
    assert record.to_number == TO and record.from_number == "14155550100"
    for field in (
        "answer_time",
        "end_time",
        "bill_duration",
        "billed_duration",
        "call_duration",
        "total_amount",
    ):
        assert getattr(record, field) is not None
    assert "request_uuid" not in sim.records[call_uuid]
    # finished: hang up and transfer are 404
    with pytest.raises(plivo.exceptions.ResourceNotFoundError):
        client.calls.delete(call_uuid)
    with pytest.raises(plivo.exceptions.ResourceNotFoundError):
        client.calls.update(call_uuid, legs="aleg", aleg_url=app.url("/x"))
    assert reply["request_uuid"] == heard["request_uuid"]


def test_transfer_validation_and_unknown_calls(sim):
    url = f"{sim.url}/v1/Account/{AUTH_ID}/Call/nope/"
    assert (
        requests.post(url, json={"legs": "aleg", "aleg_url": "http://x/y"}, auth=AUTH, timeout=5).status_code
        == 404
    )
    assert requests.post(url, json={"aleg_url": "http://x/y"}, auth=AUTH, timeout=5).status_code == 400
    assert requests.post(url, json={"legs": "aleg"}, auth=AUTH, timeout=5).status_code == 400
    assert requests.post(url, json={"legs": "aleg", "aleg_url": "http://x"}, timeout=5).status_code == 401
    assert requests.delete(url, auth=AUTH, timeout=5).status_code == 404
    assert requests.get(url, auth=AUTH, timeout=5).status_code == 404


def test_delete_without_call_uuid_is_refused_and_recorded(sim, app):
    app.routes["/answer"] = "<Response><Speak>Hi</Speak></Response>"
    reply = requests.delete(f"{sim.url}/v1/Account/{AUTH_ID}/Call/", auth=AUTH, timeout=5)
    assert reply.status_code == 405
    assert len(sim.faults) == 1 and "every call" in sim.faults[0]["fault"]
    assert requests.get(f"{sim.url}/__sim/faults", timeout=5).json()[0]["path"].endswith("/Call/")


def test_queued_call_and_cancel_by_request_uuid(sim, app, client):
    sim.set_callee(TO, {"queued_seconds": 5})
    reply = dial(sim, app)
    request_uuid = reply["request_uuid"]
    assert sim.wait_for(lambda s: s.by_request[request_uuid].state == "queued", 5)
    queued = client.queued_calls.get(request_uuid)
    assert queued.call_status == "queued" and queued.request_uuid == request_uuid
    cancel = requests.delete(f"{sim.url}/v1/Account/{AUTH_ID}/Request/{request_uuid}/", auth=AUTH, timeout=5)
    assert cancel.status_code == 204
    (heard,) = finished(sim)
    assert heard["call_status"] == "cancel" and heard["hangup_cause_code"] == "1000"
    assert heard["hangup_source"] == "API Request"


def test_list_records_filters_and_limits(sim, app, client):
    app.routes["/answer"] = "<Response><Speak>Hi</Speak></Response>"
    before = time.strftime("%Y-%m-%d %H:%M", time.gmtime(time.time() - 60))
    for _ in range(3):
        dial(sim, app)
    dial(sim, app, to="14155550112")
    finished(sim, 4)
    listed = client.calls.list(to_number=TO, end_time__gte=before, limit=2)
    assert len(listed) == 2 and all(r.to_number == TO for r in listed)
    base = f"{sim.url}/v1/Account/{AUTH_ID}/Call/"
    page = requests.get(base, params={"to_number": TO, "limit": 2, "offset": 2}, auth=AUTH, timeout=5).json()
    assert page["meta"]["count"] == 3 and len(page["objects"]) == 1 and page["meta"]["previous"]
    assert requests.get(base, params={"limit": 21}, auth=AUTH, timeout=5).status_code == 400
    too_wide = {"end_time__gte": "2024-01-01 00:00", "end_time__lte": "2024-03-01 00:00"}
    assert requests.get(base, params=too_wide, auth=AUTH, timeout=5).status_code == 400
    future = {"end_time__gte": time.strftime("%Y-%m-%d %H:%M", time.gmtime(time.time() + 3600))}
    assert requests.get(base, params=future, auth=AUTH, timeout=5).json()["objects"] == []


def test_lost_hangup_callback(sim, app, client):
    app.routes["/answer"] = "<Response><Speak>Hi</Speak></Response>"
    sim.lose_hangups[TO] = 1
    dial(sim, app)
    dial(sim, app)
    heard = finished(sim, 2)
    assert sorted(h["hangup_lost"] for h in heard) == [False, True]
    assert app.paths().count("/hangup") == 1
    lost = next(h for h in heard if h["hangup_lost"])
    assert client.calls.get(lost["call_uuid"]).call_state == "ANSWER"  # the record is still there


def test_scripts_are_checked():
    assert parse_script({"inputs": ["1", "say:yes", None, "hangup"]})["inputs"][1] == {
        "kind": "speech",
        "speech": "yes",
        "confidence": 0.9,
    }
    for bad in (
        {"answer": "maybe"},
        {"inputs": ["abc"]},
        {"dial": "nope"},
        {"bogus": 1},
        {"hangup_after": -1},
    ):
        with pytest.raises(ScriptError):
            parse_script(bad)


# -- process mode -----------------------------------------------------------------


def test_process_mode_callees_endpoint(app):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.plivo_sim", "--port", str(port), "--auth-id", AUTH_ID,
         "--auth-token", AUTH_TOKEN, "--play-calls", "--quiet"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert "listening on" in proc.stdout.readline()
        base = f"http://127.0.0.1:{port}"
        assert (
            requests.post(f"{base}/__sim/callees", json={TO: {"answer": "x"}}, timeout=5).status_code == 400
        )
        set_ = requests.post(f"{base}/__sim/callees", json={TO: {"inputs": ["1"]}}, timeout=5)
        assert set_.status_code == 200 and set_.json()[TO]["scripts"][0]["inputs"][0]["digits"] == "1"
        assert requests.post(f"{base}/__sim/lose-hangup", json={"to": TO}, timeout=5).status_code == 200
        app.routes["/answer"] = (
            f'<Response><GetDigits action="{app.url("/d")}"><Speak>Q</Speak></GetDigits></Response>'
        )
        data = {
            "from": "14155550100",
            "to": TO,
            "answer_url": app.url("/answer"),
            "hangup_url": app.url("/h"),
        }
        assert requests.post(f"{base}/v1/Account/{AUTH_ID}/Call/", json=data, auth=AUTH, timeout=5).ok
        deadline = time.monotonic() + 10
        heard = []
        while not heard and time.monotonic() < deadline:
            heard = requests.get(f"{base}/__sim/heard", timeout=5).json()
            time.sleep(0.1)
        assert heard and heard[0]["inputs"][0]["digits"] == "1" and heard[0]["hangup_lost"]
        assert app.paths() == ["/answer", "/d"]
        records = requests.get(f"{base}/__sim/records", timeout=5).json()
        assert records[0]["call_uuid"] == heard[0]["call_uuid"]
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()


def test_a_request_s_arrival_is_the_kernel_s_receive_time_not_when_a_thread_read_it():
    """The simulator's clock for a call's start: bytes sent at T and read 200 ms later are stamped T."""
    import io
    import socket

    from devtools.plivo_sim.server import SO_TIMESTAMPNS, StampedSocketIO

    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    try:
        server.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        raw = StampedSocketIO(server)
        reader = io.BufferedReader(raw)
        sent = time.time()
        client.sendall(b"POST /v1/Account/MA/Call/ HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        read_at = time.time()
        assert reader.readline() == b"POST /v1/Account/MA/Call/ HTTP/1.1\r\n"
        assert raw.stamp is not None
        assert sent - 0.001 <= raw.stamp <= sent + 0.05 < read_at
        assert reader.readline() == b"Host: x\r\n"  # the rest of the request comes from the buffer
    finally:
        for sock in (client, server, listener):
            sock.close()
