"""bench/fast_moto.py's write-side parts against moto's own: single-item writes keep the index views right,
the write replies and errors are moto's, and its server keeps connections open without mixing replies."""

from __future__ import annotations

import random
import threading
from decimal import Decimal

import boto3
import botocore.exceptions
import pytest
from boto3.dynamodb.conditions import Attr, Key
from moto import mock_aws

from bench import fast_moto
from devtools import local_aws
from tests.bench.test_bench_smoke import calls_table, query_pages

STATUSES = ("pending", "dialing", "placed", "completed")


def _all(enabled: bool) -> None:
    for part in fast_moto.ENABLED:
        fast_moto.ENABLED[part] = enabled


def _pages_both_ways(table, kwargs: dict) -> None:
    fast = query_pages(table, kwargs)
    fast_moto.ENABLED["query"] = False
    try:
        assert query_pages(table, kwargs) == fast, kwargs
    finally:
        fast_moto.ENABLED["query"] = True


def _random_write(rng: random.Random, i: int) -> tuple[str, dict]:
    call_id = f"job-{rng.randrange(60):03d}"
    kind = rng.choice(["claim", "move", "put", "delete", "typo", "grow"])
    if kind == "claim":  # the launcher's claim: conditional, ReturnValues ALL_NEW
        return "update_item", {
            "Key": {"call_id": call_id},
            "UpdateExpression": "SET #s = :d, updated_at = :now ADD attempts :one",
            "ConditionExpression": "#s = :p AND due_at <= :now",
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": {":d": "dialing", ":p": "pending", ":now": i, ":one": 1},
            "ReturnValues": "ALL_NEW",
        }
    if kind == "move":  # a new due time and status: the item moves within and between index groups
        return "update_item", {
            "Key": {"call_id": call_id},
            "UpdateExpression": "SET #s = :s, due_at = :due REMOVE last_error",
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": {":s": rng.choice(STATUSES), ":due": rng.randrange(40)},
            "ReturnValues": rng.choice(["NONE", "ALL_OLD", "UPDATED_NEW", "UPDATED_OLD"]),
        }
    if kind == "put":
        item = {"call_id": call_id, "status": rng.choice(STATUSES), "due_at": Decimal(rng.randrange(40))}
        if rng.random() < 0.5:
            item["campaign"] = rng.choice("AB")
        return "put_item", {"Item": item, "ReturnValues": rng.choice(["NONE", "ALL_OLD"])}
    if kind == "delete":
        return "delete_item", {"Key": {"call_id": call_id}, "ReturnValues": "ALL_OLD"}
    if kind == "typo":  # moto refuses it: the same error both ways, nothing changed
        return "update_item", {
            "Key": {"call_id": call_id},
            "UpdateExpression": "SET #s = = :s",
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": {":s": "x"},
        }
    return "update_item", {  # grow a list, an item the index does not hold (no due_at) included
        "Key": {"call_id": call_id},
        "UpdateExpression": "SET uuids = list_append(if_not_exists(uuids, :empty), :u)",
        "ExpressionAttributeValues": {":empty": [], ":u": [f"u{i}"]},
        "ReturnValues": "UPDATED_NEW",
    }


def _outcome(table, method: str, kwargs: dict):
    try:
        reply = getattr(table, method)(**kwargs)
    except botocore.exceptions.ClientError as exc:
        return ("error", exc.response["Error"]["Code"], exc.response["Error"]["Message"])
    reply.pop("ResponseMetadata", None)
    reply.get("ConsumedCapacity", {}).pop("TableName", None)  # the two tables' names differ
    return reply


