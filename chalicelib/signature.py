"""Plivo V3 request signatures (PLIVO.md), computed exactly like plivo-python's `validate_v3_signature`.

Pure functions: the HTTP layer hands in the rebuilt URL and the decoded parameters, so the same code is
tested against the SDK oracle without a server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any

# A parsed parameter set: name -> values (a JSON body may also carry nested objects).
Params = Mapping[str, Any]


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)


def _values(value: Any) -> list[str]:
    if type(value) is list and len(value) == 1 and type(value[0]) is str:
        return value  # the common case: one plain value
    if isinstance(value, (list, tuple)):
        return sorted(_text(v) for v in value)
    return [_text(value)]


def sorted_query(params: Params) -> str:
    """`k=v&k=v` sorted by key then value, values decoded and not re-encoded (the GET form)."""
    return "&".join(f"{key}={value}" for key in sorted(params) for value in _values(params[key]))


def _first_item(item: tuple[str, Any]) -> str:
    return item[0]


def sorted_body(params: Params) -> str:
    """`kvkv` sorted by key then value, no separators (the POST body form); nested objects recurse."""
    items = sorted(params.items(), key=_first_item)
    if all(type(v) is list and len(v) == 1 and type(v[0]) is str for _, v in items):
        return "".join([key + values[0] for key, values in items])  # a form with one value per name
    parts = []
    for key in sorted(params):
        value = params[key]
        if isinstance(value, Mapping):
            parts.append(f"{key}{sorted_body(value)}")
        else:
            parts.extend(f"{key}{v}" for v in _values(value))
    return "".join(parts)


def signing_string(base_url: str, query: Params, body: Params | None = None) -> str:
    """The string Plivo signs, before `.nonce`.

    `base_url` is scheme://host/path without query; `query` holds the URL's query parameters (for a GET,
    all of them); `body` the POST body parameters (None or empty for a GET or an empty POST).
    """
    query_string = sorted_query(query) if query else ""
    if not body:
        return f"{base_url}?{query_string}" if query_string else base_url
    dot = "." if query_string else ""
    return f"{base_url}?{query_string}{dot}{sorted_body(body)}"


def compute(auth_token: str, base_url: str, nonce: str, query: Params, body: Params | None = None) -> str:
    """base64(HMAC-SHA256(token, signing_string + "." + nonce))."""
    # surrogatepass: a lone surrogate (JSON "\ud800", or a header API Gateway could not decode) must give
    # some bytes, not a UnicodeEncodeError before the check; Plivo never signs one, so it cannot match.
    message = f"{signing_string(base_url, query, body)}.{nonce}".encode("utf-8", "surrogatepass")
    digest = hmac.new(auth_token.encode("utf-8", "surrogatepass"), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def matches(expected: str, headers: Iterable[str | None]) -> bool:
    """True when any comma-separated signature in any of `headers` equals `expected` (constant time)."""
    wanted = expected.encode("ascii")
    found = False
    for header in headers:
        if not header:
            continue
        for candidate in header.split(","):
            # No early exit: the time taken does not depend on which candidate matched.
            found |= hmac.compare_digest(wanted, candidate.encode("utf-8", "surrogatepass"))
    return found


def verify(
    auth_token: str,
    base_url: str,
    nonce: str | None,
    signatures: Iterable[str | None],
    query: Params,
    body: Params | None = None,
) -> bool:
    """Check a callback's V3 signature headers; a missing nonce or signature never verifies."""
    if nonce is None:
        return False
    return matches(compute(auth_token, base_url, nonce, query, body), signatures)
