"""moto server for the campaign benches, with three of its DynamoDB costs brought down to DynamoDB's own
order: `python -m bench.fast_moto -H HOST -p PORT` (the arguments of `python -m moto.server`).

moto 5 spends, per item of a Query/Scan/BatchGetItem reply, milliseconds in its generic shape-driven
serializer (a 500-item page: about 1.3 s), and per Query page it sorts the whole table, then the matching
items, then walks to the page's start key: a paged read of 100 000 jobs is quadratic there (hours), where
DynamoDB's cost is per page. What this changes, in this process only (moto itself is not touched):

- `serialize`: the replies of read operations whose result is DynamoDB JSON already (moto builds it) are
  written with `json.dumps` instead of the generic serializer. `fast_body` returns None (the slow path)
  for anything it is not sure of; tests/bench/test_bench_smoke.py checks both agree on realistic items.
- `parse`: the JSON body of BatchWriteItem / PutItem is taken as it is (DynamoDB JSON is the wire form
  already) unless it holds binary values.
- `item`: a new Item sums its size once, not once per attribute (moto's check is quadratic in attributes).
- `query`: a Query over a global secondary index reads from a per-index sorted list kept until the next
  write to that table (any request that is not a read); the page is found by bisection, so a page costs
  O(page + log n) between writes, as in DynamoDB. The list holds the same Item objects moto's own query
  returns, in the same order (moto's sort key: index hash, table hash, index range, table range), so
  results, LastEvaluatedKey and ScannedCount are moto's.

- `expressions`: an UpdateExpression is parsed once per distinct expression, not twice per request.
- `traversal`: the ten passes that validate an UpdateExpression's tree find each node's handler once per
  (pass, node class), not by building the pass's handler table and testing the node against every
  abstract class in it at every node (a third of an UpdateItem's CPU); same handlers, same order. The
  validator's copy of the parsed tree (nodes holding `type`, `children`, `parent` and plain scalars) is
  built node by node instead of by `copy.deepcopy`; any other tree goes to `deepcopy`.
- `lookup`: the handler methods of a response class are listed once, not with `inspect.getmembers` per
  request.
- `conditions`: a ConditionExpression is split into tokens once per distinct expression (moto lexes it
  with a dozen regular expressions, compiled per token, on every request); the names and values are
  still looked up per request.
- `actions`: the pass that allows one SET, REMOVE and ADD clause counts the clauses once, at the root;
  moto recounts the whole subtree at every nested UpdateExpression node. A tree it would refuse goes
  through moto's own pass, so the error raised is moto's.
- `headers`: a request's header block is split by one regular expression, not by the email package's
  feed parser (a tenth of a request's CPU); a block with anything unusual in it (a folded line, a name
  outside RFC 5322's characters, a bare LF, no blank line at the end) still goes to the email parser.
- `dispatch`: a DynamoDB request goes from the WSGI call straight to moto's DynamoDB handler, as moto's
  Flask view would hand it over (same request object, same reply and headers, CORS's `*` included),
  without Flask's request context, URL routing and response processing around it. Anything else
  (another service, another path or method, a request with an Origin) still goes through Flask.
- garbage collection: no full collections (they walk every stored item, holding the GIL for seconds).
- `server`: keep-alive HTTP connections, the backend of a host looked up once, no log line per request
  (not even formatted).

The product's code, its requests and the benches' clients are unchanged; only the stand-in answers faster.
"""

from __future__ import annotations

import bisect
import copy
import email.parser
import gc
import http.client
import inspect
import json
import os
import re
import sys
import threading
from collections import deque
from collections.abc import Callable
from decimal import InvalidOperation
from typing import Any

from devtools import local_aws
from devtools.local_aws import MotoServer

READS = frozenset({"Query", "Scan", "GetItem", "BatchGetItem"})
# Replies written with json.dumps: the reads and the single-item writes (an item's DynamoDB JSON or nothing).
FAST_SERIALIZE = READS | {"UpdateItem", "PutItem", "DeleteItem"}
FAST_PARSE = frozenset({"BatchWriteItem", "PutItem"})
CONTENT_TYPE = "application/x-amz-json-1.0"
GC_YOUNG = 10_000
GC_FULL_NEVER = 1 << 30
SEED_PROCESSES = 3  # client processes seeding: boto3's request building is as costly as moto's put


