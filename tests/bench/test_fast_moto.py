"""bench/fast_moto.py's write-side parts against moto's own: single-item writes keep the index views right,
the write replies and errors are moto's, and its server keeps connections open without mixing replies."""

from __future__ import annotations

import json
import random
import threading
from decimal import Decimal

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
    except (
        ValueError,
        KeyError,
    ) as exc:  # moto in-process lets some parse errors out as they are (a server: a 500)
        return ("raised", type(exc).__name__, str(exc))
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
        client = local_aws.client("dynamodb", server.url)
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


BASE_ITEM = {
    "call_id": "x",
    "status": "pending",
    "due_at": Decimal(5),
    "a": "text",
    "n": Decimal(3),
    "l": ["one", "two", "three"],
    "m": {"k1": {"k2": "deep"}, "k3": Decimal(1)},
    "s": {"red", "green"},
}
VALUES = {
    ":v": "value",
    ":w": "other",
    ":one": Decimal(1),
    ":lst": ["four"],
    ":nolist": [],
    ":set": {"blue"},
    ":str": "seven",
    ":empty": "",
    ":map": {"inner": {"deeper": ["x", Decimal(2)]}},
}
UPDATES = [
    "SET a = :v",
    "SET a = :v, b = :w REMOVE m.k3",
    "SET #n.k3 = :v",
    "SET m.k1.k2 = :v, m.k9 = :map",
    "SET m.nope.k2 = :v",  # a missing map on the way: ValidationException
    "SET l[1] = :v, l[7] = :w",
    "SET l = list_append(l, :lst)",
    "SET l = list_append(:lst, l), z = list_append(if_not_exists(z, :nolist), :lst)",
    "SET n = n + :one, o = n - :one",
    "SET p = if_not_exists(missing, :one) + :one",
    "ADD n :one, s :set, newset :set",
    "DELETE s :set",
    "REMOVE l[0], l[2], m.k1",
    "SET a = :missing",  # an undefined value
    "SET #missing = :v",  # an undefined name
    "SET call_id = :v",  # the table's key
    "SET a = :v, a = :w",  # overlapping paths
    "SET a = :v REMOVE a",
    "SET n = :str + :one",  # type mismatch
    "ADD a :one",
    "SET a = :empty",
    "SET #s = :empty",  # an index key: empty string refused
    "SET #s = :v, due_at = :one",
    "SET a = size(l)",  # not an update function: refused by the parser
    "SET l[0] = l[1], l[1] = l[0]",
    "SET a = :v SET b = :w",  # one clause of each kind: TooManyClauses
    "REMOVE a REMOVE m.k3",
    "SET a = :v REMOVE m.k3 SET b = :w",
    "ADD n :one REMOVE a ADD n :one",
    "SET a = :v REMOVE b ADD n :one DELETE s :set",
]
CONDITIONS = [
    "a = :v",
    "#s = :p AND due_at <= :ten",
    "attribute_not_exists(zz) OR zz = :v",
    "attribute_type(n, :N) AND attribute_exists(#s)",
    "#s = :p AND due_at <= :ten AND (attribute_not_exists(attempts) OR attribute_type(attempts, :N))",
    "size(l) > :one",
    "NOT (a = :w)",
    "a IN (:v, :w)",
    "n BETWEEN :one AND :ten",
    "begins_with(a, :t) OR contains(l, :two)",
    "m.k1.k2 = :deep AND l[0] = :first",
    "a <> :v",
    "a = :w",  # false: ConditionalCheckFailed
    "((a = :v))",
    "a = = :v",  # syntax
    "a = :missing",
    "#missing = :v",
    "status = :p",  # a reserved word
    "size(a) = :one AND",
]
CONDITION_VALUES = {
    ":v": "text",
    ":w": "other",
    ":p": "pending",
    ":ten": Decimal(10),
    ":one": Decimal(1),
    ":N": "N",
    ":t": "te",
    ":two": "two",
    ":deep": "deep",
    ":first": "one",
}


