"""One launcher pass that dies mid-flight, for test_faults_crash.py. Not a test module.

Run as a process against a moto server and the Plivo simulator (their URLs come in the environment,
AWS_ENDPOINT_URL and PLIVO_API_URL). The real pass (`chalicelib.handlers.launch`) runs with a botocore
hook on the app's own DynamoDB client that kills the process with os._exit, like a Lambda that times out
or runs out of memory, at one of two moments:

  after-claim   right after DynamoDB accepted a claim (pending -> dialing), before any call is placed
  after-dial    right before the launcher records Plivo's answer (the call was placed)

It prints `KILLED <call_id>` just before dying; exit code 17 means the kill happened. With `dialling` it
hooks nothing: it dials with a 3 s dialling lease renewed every second (so a test need not wait 30 s for a
dead holder's lease), and the test kills it from outside whenever it likes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

KILLED = 17


def main(moment: str) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from chalicelib import handlers, resources

    events = resources.dynamodb_resource().meta.client.meta.events

    def die(call_id: str) -> None:
        sys.stdout.write(f"KILLED {call_id}\n")
        sys.stdout.flush()
        os._exit(KILLED)

    def after_claim(http_response=None, parsed=None, **_):
        attributes = (parsed or {}).get("Attributes") or {}
        if (
            http_response is not None
            and http_response.status_code == 200
            and attributes.get("status") == {"S": "dialing"}
        ):
            die(attributes["call_id"]["S"])

    def before_result(params=None, **_):
        body = (params or {}).get("body") or b""
        text = body.decode() if isinstance(body, bytes) else str(body)
        import json

        try:
            request = json.loads(text)
        except ValueError:
            return
        # the result write after a dial (mark_placed/release) is conditioned on the job still `dialing`;
        # the claim is conditioned on `pending`
        if str(request.get("ConditionExpression", "")).startswith("#s = :dialing"):
            die(request["Key"]["call_id"]["S"])

    if moment == "dialling":
        from chalicelib.calls import pacing

        pacing.LEASE_SECONDS, pacing.RENEW_EVERY = 3.0, 1.0
    elif moment == "after-claim":
        events.register("after-call.dynamodb.UpdateItem", after_claim)
    elif moment == "after-dial":
        events.register("before-call.dynamodb.UpdateItem", before_result)
    else:
        raise SystemExit(f"unknown moment {moment!r}")
    summary = handlers.launch()
    print(f"SURVIVED {summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
