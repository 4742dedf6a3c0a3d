"""S3 template store with a per-container cache.

Within `ttl` a cached template or routes.json costs no S3 request; after it, one conditional GET
(If-None-Match) revalidates, and a 304 keeps the compiled template. Each template version is compiled
once. Compiled templates live in a bounded LRU; unknown names are remembered briefly in a bounded set.
If S3 fails, the last cached version keeps being served and S3 is left alone for a short back-off, so
an outage does not add S3 timeouts to every call. A missing key is a 404 (the role may list the prefix);
a 403 is an access problem and handled as an outage.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import closing
from typing import Any, cast

from jinja2 import Template

from chalicelib.answer import render, routes
from chalicelib.answer.render import TemplateError
from chalicelib.answer.routes import EMPTY_ROUTES, Routes, RoutesError
from chalicelib.logs import log

ROUTES_NAME = "routes.json"
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_DENIED_CODES = frozenset({"AccessDenied", "403", "Forbidden"})


class TemplateMissing(Exception):
    """No template by that name (or the name is not a valid template name)."""


class TemplateBroken(Exception):
    """The stored template does not compile, is not UTF-8 or is too large."""


class StoreUnavailable(Exception):
    """S3 could not be asked and nothing is cached."""


class _Entry:
    """One cached object and its ETag (a plain class: a dataclass costs every cold start ~0.5 ms)."""

    __slots__ = ("etag", "value", "error", "checked_at")

    def __init__(self, etag: str | None, value: Any, error: str | None, checked_at: float) -> None:
        self.etag = etag
        self.value = value  # compiled template / Routes, or None when `error` is set
        self.error = error
        self.checked_at = checked_at


class _BackingOff(StoreUnavailable):
    """S3 failed moments ago and is not asked again yet (already logged when it failed)."""


class _Signal:
    """A GET's answer other than a body: not modified (304) or no such key."""


_NOT_MODIFIED = _Signal()
_MISSING = _Signal()
_Body = tuple[bytes, str | None]  # (body, ETag)
_Fetched = _Body | _Signal


