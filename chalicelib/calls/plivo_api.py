"""Plivo's Call API over one pooled `requests.Session`, with each outcome classified for the launcher.

Plivo has no idempotency key, so nothing here retries a POST: the launcher decides, using the class of
failure — refused before sending is safe to retry, a timeout after sending may have placed a call.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum
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
    CONFIG_ERROR = "config_error"  # 3xx or 404: PLIVO_API_URL is not Plivo's Call API, for every job


SUCCESS = (200, 201, 202)


@dataclass(frozen=True)
class CallResult:
    outcome: Outcome
    status: int | None = None
    request_uuid: str | None = None
    api_id: str | None = None
    error: str | None = None


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
        from requests.adapters import HTTPAdapter

        with self._lock:
            if size <= self._pool_size:
                return
            # max_retries=0: never resend a POST that may have placed a call.
            adapter = HTTPAdapter(pool_connections=2, pool_maxsize=size, max_retries=0)
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
        self, body: dict[str, Any] | None = None, prepared: PreparedRequest | None = None
    ) -> CallResult:
        """POST one call (a body, or a request from prepare_call) and classify the outcome; never raises
        for network or HTTP errors."""
        import requests

        if prepared is None:
            prepared = self.prepare_call(body or {})
        try:
            response = self._session.send(
                prepared,
                timeout=(self.connect_timeout, self.read_timeout),
                allow_redirects=False,
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
        return classify(response.status_code, _json(response), response.text)


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