def fast_body(result: Any) -> str | None:
    """The JSON body of a read's reply, or None when it holds anything but JSON-native values."""
    try:
        return json.dumps(result, separators=(",", ":"))
    except (TypeError, ValueError):
        return None


def _has_binary(value: Any) -> bool:
    if isinstance(value, dict):
        return any(k in ("B", "BS") or _has_binary(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_binary(v) for v in value)
    return False


ENABLED = {
    "serialize": True,
    "parse": True,
    "query": True,
    "item": True,
    "server": True,
    "expressions": True,
    "traversal": True,
    "lookup": True,
    "conditions": True,
    "actions": True,
    "dispatch": True,
    "headers": True,
}  # tests switch a part off to compare with moto
_installed = False
# One DynamoDB request at a time: DynamoDB applies each request atomically (moto does not serialize them,
# so its conditional writes race), and the index views below change only between requests.
_serial = threading.RLock()
# (table, index) -> (the moto Table object, hash attribute, range attribute, groups): a sorted view of one
# index, kept right through single-item writes and dropped on any other write.
_cache: dict[tuple[str, str], tuple[Any, str, str, dict]] = {}
SINGLE_WRITES = frozenset({"UpdateItem", "PutItem", "DeleteItem"})


def _forget(table: str | None) -> None:
    for cached in [k for k in _cache if table is None or k[0] == table]:
        del _cache[cached]


def install() -> None:
    """Patch moto's DynamoDB handler and Table in this process (once)."""
    global _installed
    if _installed:
        return
    _installed = True
    from moto.core import responses as core_responses
    from moto.dynamodb import responses as ddb_responses
    from moto.dynamodb.models import table as ddb_table

    if ENABLED["server"]:
        _install_server()
    _install_dispatch()
    handler = ddb_responses.DynamoHandler
    result_cls = ddb_responses.DynamoResult
    slow_execute = result_cls.execute_result

    def execute_result(self: Any, context: Any) -> Any:
        if ENABLED["serialize"] and context.operation_model.name in FAST_SERIALIZE:
            body = fast_body(self.result)
            if body is not None:
                return 200, {"Content-Type": CONTENT_TYPE}, body
        return slow_execute(self, context)

    result_cls.execute_result = execute_result

    slow_parse = core_responses.BaseResponse.parse_parameters

    def parse_parameters(self: Any, request: Any) -> None:
        if ENABLED["parse"] and self._get_action() in FAST_PARSE:
            try:
                params = json.loads(request.data or b"{}")
            except ValueError:
                params = None
            if isinstance(params, dict) and not _has_binary(params):
                self.params = params
                return
        slow_parse(self, request)

    handler.parse_parameters = parse_parameters

    slow_call = handler.call_action

    def call_action(self: Any) -> Any:
        action = self._get_action()
        with _serial:
            if action in READS or action in ("DescribeTable", "ListTables"):
                return slow_call(self)
            body = getattr(self, "params", None) or {}
            names = _tables_named(body)
            item = _single_item(self, action, body, names) if ENABLED["query"] else None
            if item is None:
                for name in names or [None]:
                    _forget(name)
                return slow_call(self)
            table, key = item
            _move(table, key, out=True)
            try:
                return slow_call(self)
            finally:
                _move(table, key, out=False)

    handler.call_action = call_action

    from moto.dynamodb.parsing.expressions import UpdateExpressionParser

    slow_make = UpdateExpressionParser.make.__func__  # type: ignore[attr-defined]
    parsed: dict[str, Any] = {}

    def make(cls: Any, expression: str) -> Any:
        # moto parses an UpdateExpression twice per request; its validator deep-copies the tree before it
        # changes anything, and the other reader only looks, so one tree per expression serves them all.
        if not ENABLED["expressions"] or not isinstance(expression, str):
            return slow_make(cls, expression)
        tree = parsed.get(expression)
        if tree is None:
            tree = slow_make(cls, expression)  # a parse error raises here, every time, as moto's does
            if len(parsed) < 4096:
                parsed[expression] = tree
        return tree

    UpdateExpressionParser.make = classmethod(make)  # type: ignore[method-assign,assignment]

    from moto.dynamodb.comparisons import ConditionExpressionParser

    slow_lex = ConditionExpressionParser._lex_condition_expression
    lexed: dict[str, tuple] = {}
    token = ConditionExpressionParser.Node

    def lex_condition_expression(self: Any) -> Any:
        # A pure function of the expression's text; moto's later steps build new nodes from these.
        expression = self.condition_expression
        if not ENABLED["conditions"] or not isinstance(expression, str):
            return slow_lex(self)
        tokens = lexed.get(expression)
        if tokens is None:
            tokens = tuple(slow_lex(self))  # a syntax error raises here, every time, as moto's does
            if len(lexed) < 4096:
                lexed[expression] = tokens
        return deque(token(t.nonterminal, t.kind, t.text, t.value, []) for t in tokens)

    ConditionExpressionParser._lex_condition_expression = lex_condition_expression  # type: ignore[method-assign]

    from moto.core import utils as core_utils
    from moto.dynamodb.parsing import ast_nodes

    slow_traverse = ast_nodes.DepthFirstTraverser.traverse

    from moto.dynamodb.parsing import validators as validator_passes

    def traverse(self: Any, node: Any) -> Any:
        if (
            ENABLED["actions"]
            and type(self) is validator_passes.ActionCountValidator
            and _counts_allowed(self, node)
        ):
            return node
        return _traverse(self, node) if ENABLED["traversal"] else slow_traverse(self, node)

    ast_nodes.DepthFirstTraverser.traverse = traverse

    from moto.dynamodb.parsing import validators

    def validator_deepcopy(value: Any, memo: Any = None) -> Any:
        plain_root = isinstance(value, ast_nodes.Node) and value.parent is None
        if ENABLED["traversal"] and memo is None and plain_root:
            try:
                return _clone_tree(value, None)
            except _NotPlain:
                pass
        return copy.deepcopy(value, memo)

    validators.deepcopy = validator_deepcopy  # type: ignore[attr-defined]

    slow_method_names = core_utils.method_names_from_class
    method_names: dict[type, list[str]] = {}

    def method_names_from_class(clazz: Any) -> list[str]:
        if not ENABLED["lookup"]:
            return slow_method_names(clazz)
        names = method_names.get(clazz)
        if names is None:
            names = method_names[clazz] = slow_method_names(clazz)
        return list(names)

    core_responses.method_names_from_class = method_names_from_class

    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models import dynamo_type

    item_cls = dynamo_type.Item
    slow_item_init = item_cls.__init__

    def item_init(self: Any, hash_key: Any, range_key: Any, attrs: dict[str, Any]) -> None:
        # moto's LimitedSizeDict re-sums the item's size on every attribute set (quadratic in attributes);
        # a new item's attributes only add up, so one sum at the end raises exactly when moto's would.
        if not ENABLED["item"]:
            return slow_item_init(self, hash_key, range_key, attrs)
        self.hash_key = hash_key
        self.range_key = range_key
        values = dynamo_type.LimitedSizeDict()
        for key, value in attrs.items():
            dict.__setitem__(values, key, dynamo_type.DynamoType(value))
        size = sum(dynamo_type.bytesize(k) + v.size() for k, v in values.items())
        if size > 405000:
            raise ItemSizeTooLarge
        self.attrs = values

    item_cls.__init__ = item_init

    table_cls = ddb_table.Table
    slow_query = table_cls.query

    signature = inspect.signature(slow_query)

    def query(self: Any, *args: Any, **kwargs: Any) -> Any:
        def slow() -> Any:
            return slow_query(self, *args, **kwargs)

        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        q = bound.arguments
        hash_conditions, range_conditions = q["hash_key_conditions"], q["range_key_conditions"]
        fast = (
            ENABLED["query"]
            and q["index_name"] is not None
            and not q["filter_kwargs"]
            and hash_conditions is not None
            and len(hash_conditions) == 1
            and (range_conditions is None or len(range_conditions) <= 1)
        )
        if fast:
            index = next((i for i in self.global_indexes or [] if i.name == q["index_name"]), None)
            fast = index is not None and _plain_schema(index)
        return _fast_query(self, index, q, slow) if fast else slow()

    table_cls.query = query


_is_node: dict[type, bool] = {}
_handler_class: dict[tuple[type, type], Any] = {}  # (pass class, node class) -> its handler's key, or None


class _NotPlain(Exception):
    """A node holds something the node-by-node copy does not know: deepcopy it instead."""


_PLAIN = (str, int, float, bool, type(None))
_NODE_FIELDS = ("type", "children", "parent")


def _clone_tree(node: Any, parent: Any, seen: set[int] | None = None) -> Any:
    """A copy of a parsed UpdateExpression tree equal to `copy.deepcopy`'s: new nodes with the same fields,
    in the same order, children copied, each `parent` the copy's parent; scalars are immutable, so kept.
    A node shared or pointing to another parent is not a plain tree (deepcopy keeps such links)."""
    seen = set() if seen is None else seen
    fields = node.__dict__
    if tuple(fields) != _NODE_FIELDS or id(node) in seen:
        raise _NotPlain
    seen.add(id(node))
    new = object.__new__(type(node))
    new.type = fields["type"]
    children = fields["children"]
    if children is None:
        new.children = None
    else:
        copied = []
        for child in children:
            if type(child) in _PLAIN:
                copied.append(child)
            elif _node_class(type(child)) and child.__dict__.get("parent") is node:
                copied.append(_clone_tree(child, new, seen))
            else:
                raise _NotPlain
        new.children = copied
    new.parent = parent
    return new


def _counts_allowed(counter: Any, root: Any) -> bool:
    """Whether the root UpdateExpression holds at most one clause of each kind. The pass checks that at
    every UpdateExpression node and changes nothing; a nested one reaches only clauses the root's count
    holds, so if the root passes, every node does."""
    from moto.dynamodb.exceptions import TooManyClauses
    from moto.dynamodb.parsing.ast_nodes import UpdateExpression

    if type(root) is not UpdateExpression or root.parent is not None:
        return False
    try:
        counter.verify_action_counts(root)
    except TooManyClauses:
        return False  # moto's own pass raises its error, from the node it finds first
    return True


def _node_class(cls: type) -> bool:
    is_node = _is_node.get(cls)
    if is_node is None:
        from moto.dynamodb.parsing.ast_nodes import Node

        is_node = _is_node[cls] = issubclass(cls, Node)
    return is_node


def _traverse(traverser: Any, root: Any) -> Any:
    """moto's DepthFirstTraverser.traverse: children first, then the node through the first entry of the
    pass's `_processing_map` it is an instance of, the result put in the parent's place. The map's keys
    are fixed per pass class (its entries are bound methods), so the match is looked up once."""
    handlers = traverser._processing_map()
    pass_class = type(traverser)

    def visit(node: Any, child_id: int) -> Any:
        node_class = type(node)
        if not _node_class(node_class):
            return node
        parent = node.parent
        if node.children is not None:
            for i, child in enumerate(node.children):
                traverser.pre_processing_of_child(node, i)
                visit(child, i)
        key = (pass_class, node_class)
        if key in _handler_class:
            handler_key = _handler_class[key]
        else:
            handler_key = _handler_class[key] = next((k for k in handlers if isinstance(node, k)), None)
        if handler_key is not None:
            node = handlers[handler_key](node)
            node.parent = parent
            if parent:
                parent.children[child_id] = node
        return node

    return visit(root, -1)


def _install_server() -> None:
    """The HTTP side: keep-alive connections (werkzeug's dev server closes every one after a reply, so each
    request cost a connect, a thread and a close on both sides; DynamoDB keeps them open), the backend of
    a host looked up once (moto lists its package directory for every request), and no log line per
    request."""
    import logging
    import selectors

    from moto.moto_server import werkzeug_app
    from werkzeug import serving

    handler = werkzeug_app.MotoRequestHandler
    slow_send_header = handler.send_header
    slow_one_request = handler.handle_one_request
    kept = threading.local()  # whether this thread's current reply keeps its connection open

    def handle_one_request(self: Any) -> None:
        kept.open = False
        slow_one_request(self)

    def send_header(self: Any, keyword: str, value: str) -> None:
        # werkzeug closes every connection (http.server cannot drain an unread body before the next
        # request line); moto reads a DynamoDB request's whole body, so those connections can stay open.
        if keyword == "Connection" and value == "close" and _drained(self):
            kept.open = True
            return
        slow_send_header(self, keyword, value)

    class DrainSelector:
        """werkzeug's after-reply drain reads whatever comes next: on a kept connection, the next request."""

        def __init__(self) -> None:
            self._real = selectors.DefaultSelector()

        def register(self, *args: Any) -> Any:
            return self._real.register(*args)

        def select(self, timeout: float | None = None) -> list:
            return [] if getattr(kept, "open", False) else self._real.select(timeout)

        def close(self) -> None:
            self._real.close()

    class Selectors:
        DefaultSelector = DrainSelector
        EVENT_READ = selectors.EVENT_READ

    slow_parse_headers = http.client.parse_headers

    def parse_headers(fp: Any, _class: Any = http.client.HTTPMessage) -> Any:
        # http.server reads a request's headers through this module function; only the server's own
        # message class takes the short way (a client in this process parses its replies as before)
        if _class is not _RequestHeaders or not ENABLED["headers"]:
            return slow_parse_headers(fp, _class)
        return _header_message(http.client._read_headers(fp), _class)  # type: ignore[attr-defined]

    http.client.parse_headers = parse_headers  # type: ignore[assignment]
    handler.MessageClass = _RequestHeaders
    handler.disable_nagle_algorithm = True  # a kept connection's reply is two writes: no 40 ms delayed ACK
    handler.handle_one_request = handle_one_request
    handler.send_header = send_header
    serving.selectors = Selectors  # type: ignore[assignment]
    werkzeug_log = logging.getLogger("werkzeug")
    werkzeug_log.setLevel(logging.WARNING)
    slow_log_request = handler.log_request

    def log_request(self: Any, code: Any = "-", size: Any = "-") -> None:
        # werkzeug formats (and colours) the request line before the logger drops it at INFO
        if werkzeug_log.isEnabledFor(logging.INFO):
            slow_log_request(self, code, size)

    handler.log_request = log_request
    dispatcher = werkzeug_app.DomainDispatcherApplication
    slow_backend = dispatcher.get_backend_for_host
    known: dict[str | None, Any] = {}

    def get_backend_for_host(self: Any, host: str | None) -> Any:
        if host not in known:
            known[host] = slow_backend(self, host)
        return known[host]

    dispatcher.get_backend_for_host = get_backend_for_host


DYNAMODB_TARGET = "DynamoDB_20120810."


def _install_dispatch() -> None:
    """DynamoDB requests from the WSGI call to moto's handler, as `convert_to_flask_response` hands them
    over, and the reply built as that view's Flask response, with the one header moto's app adds to every
    reply through flask_cors (`Access-Control-Allow-Origin: *`, for a request without an Origin)."""
    import flask
    from botocore.exceptions import ClientError
    from moto.dynamodb.responses import DynamoHandler
    from moto.moto_api import recorder
    from moto.moto_server import werkzeug_app

    dispatcher = werkzeug_app.DomainDispatcherApplication
    slow_call = dispatcher.__call__

    def wsgi_call(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
        if not (ENABLED["dispatch"] and _plain_dynamodb(environ)):
            return slow_call(self, environ, start_response)
        app = self.get_application(environ)
        if getattr(app, "service", None) != "dynamodb":
            return app(environ, start_response)
        request = werkzeug_app.BackendRequest(environ)
        recorder._record_request(request)
        try:
            result = DynamoHandler.dispatch(request, request.raw_url, dict(request.headers))
        except ClientError as exc:
            result = 400, {}, exc.response["Error"]["Message"]
        status, headers, content = result if len(result) == 3 else (200, {}, result)
        response = flask.Response(response=content, status=status, headers=headers)
        response.headers["Access-Control-Allow-Origin"] = "*"
        return response(environ, start_response)

    dispatcher.__call__ = wsgi_call  # type: ignore[method-assign]


def _plain_dynamodb(environ: dict[str, Any]) -> bool:
    """A DynamoDB API call moto's Flask app would route to DynamoHandler.dispatch, with nothing a CORS
    rule or a path rule would answer differently."""
    return (
        environ.get("REQUEST_METHOD") == "POST"
        and environ.get("PATH_INFO") == "/"
        and not environ.get("QUERY_STRING")
        and str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith(DYNAMODB_TARGET)
        and "HTTP_ORIGIN" not in environ
        and "HTTP_ACCESS_CONTROL_REQUEST_PRIVATE_NETWORK" not in environ
    )


class _RequestHeaders(http.client.HTTPMessage):
    """The message class of the server's request headers (http.server's own, by another name)."""


# A header line the email parser splits as name, ":", value with nothing else to do: the name in RFC 5322's
# field-name characters (the feed parser's own test), CRLF at the end, no CR or LF inside.
_PLAIN_HEADER = re.compile(r"([\x21-\x39\x3b-\x7e]+):([^\r\n]*)\r\n")


def _header_message(lines: list[bytes], message_class: Any) -> Any:
    """http.client.parse_headers' message for the lines `_read_headers` read: the email parser's
    (compat32: the value's leading blanks and line end dropped, a body of '') for plain lines."""
    fields = []
    if lines and lines[-1] == b"\r\n":
        for line in lines[:-1]:
            match = _PLAIN_HEADER.fullmatch(line.decode("iso-8859-1"))
            if match is None:
                break
            fields.append((match[1], match[2].lstrip(" \t")))
        else:
            message = message_class()
            for name, value in fields:
                message.set_raw(name, value)
            message.set_payload("")
            return message
    return email.parser.Parser(_class=message_class).parsestr(b"".join(lines).decode("iso-8859-1"))


def _drained(request: Any) -> bool:
    """Whether a request may keep its connection: a DynamoDB call with a plain Content-Length body."""
    headers = request.headers
    return bool(
        request.request_version == "HTTP/1.1"
        and str(headers.get("X-Amz-Target", "")).startswith("DynamoDB_")
        and "Transfer-Encoding" not in headers
        and headers.get("Content-Length", "").isdigit()
        and headers.get("Connection", "").lower() != "close"
    )


def _plain_schema(index: Any) -> bool:
    hashes = [k for k in index.schema if k["KeyType"] == "HASH"]
    ranges = [k for k in index.schema if k["KeyType"] == "RANGE"]
    return len(hashes) == 1 and len(ranges) == 1


def _fast_query(table: Any, index: Any, q: dict[str, Any], slow: Callable[[], Any]) -> Any:
    """moto's Table.query (its arguments by name in `q`; `slow` asks moto itself) for one index-hash
    equality and at most one range condition, over a cached view of the index sorted as moto sorts it; the
    start key and the range bounds found by bisection."""
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import RESULT_SIZE_LIMIT

    range_comparison, range_objs, limit = q["range_comparison"], q["range_objs"], q["limit"]
    exclusive_start_key, scan_index_forward = q["exclusive_start_key"], q["scan_index_forward"]
    projection_expressions, filter_expression = q["projection_expressions"], q["filter_expression"]
    hash_key_conditions, range_key_conditions = q["hash_key_conditions"], q["range_key_conditions"]
    consistent_read = q["consistent_read"]

    hash_attr = next(k["AttributeName"] for k in index.schema if k["KeyType"] == "HASH")
    range_attr = next(k["AttributeName"] for k in index.schema if k["KeyType"] == "RANGE")
    name, value = hash_key_conditions[0]
    if consistent_read or table.range_key_attr is not None or name != hash_attr:
        return slow()
    if range_key_conditions and range_key_conditions[-1][0] != range_attr:
        return slow()
    if range_comparison not in (None, "=", "<", "<=", ">", ">=", "BETWEEN"):
        return slow()
    try:
        keys, ranges, items = _groups(table, index, hash_attr, range_attr).get(_key(value), ([], [], []))
        lo, hi = 0, len(items)
        if range_comparison:
            bounds = [obj.cast_value for obj in range_objs]
            first = bounds[0]
            if range_comparison == "=":
                lo, hi = bisect.bisect_left(ranges, first), bisect.bisect_right(ranges, first)
            elif range_comparison == "<":
                hi = bisect.bisect_left(ranges, first)
            elif range_comparison == "<=":
                hi = bisect.bisect_right(ranges, first)
            elif range_comparison == ">":
                lo = bisect.bisect_right(ranges, first)
            elif range_comparison == ">=":
                lo = bisect.bisect_left(ranges, first)
            else:
                lo, hi = bisect.bisect_left(ranges, first), bisect.bisect_right(ranges, bounds[1])
        start: tuple | None = None
        if exclusive_start_key is not None:
            start = (
                DynamoType(exclusive_start_key[range_attr]).cast_value,
                DynamoType(exclusive_start_key[table.hash_key_attr]).cast_value,
            )
    except (TypeError, KeyError, InvalidOperation):  # mixed types, an odd start key: moto decides
        return slow()
    if scan_index_forward is False:
        end = len(items) if start is None else bisect.bisect_left(keys, start)
        positions: range = range(min(end, hi) - 1, lo - 1, -1)
        more_beyond = lo > 0  # moto walks the items outside the range too; any left means a key
    else:
        begin = 0 if start is None else bisect.bisect_right(keys, start)
        positions = range(max(begin, lo), hi)
        more_beyond = hi < len(items)
    results: list = []
    size = 0
    last = None
    for position in positions:
        item = items[position]
        item_size = item.size()
        if len(results) == limit or size + item_size > RESULT_SIZE_LIMIT:
            last = results[-1]
            break
        results.append(item)
        size += item_size
    else:
        if results and len(results) == limit and more_beyond:
            last = results[-1]
    scanned = len(results)
    last_key = table._get_last_evaluated_key(last, index.name) if last is not None else None
    if projection_expressions or (index.projection or {}).get("ProjectionType") != "ALL":
        results = copy.deepcopy(results)  # moto's copy; an ALL projection and no expression mutate nothing
    results = [index.project(r) for r in results]
    if filter_expression is not None:
        results = [item for item in results if filter_expression.expr(item)]
    if projection_expressions:
        results = [r.project(projection_expressions) for r in results]
    return results, scanned, last_key


def _key(value: Any) -> Any:
    return (value.type, json.dumps(value.value, sort_keys=True, default=str))


def _groups(table: Any, index: Any, hash_attr: str, range_attr: str) -> dict:
    """hash key -> (sort keys, range values, items) of one index, in moto's order: index range, table hash."""
    cached = _cache.get((table.name, index.name))
    if cached is not None and cached[0] is table:  # the same table (a reset or re-create makes a new one)
        return cached[3]
    rows: dict[Any, list] = {}
    for item in list(table.items.values()):
        entry = _entry(item, hash_attr, range_attr)
        if entry is not None:
            rows.setdefault(entry[0], []).append((entry[1], item))
    groups = {}
    for key, pairs in rows.items():
        pairs.sort(key=lambda pair: pair[0])
        groups[key] = ([p[0] for p in pairs], [p[0][0] for p in pairs], [p[1] for p in pairs])
    _cache[(table.name, index.name)] = (table, hash_attr, range_attr, groups)
    return groups


def _entry(item: Any, hash_attr: str, range_attr: str) -> tuple[Any, tuple] | None:
    """(group key, sort key) of an item in an index, or None when the index does not hold it."""
    hash_value, range_value = item.attrs.get(hash_attr), item.attrs.get(range_attr)
    if not hash_value or not range_value:
        return None
    return _key(hash_value), (range_value.cast_value, item.hash_key.cast_value)


def _tables_named(body: Any) -> list[str]:
    names: set[str] = set()
    if isinstance(body, dict):
        if isinstance(body.get("TableName"), str):
            names.add(body["TableName"])
        if isinstance(body.get("RequestItems"), dict):
            names.update(body["RequestItems"])
        for entry in body.get("TransactItems") or []:
            for op in entry.values() if isinstance(entry, dict) else []:
                if isinstance(op, dict) and isinstance(op.get("TableName"), str):
                    names.add(op["TableName"])
    return sorted(names)


def _single_item(handler: Any, action: str, body: dict, names: list[str]) -> tuple[Any, Any] | None:
    """(moto Table, hash key) of a single-item write to a hash-only table with a cached index view."""
    if action not in SINGLE_WRITES or len(names) != 1 or not any(k[0] == names[0] for k in _cache):
        return None
    from moto.dynamodb.models.dynamo_type import DynamoType

    try:
        table = handler.dynamodb_backend.get_table(names[0])
        source = body.get("Item") if action == "PutItem" else body.get("Key")
        if table.range_key_attr is not None or not isinstance(source, dict):
            return None
        return table, DynamoType(source[table.hash_key_attr])
    except Exception:  # noqa: BLE001 - anything odd (no table, no key): drop the views, let moto answer
        return None


def _move(table: Any, key: Any, out: bool) -> None:
    """Take the item with hash `key` out of every cached view of `table` (before the write), or put it
    back where it now sorts (after it); a view that cannot be kept right is dropped."""
    item = table.items.get(key)
    for cache_key, (owner, hash_attr, range_attr, groups) in list(_cache.items()):
        if cache_key[0] != table.name:
            continue
        if owner is not table:
            del _cache[cache_key]
            continue
        if item is None:
            continue
        try:
            entry = _entry(item, hash_attr, range_attr)
            if entry is None:
                continue
            keys, ranges, items = groups.setdefault(entry[0], ([], [], []))
            at = bisect.bisect_left(keys, entry[1])
            if out:
                if at < len(keys) and keys[at] == entry[1] and items[at] is item:
                    del keys[at], ranges[at], items[at]
                else:
                    del _cache[cache_key]
            else:
                keys.insert(at, entry[1])
                ranges.insert(at, entry[1][0])
                items.insert(at, item)
        except (TypeError, InvalidOperation):  # mixed types in one index: moto decides from here on
            _cache.pop(cache_key, None)


class FastMotoServer(MotoServer):
    """devtools' MotoServer, running this module instead of `python -m moto.server`."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.fast_moto", "-H", self.host, "-p", str(self.port)]


def _write_part(args: tuple[str, str, str, Any, int, int, int]) -> int:
    """One seeding process: items make(i[, spec]) for i in range(start, count, step), BatchWriteItem 25 a
    request."""
    endpoint, table, maker, spec, start, count, step = args
    import importlib

    import boto3

    module, _, name = maker.partition(":")
    make = getattr(importlib.import_module(module), name)
    env = local_aws.aws_env(endpoint)
    resource = boto3.resource(
        "dynamodb",
        endpoint_url=endpoint,
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    written = 0
    with resource.Table(table).batch_writer() as batch:
        for i in range(start, count, step):
            batch.put_item(Item=make(i) if spec is None else make(i, spec))
            written += 1
    return written


def bulk_write(
    endpoint: str, table: str, maker: str, count: int, spec: Any = None, processes: int = SEED_PROCESSES
) -> int:
    """Write make(i) (or make(i, spec): spec is picklable) for i in range(count) from `processes` processes;
    `maker` is "module:function", a module-level function. Returns the items written."""
    if processes <= 1 or count < 1000:
        return _write_part((endpoint, table, maker, spec, 0, count, 1))
    import multiprocessing

    parts = [(endpoint, table, maker, spec, k, count, processes) for k in range(processes)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        return sum(pool.map(_write_part, parts))


def main(argv: list[str] | None = None) -> None:
    # FAST_MOTO_OFF=part,part: moto's own code for those parts (tests compare the two over a socket)
    for part in filter(None, os.environ.get("FAST_MOTO_OFF", "").split(",")):
        ENABLED[part.strip()] = False
    install()
    # The tables are millions of long-lived objects: a full collection walks them all and holds the GIL
    # for up to seconds (requests stalled 2 s at CPS 50). Young collections still run; the full ones that
    # only old, live items would survive are left out (a bench's server lives for minutes).
    gc.set_threshold(GC_YOUNG, 50, GC_FULL_NEVER)
    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
