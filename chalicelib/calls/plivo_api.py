"""Plivo's Call API over one pooled `requests.Session`, with each outcome classified for the launcher.

Plivo has no idempotency key, so nothing here retries a POST: the launcher decides, using the class of
failure — refused before sending is safe to retry, a timeout after sending may have placed a call.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from requests import PreparedRequest, Response, Session


class Outcome(StrEnum):
    """What one Call API request did, as far as callflow can tell (SPEC "The launcher")."""

    PLACED = "placed"  # 2xx: Plivo has the call
    RETRY = "retry"  # 429, 5xx, or refused before sending: no call, try again later
    UNKNOWN = "unknown"  # sent, no answer: a call may exist
    FAILED = "failed"  # 400/403: Plivo refused this job
    AUTH_ERROR = "auth_error"  # 401: the credentials are wrong for every job
    CONFIG_ERROR = "config_error"  # 3xx, 404 or unsendable here: wrong for every job, nothing sent


SUCCESS = (200, 201, 202)
# requests turns every network failure into a RequestException; a bare OSError out of `Session.send` comes
# from setting the request up here, before anything is written (a CA bundle or client certificate path that
# does not exist): the same for every request until the environment is fixed.
NOT_SENT = "request not sent, it cannot be set up here"


@dataclass(frozen=True)
class CallResult:
    outcome: Outcome
    status: int | None = None
    request_uuid: str | None = None
    api_id: str | None = None
    error: str | None = None


# A call_uuid or request_uuid as Plivo writes them. Anything else (above all an empty id) must never reach
# a URL: `.../Call/` without an id names every call of the account (PLIVO.md "Call control").
_UUID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")


class MissingId(ValueError):
    """A call control or record request without a usable call_uuid/request_uuid: never sent."""


@dataclass(frozen=True)
class ApiResult:
    """One call control or record request: `status` None when no reply came (`error` says why);
    `sent` False when it surely never reached Plivo (so it did nothing)."""

    status: int | None
    payload: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    sent: bool = True

    @property
    def ok(self) -> bool:
        return self.status in SUCCESS


def checked_id(ident: object) -> str:
    """The id itself, or MissingId: what goes into `.../Call/{id}/` is never empty or a path."""
    if not isinstance(ident, str) or not _UUID.fullmatch(ident):
        raise MissingId(f"not a Plivo call id: {str(ident)[:80]!r}")
    return ident


class PlivoClient:
    """Plivo REST client for placing calls. Thread-safe; the token is kept out of repr and logs."""

    def __init__(
        self,
        auth_id: str,
        auth_token: str,
        base_url: str = "https://api.plivo.com",
        connect_timeout: float = 3.05,
        read_timeout: float = 10.0,
        pool_size: int = 10,
    ) -> None:
        self.auth_id = auth_id
        self._auth = (auth_id, auth_token)
        self.base_url = base_url.rstrip("/")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._lock = threading.Lock()
        self._pool_size = 0
        self._send_settings: dict[str, Any] | None = None
        self._session = self._new_session()
        self.ensure_pool(pool_size)

    def __repr__(self) -> str:
        return f"PlivoClient(auth_id={self.auth_id!r}, base_url={self.base_url!r})"

    @property
    def call_url(self) -> str:
        return f"{self.base_url}/v1/Account/{self.auth_id}/Call/"

    @property
    def max_request_seconds(self) -> float:
        """Longest one request can take: what a caller must keep in reserve before starting one."""
        return self.connect_timeout + self.read_timeout

    def _new_session(self) -> Session:
        import requests

        session = requests.Session()
        session.auth = self._auth
        session.headers.update({"Accept": "application/json", "User-Agent": "callflow-launcher"})
        return session

    def ensure_pool(self, size: int) -> None:
        """Keep at least `size` connections alive, one per worker, so every worker reuses its socket."""
        with self._lock:
            if size <= self._pool_size:
                return
            # max_retries=0: never resend a POST that may have placed a call.
            adapter = _stamping_adapter()(pool_connections=2, pool_maxsize=size, max_retries=0)
            self._session.mount("https://", adapter)
            self._session.mount("http://", adapter)
            self._pool_size = size

    def close(self) -> None:
        self._session.close()

    def prepare_call(self, body: dict[str, Any]) -> PreparedRequest:
        """The ready-to-send request, built ahead so that sending right after a rate slot is quick."""
        import requests

        return self._session.prepare_request(requests.Request("POST", self.call_url, json=body))

    def create_call(
        self,
        body: dict[str, Any] | None = None,
        prepared: PreparedRequest | None = None,
        on_sent: Callable[[], None] | None = None,
        before_send: Callable[[], None] | None = None,
    ) -> CallResult:
        """POST one call (a body, or a request from prepare_call) and classify the outcome; never raises
        for network or HTTP errors. `before_send` runs right before the request is written (after the
        connection is taken from the pool), `on_sent` the moment it has been written to the socket (after
        any connect and TLS handshake), before the reply: when the call started as Plivo sees it."""
        import requests

        if prepared is None:
            prepared = self.prepare_call(body or {})
        settings = self._environment_settings()
        _sending.before, _sending.callback = before_send, on_sent
        try:
            response = self._session.send(
                prepared,
                timeout=(self.connect_timeout, self.read_timeout),
                allow_redirects=False,
                **settings,
            )
        except requests.exceptions.ConnectTimeout:
            return CallResult(Outcome.RETRY, error="connect timeout: request not sent")
        except requests.exceptions.ReadTimeout:
            return CallResult(Outcome.UNKNOWN, error=f"no reply within {self.read_timeout:g} s after sending")
        except requests.exceptions.SSLError as exc:
            return CallResult(Outcome.RETRY, error=f"TLS handshake failed: {_short(exc)}")
        except requests.exceptions.ConnectionError as exc:
            if _never_connected(exc):
                return CallResult(Outcome.RETRY, error=f"connection failed before sending: {_short(exc)}")
            return CallResult(Outcome.UNKNOWN, error=f"connection lost after sending: {_short(exc)}")
        except requests.exceptions.RequestException as exc:
            return CallResult(Outcome.UNKNOWN, error=f"request error: {_short(exc)}")
        except OSError as exc:  # after RequestException, which is one
            return CallResult(Outcome.CONFIG_ERROR, error=f"{NOT_SENT}: {_short(exc)}")
        finally:
            _sending.before = _sending.callback = None
        return classify(response.status_code, _json(response), response.text)

    def _environment_settings(self) -> dict[str, Any]:
        """The environment's proxies, CA bundle and client certificate for the Call API URL, looked up once
        per client. `Session.send` alone would scan `os.environ` for proxies on every call (in the dialling
        path, between the grant and the wire) and would never read REQUESTS_CA_BUNDLE, which `_request`
        honours; the URL is fixed and a Lambda's environment does not change under a running process."""
        settings = self._send_settings
        if settings is None:
            settings = dict(self._session.merge_environment_settings(self.call_url, {}, None, None, None))
            self._send_settings = settings
        return settings

    # --- call control and records (v2) ---------------------------------------------------------------

    def transfer(
        self, call_uuid: str, url: str, method: str = "POST", timeout: tuple[float, float] = (2.0, 5.0)
    ) -> ApiResult:
        """Move the live call's A leg to `url` (Plivo's transfer API, 202 "call transferred"). Sent once:
        a transfer is a POST, and a timeout after sending leaves it unknown (`sent` True, status None).
        Short timeouts by default: it runs inside the API Lambda (15 s) while Plivo waits for the reply."""
        target = f"{self.call_url}{checked_id(call_uuid)}/"
        body = {"legs": "aleg", "aleg_url": url, "aleg_method": method}
        return self._request("POST", target, json_body=body, timeout=timeout)

    def queued_call(self, request_uuid: str) -> ApiResult:
        """`GET .../Call/{request_uuid}/?status=queued`: 200 while Plivo still holds the request queued."""
        return self._request("GET", f"{self.call_url}{checked_id(request_uuid)}/", {"status": "queued"})

    def call_record(self, call_uuid: str) -> ApiResult:
        """`GET .../Call/{call_uuid}/`: a completed call's record (404 when Plivo has none)."""
        return self._request("GET", f"{self.call_url}{checked_id(call_uuid)}/")

    def list_calls(self, filters: Mapping[str, str]) -> ApiResult:
        """`GET .../Call/?...`: completed call records matching `filters` (to_number, end_time__gte ...)."""
        if not filters:
            raise MissingId("a call record search needs filters")
        return self._request("GET", self.call_url, dict(filters))

    def _request(
        self,
        method: str,
        url: str,
        query: Mapping[str, str] | None = None,
        json_body: Mapping[str, Any] | None = None,
        timeout: tuple[float, float] | None = None,
    ) -> ApiResult:
        """One request, never retried (the adapter has max_retries=0) and never raising for the network."""
        import requests

        connect, read = timeout or (self.connect_timeout, self.read_timeout)

        try:
            response = self._session.request(
                method,
                url,
                params=dict(query) if query else None,
                json=dict(json_body) if json_body is not None else None,
                timeout=(connect, read),
                allow_redirects=False,
            )
        except requests.exceptions.ConnectTimeout:
            return ApiResult(None, error="connect timeout: request not sent", sent=False)
        except requests.exceptions.ReadTimeout:
            return ApiResult(None, error=f"no reply within {read:g} s after sending")
        except requests.exceptions.SSLError as exc:
            return ApiResult(None, error=f"TLS handshake failed: {_short(exc)}", sent=False)
        except requests.exceptions.ConnectionError as exc:
            if _never_connected(exc):
                return ApiResult(None, error=f"connection failed before sending: {_short(exc)}", sent=False)
            return ApiResult(None, error=f"connection lost after sending: {_short(exc)}")
        except requests.exceptions.RequestException as exc:
            return ApiResult(None, error=f"request error: {_short(exc)}")
        except OSError as exc:
            return ApiResult(None, error=f"{NOT_SENT}: {_short(exc)}", sent=False)
        payload = _json(response)
        error = None
        if response.status_code not in SUCCESS:
            detail = payload.get("error") or payload.get("message") or response.text.strip()[:200]
            error = f"Plivo HTTP {response.status_code}: {detail or 'no details'}"
        return ApiResult(response.status_code, payload, error)