def test_single_item_writes_give_moto_s_replies_and_keep_the_index_views_right():
    """Two tables get the same 200 random single-item writes: one with every fast_moto part on, one with
    every part off (moto itself). Replies, errors and the final items match, and after every write each
    index's pages from the kept view equal moto's own."""
    fast_moto.install()
    rng = random.Random(11)
    with mock_aws():
        tables = []
        for name in ("fast-writes", "moto-writes"):
            table = calls_table(name)
            with table.batch_writer() as batch:
                for i in range(50):
                    batch.put_item(
                        Item={
                            "call_id": f"job-{i:03d}",
                            "status": STATUSES[i % 4],
                            "due_at": Decimal(i % 25),
                            **({"campaign": "AB"[i % 2]} if i % 3 else {}),
                        }
                    )
            tables.append(table)
        fast, slow = tables
        queries = [
            {"IndexName": "status-due_at-index", "KeyConditionExpression": Key("status").eq("pending")},
            {
                "IndexName": "status-due_at-index",
                "KeyConditionExpression": Key("status").eq("dialing") & Key("due_at").lte(20),
                "Limit": 4,
            },
            {
                "IndexName": "campaign-due_at-index",
                "KeyConditionExpression": Key("campaign").eq("A"),
                "ScanIndexForward": False,
                "Limit": 3,
            },
            {
                "IndexName": "campaign-due_at-index",
                "KeyConditionExpression": Key("campaign").eq("B") & Key("due_at").between(5, 30),
                "FilterExpression": Attr("status").ne("completed"),
            },
        ]
        try:
            for kwargs in queries:  # build the views before the writes
                _pages_both_ways(fast, kwargs)
            for i in range(200):
                method, kwargs = _random_write(rng, i)
                _all(True)
                got = _outcome(fast, method, kwargs)
                _all(False)
                want = _outcome(slow, method, kwargs)
                _all(True)
                assert got == want, (i, method, kwargs)
                for kwargs in queries:
                    _pages_both_ways(fast, kwargs)
            _all(False)
            assert sorted(slow.scan()["Items"], key=str) == sorted(fast.scan()["Items"], key=str)
        finally:
            _all(True)


def test_the_server_keeps_dynamodb_connections_open_and_answers_each_request_its_own():
    """Four threads, 60 requests each on kept-alive connections: every reply is its own request's, and
    the connections opened are about one per thread (werkzeug's own server opens one per request)."""
    import urllib3.connection

    opened = []
    real_new_conn = urllib3.connection.HTTPConnection._new_conn

    def counting_new_conn(self):
        opened.append(1)
        return real_new_conn(self)

    with fast_moto.FastMotoServer() as server:
        env = local_aws.aws_env(server.url)
        client = boto3.client(
            "dynamodb",
            endpoint_url=server.url,
            region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        local_aws.ensure_table(client, "kept")
        urllib3.connection.HTTPConnection._new_conn = counting_new_conn
        failures: list[str] = []
        try:

            def worker(n: int) -> None:
                for i in range(60):
                    call_id = f"t{n}-{i}"
                    client.put_item(TableName="kept", Item={"call_id": {"S": call_id}, "n": {"N": str(i)}})
                    item = client.get_item(TableName="kept", Key={"call_id": {"S": call_id}})["Item"]
                    if item != {"call_id": {"S": call_id}, "n": {"N": str(i)}}:
                        failures.append(f"{call_id}: {item}")

            threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
        finally:
            urllib3.connection.HTTPConnection._new_conn = real_new_conn
        assert failures == []
        assert len(opened) <= 8, len(opened)  # 480 requests
        count = client.scan(TableName="kept", Select="COUNT")["Count"]
        assert count == 240
        # anything that is not a DynamoDB call still gets werkzeug's own closing reply
        import requests

        reply = requests.get(f"{server.url}/moto-api/", timeout=10)
        assert reply.status_code == 200
        assert reply.headers.get("Connection") == "close"


@pytest.mark.parametrize("expression", ["SET a = :v", "SET #n = :v, b = if_not_exists(b, :v)"])
def test_an_update_expression_is_parsed_once_and_each_request_still_gets_its_own_values(expression):
    fast_moto.install()
    with mock_aws():
        table = calls_table("once")
        names = {"#n": "a"} if "#n" in expression else {}
        for value in ("first", "second", "third"):
            table.update_item(
                Key={"call_id": "x"},
                UpdateExpression=expression,
                ExpressionAttributeValues={":v": value},
                **({"ExpressionAttributeNames": names} if names else {}),
            )
            assert table.get_item(Key={"call_id": "x"})["Item"]["a"] == value
