"""Lazy, memoized AWS clients and services.

Nothing here runs at import time: a cold Lambda pays for a client only on the path that uses it, and a
warm one reuses it. Tests and the CLI call `reset()` after changing the environment.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from chalicelib import logs
from chalicelib.settings import ConfigError, Settings

DYNAMODB_POOL = 100  # the launcher's MAX_WORKERS (a test holds them equal); not imported: the answer is lean

T = TypeVar("T")
_UNSET: Any = object()
# Held only while something is being built: boto3's default session is not thread-safe (two clients built
# at once can fail), and `chalice local` and the launcher's workers ask from many threads at once.
_building = threading.RLock()


class _Once(Generic[T]):
    """What `functools.cache` gives a getter without arguments, built once however many threads ask first;
    a built value is returned without taking the lock. `__wrapped__` is what builds it."""

    __wrapped__: Callable[[], T]

    def __init__(self, factory: Callable[[], T]) -> None:
        functools.update_wrapper(self, factory)
        self._value: T = _UNSET

    def __call__(self) -> T:
        value = self._value
        if value is _UNSET:
            with _building:
                if self._value is _UNSET:
                    self._value = self.__wrapped__()
                value = self._value
        return value

    def cache_clear(self) -> None:
        self._value = _UNSET


def _once(factory: Callable[[], T]) -> _Once[T]:
    return _Once(factory)


if TYPE_CHECKING:
    from chalicelib.answer.journal import StepJournal
    from chalicelib.answer.store import TemplateStore
    from chalicelib.calls.campaign_store import CampaignJobs, CampaignStore
    from chalicelib.calls.events import Publisher
    from chalicelib.calls.jobs import JobRepository
    from chalicelib.calls.pacing import Lease
    from chalicelib.calls.plivo_api import PlivoClient


@_once
def settings() -> Settings:
    current = Settings.from_env()
    logs.set_level(current.log_level)
    return current


def _client_config(connect: float, read: float, attempts: int, pool: int = 10) -> Any:
    from botocore.config import Config

    return Config(
        connect_timeout=connect,
        read_timeout=read,
        retries={"max_attempts": attempts, "mode": "standard"},
        max_pool_connections=pool,
    )


@_once
def s3_client() -> Any:
    """Short timeouts: Plivo waits on /answer, and a stale cached template beats a slow fresh one."""
    import boto3

    return boto3.client("s3", config=_client_config(1.0, 2.0, 2))


@_once
def dynamodb_resource() -> Any:
    import boto3

    # One kept connection per launcher worker: botocore's default pool of 10 makes the 11th concurrent
    # request open a connection (a TLS handshake to DynamoDB) and throw it away afterwards.
    return boto3.resource("dynamodb", config=_client_config(2.0, 5.0, 3, pool=DYNAMODB_POOL))


@_once
def calls_table() -> Any:
    return dynamodb_resource().Table(settings().require("calls_table"))


@_once
def campaigns_table() -> Any:
    return dynamodb_resource().Table(settings().require("campaigns_table"))


@_once
def campaign_store() -> CampaignStore:
    from chalicelib.calls.campaign_store import CampaignStore

    return CampaignStore(campaigns_table())


@_once
def campaign_jobs() -> CampaignJobs:
    from chalicelib.calls.campaign_store import CampaignJobs

    return CampaignJobs(calls_table())


@_once
def events_client() -> Any:
    import boto3

    return boto3.client("events", config=_client_config(1.0, 3.0, 2))


@_once
def event_publisher() -> Publisher:
    from chalicelib.calls.events import Publisher

    return Publisher(events_client(), settings().event_bus)


def dialling_lease() -> Lease:
    """A new holder id for every run: the lease tells runs apart, not containers."""
    from chalicelib.calls.pacing import Lease

    return Lease(calls_table())


@_once
def ssm_client() -> Any:
    """Short timeouts, 2 attempts in all: the token is read on /answer, inside the API Lambda's 15 s."""
    import boto3
    from botocore.config import Config

    retries = {"total_max_attempts": 2, "mode": "standard"}  # the first try and one retry
    return boto3.client("ssm", config=Config(connect_timeout=1.0, read_timeout=2.0, retries=retries))


@_once
def template_store() -> TemplateStore:
    from chalicelib.answer.store import TemplateStore

    s = settings()
    return TemplateStore(
        s3_client(), s.require("template_bucket"), s.template_prefix, ttl=s.template_cache_ttl
    )


@_once
def job_repository() -> JobRepository:
    from chalicelib.calls.jobs import JobRepository

    return JobRepository(calls_table())


@_once
def step_journal() -> StepJournal:
    """The answer route's adapter on the calls table (conversations: `job`, `responses`, `result`)."""
    from chalicelib.answer.journal import StepJournal

    return StepJournal(calls_table())


TOKEN_FAILURE_SECONDS = 5.0
_token_failure: dict[str, Any] = {}  # "message", "until": a recent failure to read the token


@_once
def _resolved_auth_token() -> str:

    return resolve_auth_token(settings(), ssm_client)


def plivo_auth_token() -> str:
    """The token itself, or the SSM SecureString it lives in; read once per container, never logged.

    A failure is remembered for TOKEN_FAILURE_SECONDS, so a broken SSM costs one slow read per few
    seconds, not one per callback. Raises ConfigError.
    """
    if _token_failure and time.monotonic() < _token_failure["until"]:
        raise ConfigError(_token_failure["message"])
    try:
        token = _resolved_auth_token()
    except ConfigError as exc:
        _token_failure.update(message=str(exc), until=time.monotonic() + TOKEN_FAILURE_SECONDS)
        raise
    _token_failure.clear()
    return token


@_once
def plivo_client() -> PlivoClient:
    from chalicelib.calls.plivo_api import PlivoClient

    s = settings()
    return PlivoClient(s.require("plivo_auth_id"), plivo_auth_token(), s.plivo_api_url)


def reset() -> None:
    """Forget every memoized client and setting (tests, or the CLI after it changes the environment)."""
    for getter in (
        events_client,
        event_publisher,
        campaigns_table,
        campaign_store,
        campaign_jobs,
        settings,
        s3_client,
        dynamodb_resource,
        calls_table,
        ssm_client,
        template_store,
        job_repository,
        step_journal,
        _resolved_auth_token,
        plivo_client,
    ):
        getter.cache_clear()
    _token_failure.clear()


def resolve_auth_token(settings: Settings, ssm_client_factory: Callable[[], Any]) -> str:
    """PLIVO_AUTH_TOKEN if set, else the decrypted value of the SSM parameter PLIVO_AUTH_TOKEN_PARAM."""
    if settings.plivo_auth_token:
        return settings.plivo_auth_token
    name = settings.plivo_auth_token_param
    if not name:
        raise ConfigError("PLIVO_AUTH_TOKEN or PLIVO_AUTH_TOKEN_PARAM must be set")
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        reply = ssm_client_factory().get_parameter(Name=name, WithDecryption=True)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise ConfigError(f"cannot read SSM parameter {name!r} (PLIVO_AUTH_TOKEN_PARAM): {code}") from None
    except BotoCoreError as exc:
        raise ConfigError(
            f"cannot read SSM parameter {name!r} (PLIVO_AUTH_TOKEN_PARAM): {type(exc).__name__}"
        ) from None
    value = (reply.get("Parameter") or {}).get("Value") or ""
    if not value.strip():
        raise ConfigError(f"SSM parameter {name!r} (PLIVO_AUTH_TOKEN_PARAM) is empty")
    return value.strip()
