"""`callflow events tail`: print callflow's outcome events as they arrive on an SQS queue that an
EventBridge rule feeds (`make run` creates both on the local stack)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import click

from callflow_cli.errors import UserError

DEFAULT_QUEUE = "callflow-events"


@click.group("events")
def events() -> None:
    """callflow's EventBridge events (Call Placed, Call Completed, Call Result ...)."""


def _queue_url(sqs: Any, queue: str | None) -> str:
    name = queue or os.environ.get("EVENTS_QUEUE_URL") or DEFAULT_QUEUE
    if name.startswith(("http://", "https://")):
        return name
    try:
        return str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
    except sqs.exceptions.QueueDoesNotExist:
        raise UserError(
            f"no SQS queue {name!r}: point an EventBridge rule for source 'callflow' at a queue and pass "
            "--queue (or set EVENTS_QUEUE_URL); `make run` creates callflow-events"
        ) from None


def line_for(message_body: str) -> str:
    """One readable line per event: time, detail-type, then the detail's fields."""
    try:
        envelope = json.loads(message_body)
    except ValueError:
        return message_body.strip()
    if not isinstance(envelope, dict):
        return message_body.strip()
    raw = envelope.get("detail")
    detail: dict[str, Any] = raw if isinstance(raw, dict) else {}
    fields = " ".join(
        f"{key}={detail[key]}"
        for key in ("call_id", "campaign", "attempt", "status", "outcome", "result")
        if detail.get(key) not in (None, "")
    )
    when = envelope.get("time") or ""
    return f"{when} {envelope.get('detail-type', '?')}: {fields} id={detail.get('id', '')}".strip()


@events.command("tail")
@click.option("--queue", help="SQS queue name or URL (default EVENTS_QUEUE_URL, else callflow-events)")
@click.option("--once", is_flag=True, help="print what is waiting, then stop (default: keep following)")
@click.option("--json", "as_json", is_flag=True, help="print each event as the JSON EventBridge delivered")
def events_tail(queue: str | None, once: bool, as_json: bool) -> None:
    """Print events as they arrive (Ctrl-C stops); each is removed from the queue once printed."""
    import boto3

    sqs = boto3.client("sqs")
    url = _queue_url(sqs, queue)
    idle_since = time.monotonic()
    while True:
        reply = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1 if once else 10)
        messages = reply.get("Messages", [])
        for message in messages:
            click.echo(message["Body"] if as_json else line_for(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        if messages:
            idle_since = time.monotonic()
        elif once and time.monotonic() - idle_since >= 1.0:
            return