def test_update_expressions_validate_and_apply_as_moto_s_own():
    """The traversal and tree-copy parts against moto's own validator over the expression shapes DynamoDB
    allows (and some it refuses), with each ReturnValues: the same reply or error and the same stored item,
    twice in a row (the second time from the cached tree). One pair of tables, the item reset per case."""
    fast_moto.install()
    with mock_aws():
        fast, slow = (calls_table(name) for name in ("fast-update", "moto-update"))
        try:
            for expression in UPDATES:
                names = {k: v for k, v in {"#n": "m", "#s": "status"}.items() if k in expression}
                if "#missing" in expression:
                    names["#other"] = "a"
                values = {k: v for k, v in VALUES.items() if k in expression.replace(":missing", "")}
                for return_values in ("NONE", "ALL_NEW", "UPDATED_OLD"):
                    case = (expression, return_values)
                    _all(False)
                    for table in (fast, slow):
                        table.put_item(Item=BASE_ITEM)
                    kwargs = {
                        "Key": {"call_id": "x"},
                        "UpdateExpression": expression,
                        "ReturnValues": return_values,
                    }
                    if names:
                        kwargs["ExpressionAttributeNames"] = names
                    if values:
                        kwargs["ExpressionAttributeValues"] = values
                    for _ in range(2):
                        _all(True)
                        got = _outcome(fast, "update_item", kwargs)
                        _all(False)
                        want = _outcome(slow, "update_item", kwargs)
                        assert got == want, case
                    _all(False)
                    stored = [t.get_item(Key={"call_id": "x"}).get("Item") for t in (fast, slow)]
                    assert stored[0] == stored[1], case
        finally:
            _all(True)