class TemplateStore:
    """Compiled templates and routes.json from `s3://bucket/prefix`, cached per warm container."""

    def __init__(
        self,
        s3_client: Any,
        bucket: str,
        prefix: str = "templates/",
        ttl: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_templates: int = 128,
        max_unknown: int = 1024,
        unknown_ttl: float | None = None,
        error_backoff: float = 5.0,
    ) -> None:
        self._s3 = s3_client
        self.bucket = bucket
        self.prefix = prefix
        self.ttl = float(ttl)
        self._clock = clock
        self._max_templates = max_templates
        self._max_unknown = max_unknown
        self._unknown_ttl = min(self.ttl, 10.0) if unknown_ttl is None else unknown_ttl
        self._error_backoff = error_backoff
        self._templates: OrderedDict[str, _Entry] = OrderedDict()
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._routes: _Entry | None = None
        self._routes_missing_until = -1.0
        self._down_until = -1.0
        self._lock = threading.Lock()
        self.compiles = 0  # how many template versions were compiled (observable cache behaviour)
        self.s3_requests = 0

    def cache_sizes(self) -> dict[str, int]:
        """How many compiled templates and remembered unknown names this container holds."""
        return {"templates": len(self._templates), "unknown": len(self._unknown)}

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}.xml"

    # ------------------------------------------------------------ public

    def template(self, name: str) -> Template:
        """The compiled template `name`; raises TemplateMissing, TemplateBroken or StoreUnavailable."""
        if not routes.is_template_name(name):
            raise TemplateMissing(f"{name!r} is not a template name")
        now = self._clock()
        with self._lock:
            entry = self._templates.get(name)
            if entry is not None:
                self._templates.move_to_end(name)
            elif self._unknown.get(name, -1.0) > now:
                raise TemplateMissing(f"template {name!r} not found")
        if entry is None or now - entry.checked_at >= self.ttl:
            entry = self._refresh_template(name, entry, now)
        if entry.error is not None:
            raise TemplateBroken(entry.error)
        return cast(Template, entry.value)

    def routes(self) -> Routes:
        """routes.json (empty when there is none); raises RoutesError or StoreUnavailable."""
        now = self._clock()
        entry = self._routes
        if entry is None and self._routes_missing_until > now:
            return EMPTY_ROUTES
        if entry is None or now - entry.checked_at >= self.ttl:
            entry = self._refresh_routes(entry, now)
            if entry is None:
                return EMPTY_ROUTES
        if entry.error is not None:
            raise RoutesError(entry.error)
        return cast(Routes, entry.value)

    # ------------------------------------------------------------ refresh

    def _revalidate(self, key: str, label: str, entry: _Entry | None, now: float) -> _Fetched | None:
        """A new (body, etag) or _MISSING; None when the cached `entry` stays (304, same ETag, or S3
        failing while we hold a copy: stale-on-error)."""
        try:
            fetched = self._fetch(key, entry.etag if entry else None, now)
        except StoreUnavailable as exc:
            if entry is None:
                raise
            if not isinstance(exc, _BackingOff):  # once per failed S3 attempt, not once per request
                _log_stale(label, exc)
            entry.checked_at = now - self.ttl + min(self._error_backoff, self.ttl)
            return None
        same_etag = (
            entry is not None
            and isinstance(fetched, tuple)
            and (fetched[1] is not None and fetched[1] == entry.etag)
        )
        unchanged = fetched is _NOT_MODIFIED or same_etag
        if unchanged and entry is not None:
            entry.checked_at = now
            return None
        if fetched is _NOT_MODIFIED:  # a 304 without a cached copy: S3 answered something we never asked
            raise StoreUnavailable(f"S3 get {key}: 304 without a cached version")
        return fetched

    def _refresh_template(self, name: str, entry: _Entry | None, now: float) -> _Entry:
        fetched = self._revalidate(self.key(name), name, entry, now)
        if fetched is None:
            assert entry is not None  # _revalidate keeps only an entry it has
            return entry
        if fetched is _MISSING:
            with self._lock:
                self._templates.pop(name, None)
                self._unknown[name] = now + self._unknown_ttl
                self._unknown.move_to_end(name)
                while len(self._unknown) > self._max_unknown:
                    self._unknown.popitem(last=False)
            raise TemplateMissing(f"template {name!r} not found")
        body, etag = cast(_Body, fetched)
        new = self._compile(name, body, etag, now)
        with self._lock:
            self._templates[name] = new
            self._templates.move_to_end(name)
            self._unknown.pop(name, None)
            while len(self._templates) > self._max_templates:
                self._templates.popitem(last=False)
        return new

    def _compile(self, name: str, body: bytes, etag: str | None, now: float) -> _Entry:
        self.compiles += 1
        if len(body) > render.MAX_SOURCE_BYTES:
            return _Entry(etag, None, f"template {name!r} is over {render.MAX_SOURCE_BYTES} bytes", now)
        try:
            source = body.decode("utf-8")
        except UnicodeDecodeError:
            return _Entry(etag, None, f"template {name!r} is not UTF-8", now)
        try:
            return _Entry(etag, render.compile_template(source), None, now)
        except TemplateError as exc:
            return _Entry(etag, None, f"template {name!r}: {exc}", now)

    def _refresh_routes(self, entry: _Entry | None, now: float) -> _Entry | None:
        fetched = self._revalidate(f"{self.prefix}{ROUTES_NAME}", ROUTES_NAME, entry, now)
        if fetched is None:
            return entry
        if fetched is _MISSING:
            self._routes = None
            self._routes_missing_until = now + self.ttl
            return None
        body, etag = cast(_Body, fetched)
        try:
            new = _Entry(etag, routes.parse_routes(body), None, now)
        except RoutesError as exc:
            new = _Entry(etag, None, str(exc), now)
        self._routes = new
        return new

    def _fetch(self, key: str, etag: str | None, now: float) -> _Fetched:
        """(body, etag), _NOT_MODIFIED or _MISSING; raises StoreUnavailable for anything else.

        The role holds s3:ListBucket on the prefix, so S3 says 404 for a missing key and a 403 is a real
        access problem (policy or bucket misconfigured): an outage, not a missing template.
        """
        if now < self._down_until:
            raise _BackingOff("S3 failed moments ago; not retrying yet")
        kwargs: dict[str, str] = {"Bucket": self.bucket, "Key": key}
        if etag:
            kwargs["IfNoneMatch"] = etag
        self.s3_requests += 1
        try:
            response = self._s3.get_object(**kwargs)
            with closing(response["Body"]) as stream:
                body = stream.read(render.MAX_SOURCE_BYTES + 1)  # enough to tell "too large"
            return body, response.get("ETag")
        except Exception as exc:  # noqa: BLE001 - botocore is classified by its response, not its type
            error = getattr(exc, "response", None) or {}
            code = str(error.get("Error", {}).get("Code", ""))
            status = error.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 304 or code in ("304", "NotModified"):
                return _NOT_MODIFIED
            # NoSuchBucket is a configuration error: nothing in the store can be served, an outage.
            if code != "NoSuchBucket" and (status == 404 or code in _MISSING_CODES):
                return _MISSING
            self._down_until = now + self._error_backoff
            if status == 403 or code in _DENIED_CODES:
                log.error(
                    "S3 denied access to the template store; check the role's "
                    "s3:GetObject and s3:ListBucket grants",
                    key=key,
                    cause=code or "403",
                )
                raise StoreUnavailable(f"S3 get {key}: access denied ({code or 403})") from None
            raise StoreUnavailable(f"S3 get {key}: {type(exc).__name__}: {exc}") from None


def _log_stale(name: str, exc: Exception) -> None:
    log.warning("S3 unavailable; serving the cached version", template=name, cause=str(exc))
