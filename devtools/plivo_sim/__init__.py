"""A local Plivo: the Call API the launcher uses, and Plivo's side of every call it accepts.

Dev tool only (never deployed). It is a real HTTP server so the launcher, the end-to-end tests, `make run`
and the benchmarks talk to it over sockets exactly as they would talk to api.plivo.com:

* `POST /v1/Account/{auth_id}/Call/` checks Basic auth, required fields, `sip_headers` and from/to overlap the
  way Plivo does, and answers `201 call fired`. Latency, scripted replies per destination and random
  429/5xx/timeout rates make the launcher's failure paths reproducible.
* With `play_calls` it then does what Plivo does for each accepted call: requests `answer_url` (signed V3 with
  the account token, Plivo's parameters plus `X-PH-*`), checks the XML, records what the caller would hear,
  and sends the hangup callback with a CallStatus chosen per destination.

In-process: `with PlivoSimulator("MA...", "token", play_calls=True) as sim: ... sim.url ... sim.heard`.
As a process: `python -m devtools.plivo_sim --port 8111 --auth-id A --auth-token T --play-calls`, with
`GET /__sim/calls`, `GET /__sim/heard`, `GET /__sim/requests`, `POST /__sim/config`, `POST /__sim/reset`.

v2: each callee follows a script per destination (callee.py: answer, busy, no-answer, timeout, decline,
failed, machine; inputs for successive prompts; hang up mid-call), set with `sim.set_callee(to, script)` or
`POST /__sim/callees {to: script}`; the player follows GetDigits/GetInput/Record/Dial actions, Redirect,
Hangup and transfers, calls machine_detection_url, and the server serves transfer (`POST .../Call/{uuid}/`),
hangup (`DELETE .../Call/{uuid}/`, never without a uuid), cancel (`DELETE .../Request/{uuid}/`) and call
records (`GET .../Call/{uuid}/`, `GET .../Call/?...`). Also `GET /__sim/api|faults|records|live|callees` and
`POST /__sim/lose-hangup {"to": N, "count": 1}`.

It keeps its OWN copy of the Plivo XML grammar (player.py) and of the `sip_headers` rules (call_api.py) on
purpose: it is an independent oracle for the product, so a mistake in chalicelib's copy cannot hide
behind the same mistake here. Only the V3 signer is shared (devtools.events, itself checked against
plivo-python).

call_api.py: the REST Call API subset and call control/records; callee.py: scripts;
player.py: plays each call; server.py: the HTTP server, the /__sim
control endpoints, in-process and process modes; __main__.py: `python -m devtools.plivo_sim`.
"""

from devtools.plivo_sim.call_api import parse_sip_headers, validate_call
from devtools.plivo_sim.player import InvalidAnswerXml, parse_answer_xml
from devtools.plivo_sim.server import PlivoSimulator, main

__all__ = [
    "InvalidAnswerXml",
    "PlivoSimulator",
    "main",
    "parse_answer_xml",
    "parse_sip_headers",
    "validate_call",
]