def classify(status: int, payload: dict[str, Any], text: str = "") -> CallResult:
    """Map an HTTP reply to an outcome (SPEC "The launcher")."""
    if status in SUCCESS:
        uuid = payload.get("request_uuid")
        if isinstance(uuid, list):
            uuid = ",".join(str(u) for u in uuid)
        return CallResult(Outcome.PLACED, status, uuid, payload.get("api_id"))
    error = payload.get("error") or payload.get("message") or text.strip()[:200] or "no details"
    message = f"Plivo HTTP {status}: {error}"
    if status == 401:
        return CallResult(Outcome.AUTH_ERROR, status, api_id=payload.get("api_id"), error=message)
    if 300 <= status < 400 or status == 404:
        # The Call API never redirects, and its URL exists for every well-formed request: a redirect or
        # a 404 means PLIVO_API_URL points somewhere else, and every other job would get the same.
        return CallResult(Outcome.CONFIG_ERROR, status, api_id=payload.get("api_id"), error=message)
    if status == 429 or status >= 500:
        return CallResult(Outcome.RETRY, status, api_id=payload.get("api_id"), error=message)
    return CallResult(Outcome.FAILED, status, api_id=payload.get("api_id"), error=message)


def _json(response: Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


class _Sending(threading.local):
    """The running request's `before_send` and `on_sent`, per thread: urllib3 sends on the caller's thread."""

    before: Callable[[], None] | None = None
    callback: Callable[[], None] | None = None


_sending = _Sending()


@cache
def _stamping_pools() -> dict[str, type]:
    """urllib3 pools whose connections call `_sending.before` right before a request is written and
    `_sending.callback` once it is on the wire: the launcher paces by the moment a call starts, which can
    trail the rate-limit grant under CPU load."""
    from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
    from urllib3.connection import HTTPConnection, HTTPSConnection

    def stamping(base: type[Any]) -> type[Any]:
        class Stamping(base):  # type: ignore[misc]
            def request(self, *args: Any, **kwargs: Any) -> None:
                before, _sending.before = _sending.before, None
                if before is not None:
                    before()
                super().request(*args, **kwargs)
                callback, _sending.callback = _sending.callback, None
                if callback is not None:
                    callback()

        return Stamping

    class Http(HTTPConnectionPool):
        ConnectionCls = stamping(HTTPConnection)

    class Https(HTTPSConnectionPool):
        ConnectionCls = stamping(HTTPSConnection)

    return {"http": Http, "https": Https}


@cache
def _stamping_adapter() -> type[Any]:
    """requests' HTTPAdapter whose pools stamp sends (`_stamping_pools`), direct or through an HTTP(S)
    proxy from the environment (requests keeps a separate pool manager per proxy). SOCKS proxies keep
    their own pools, so their sends are stamped after the reply, which only counts them later."""
    from requests.adapters import HTTPAdapter

    class StampingAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = _stamping_pools()

        def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
            manager = super().proxy_manager_for(proxy, **proxy_kwargs)
            if not proxy.lower().startswith("socks"):
                manager.pool_classes_by_scheme = _stamping_pools()
            return manager

    return StampingAdapter


def _never_connected(exc: BaseException) -> bool:
    """True when the chain of causes shows the TCP connection was never made (refused, DNS, unreachable)."""
    from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(
            current, (NewConnectionError, ConnectTimeoutError, NameResolutionError, ConnectionRefusedError)
        ):
            return True
        stack.extend([getattr(current, "reason", None), current.__cause__, current.__context__])
        stack.extend(arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException))
    return False


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