def test_condition_expressions_apply_as_moto_s_own():
    """The `conditions` part (tokens kept per expression) against moto's lexer: each condition, true,
    false or refused, gives the same reply or error and stored item, twice in a row (the second time from
    the kept tokens), with the values of each request its own."""
    fast_moto.install()
    with mock_aws():
        fast, slow = (calls_table(name) for name in ("fast-condition", "moto-condition"))
        try:
            for condition in CONDITIONS:
                names = {k: v for k, v in {"#s": "status", "#missing": None}.items() if k in condition and v}
                values = {k: v for k, v in CONDITION_VALUES.items() if k in condition or k == ":v"}
                for round_ in range(2):
                    _all(False)
                    for table in (fast, slow):
                        table.put_item(Item=BASE_ITEM)
                    kwargs = {
                        "Key": {"call_id": "x"},
                        "UpdateExpression": "SET a = :v, r = :round",
                        "ConditionExpression": condition,
                        "ExpressionAttributeValues": {**values, ":round": round_},
                        "ReturnValues": "ALL_NEW",
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                    if names:
                        kwargs["ExpressionAttributeNames"] = names
                    _all(True)
                    got = _outcome(fast, "update_item", kwargs)
                    _all(False)
                    want = _outcome(slow, "update_item", kwargs)
                    assert got == want, condition
                    stored = [t.get_item(Key={"call_id": "x"}).get("Item") for t in (fast, slow)]
                    assert stored[0] == stored[1], condition
            # the cases above reach both ends: a condition that holds, and one that fails
            outcomes = [
                _outcome(
                    fast,
                    "update_item",
                    {
                        "Key": {"call_id": "x"},
                        "UpdateExpression": "SET a = :v",
                        "ConditionExpression": condition,
                        "ExpressionAttributeValues": {":v": "text"},
                    },
                )
                for condition in ("a = :v", "a <> :v")
            ]
            assert isinstance(outcomes[0], dict), outcomes[0]
            assert outcomes[1][:2] == ("error", "ConditionalCheckFailedException"), outcomes[1]
        finally:
            _all(True)


def test_the_tree_copy_equals_deepcopy_and_shares_nothing():
    from copy import deepcopy

    from moto.dynamodb.parsing.expressions import UpdateExpressionParser

    fast_moto.install()

    def shape(node, parent=None):
        if not hasattr(node, "children"):
            return node
        assert node.parent is parent
        return (type(node).__name__, node.type, [shape(c, node) for c in node.children or []])

    def nodes(node):
        yield node
        for child in getattr(node, "children", None) or []:
            if hasattr(child, "children"):
                yield from nodes(child)

    for expression in UPDATES[:13] + UPDATES[16:19]:
        tree = UpdateExpressionParser.make(expression)
        fast = fast_moto._clone_tree(tree, None)
        assert shape(fast) == shape(deepcopy(tree)) == shape(tree)
        assert not {id(n) for n in nodes(fast)} & {id(n) for n in nodes(tree)}
        assert all(
            f.children is not t.children for f, t in zip(nodes(fast), nodes(tree), strict=True) if t.children
        )


AUTH = (
    "AWS4-HMAC-SHA256 Credential=testing/20261202/us-east-1/dynamodb/aws4_request, "
    "SignedHeaders=host;x-amz-target, Signature=0"
)
JSON_10 = "application/x-amz-json-1.0"


def _call(target: str, body) -> tuple[str, str, list[tuple[str, str]], bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = [
        ("X-Amz-Target", f"DynamoDB_20120810.{target}"),
        ("Content-Type", JSON_10),
        ("Authorization", AUTH),
    ]
    return "POST", "/", headers, data


ITEM = {"call_id": {"S": "a"}, "status": {"S": "pending"}, "due_at": {"N": "5"}, "n": {"N": "1"}}
RAW_REQUESTS = [
    _call("PutItem", {"TableName": "raw", "Item": ITEM}),
    _call(
        "PutItem", {"TableName": "raw", "Item": {**ITEM, "call_id": {"S": "b"}}, "ReturnValues": "ALL_OLD"}
    ),
    _call("GetItem", {"TableName": "raw", "Key": {"call_id": {"S": "a"}}}),
    _call("GetItem", {"TableName": "nope", "Key": {"call_id": {"S": "a"}}}),
    _call(
        "UpdateItem",
        {
            "TableName": "raw",
            "Key": {"call_id": {"S": "a"}},
            "UpdateExpression": "SET #s = :d ADD n :one",
            "ConditionExpression": "#s = :p AND due_at <= :now",
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": {
                ":d": {"S": "dialing"},
                ":p": {"S": "pending"},
                ":now": {"N": "9"},
                ":one": {"N": "1"},
            },
            "ReturnValues": "ALL_NEW",
        },
    ),
    _call(  # the same again: the condition now fails
        "UpdateItem",
        {
            "TableName": "raw",
            "Key": {"call_id": {"S": "a"}},
            "UpdateExpression": "SET #s = :d",
            "ConditionExpression": "#s = :p",
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": {":d": {"S": "dialing"}, ":p": {"S": "pending"}},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        },
    ),
    _call(
        "UpdateItem",
        {
            "TableName": "raw",
            "Key": {"call_id": {"S": "a"}},
            "UpdateExpression": "SET a = :v",
            "ConditionExpression": "a = = b",
            "ExpressionAttributeValues": {":v": {"S": "x"}},
        },
    ),
    _call(
        "UpdateItem",
        {
            "TableName": "raw",
            "Key": {"call_id": {"S": "a"}},
            "UpdateExpression": "SET a = :v SET b = :v",
            "ExpressionAttributeValues": {":v": {"S": "x"}},
        },
    ),
    _call(
        "Query",
        {
            "TableName": "raw",
            "IndexName": "status-due_at-index",
            "KeyConditionExpression": "#s = :p AND due_at <= :now",
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": {":p": {"S": "pending"}, ":now": {"N": "9"}},
            "Limit": 1,
        },
    ),
    _call(
        "BatchGetItem",
        {"RequestItems": {"raw": {"Keys": [{"call_id": {"S": "a"}}, {"call_id": {"S": "zz"}}]}}},
    ),
    _call("Scan", {"TableName": "raw", "Limit": 5}),
    _call("DeleteItem", {"TableName": "raw", "Key": {"call_id": {"S": "b"}}, "ReturnValues": "ALL_OLD"}),
    _call("PutItem", b"{not json"),
    _call("PutItem", {"TableName": "raw"}),
    _call("Bogus", {}),  # moto has no such handler: a 500
    (
        "POST",
        "/",
        [*_call("GetItem", {})[2], ("Origin", "https://example.com")],
        json.dumps({"TableName": "raw", "Key": {"call_id": {"S": "a"}}}).encode(),
    ),
    (
        "POST",
        "/?x=1",
        _call("GetItem", {})[2],
        json.dumps({"TableName": "raw", "Key": {"call_id": {"S": "a"}}}).encode(),
    ),
    (
        "POST",
        "/other",
        _call("GetItem", {})[2],
        json.dumps({"TableName": "raw", "Key": {"call_id": {"S": "a"}}}).encode(),
    ),
    ("GET", "/", _call("GetItem", {})[2], b""),
    (
        "POST",
        "/",
        [
            ("x-amz-target", "DynamoDB_20120810.GetItem"),
            ("content-type", JSON_10),
            ("authorization", AUTH),
            ("X-Odd", "caf\u00e9"),
            ("X-Odd", "twice"),
        ],
        json.dumps({"TableName": "raw", "Key": {"call_id": {"S": "a"}}}).encode(),
    ),
]


def _raw_replies(off: str) -> list:
    """Every RAW_REQUESTS reply of a fresh fast_moto server with FAST_MOTO_OFF=off: status, headers in
    order (Date and the request id blanked: they differ per reply) and body."""
    import http.client
    import os

    replies = []
    server = fast_moto.FastMotoServer().start(env={**os.environ, "FAST_MOTO_OFF": off})
    try:
        client = local_aws.client("dynamodb", server.url)
        local_aws.ensure_table(client, "raw")
        host, port = server.url.rsplit("//", 1)[1].split(":")
        for method, path, headers, body in RAW_REQUESTS:
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            conn.putrequest(method, path, skip_accept_encoding=True)
            for name, value in [*headers, ("Content-Length", str(len(body)))]:
                conn.putheader(name, value.encode("latin-1"))
            conn.endheaders(body)
            reply = conn.getresponse()
            blank = {"date", "x-amzn-requestid"}
            replies.append(
                (
                    (method, path, headers[0]),
                    reply.status,
                    [(k, "-" if k.lower() in blank else v) for k, v in reply.getheaders()],
                    reply.read(),
                )
            )
            conn.close()
    finally:
        server.stop()
    return replies


def test_dynamodb_requests_skip_flask_and_get_moto_s_replies_over_a_socket():
    """The `dispatch` and `headers` parts against moto's Flask app and the email parser: a fresh server
    each way, the same requests (writes, reads, failed conditions, syntax errors, a 500, a bad body, and
    what must still go through Flask: an Origin, a query string, another path, GET) give the same status,
    headers in the same order, and bodies."""
    fast = _raw_replies("")
    slow = _raw_replies("dispatch,headers")
    for got, want in zip(fast, slow, strict=True):
        assert got == want
    statuses = [reply[1] for reply in fast]
    assert statuses.count(200) >= 8 and 400 in statuses and 500 in statuses, statuses


HEADER_BLOCKS = [
    b"Host: x\r\nA:  b \r\n\r\n",
    b"Host: x\r\n\r\n",
    b"\r\n",
    b"",
    b"Host: x\r\n",  # no blank line: the stream ended
    b"A: b\r\n c\r\n\r\n",  # folded
    b"A: b\r\n\tc\r\n\r\n",
    b"A b: c\r\n\r\n",  # a space in the name
    b"A: b\n\n",  # bare LF
    b"A: b\r\nC: d\n\r\n",
    b"From x\r\n\r\n",
    b"A: \xe9\xff\r\n\r\n",
    b"A:\tb\r\n\r\n",
    b"A:b\rc\r\n\r\n",
    b":x\r\n\r\n",
    b"A:\r\nB: \r\n\r\n",
    b"A: b\r\nA: c\r\na: d\r\n\r\n",
    b"X-Amz-Target: DynamoDB_20120810.GetItem\r\nContent-Length: 10\r\n\r\n",
]


@pytest.mark.parametrize("block", HEADER_BLOCKS)
def test_request_headers_parse_as_the_email_parser_parses_them(block):
    import email.parser
    import http.client
    import io

    lines = http.client._read_headers(io.BytesIO(block))
    fast = fast_moto._header_message(lines, fast_moto._RequestHeaders)
    slow = email.parser.Parser(_class=fast_moto._RequestHeaders).parsestr(
        b"".join(lines).decode("iso-8859-1")
    )

    def state(message):
        fields = dict(vars(message))
        fields["defects"] = [(type(d), str(d)) for d in fields["defects"]]
        return fields

    assert state(fast) == state(slow)
    assert fast.items() == slow.items()
