"""Settings from environment variables, parsed once per container and never at import time."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

_N = TypeVar("_N", int, float)


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


def _number(env: Mapping[str, str], name: str, default: _N, kind: type[_N], minimum: float = 0) -> _N:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {raw!r}")
    return value


def _delays(env: Mapping[str, str], name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        values = tuple(int(part.strip()) for part in raw.split(","))
    except ValueError:
        raise ConfigError(f"{name} must be a comma list of seconds, not {raw!r}") from None
    if not values or any(v < 0 for v in values):
        raise ConfigError(f"{name} must be a comma list of non-negative seconds, not {raw!r}")
    return values


def _text(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip()


@dataclass(frozen=True)
class Settings:
    """The SPEC's settings table. Required values are checked where they are used, via `require`."""

    template_bucket: str | None = None
    template_prefix: str = "templates/"
    template_cache_ttl: float = 60.0
    default_template: str | None = None
    calls_table: str | None = None
    campaigns_table: str | None = None
    event_bus: str = "default"
    plivo_auth_id: str | None = None
    # Never in repr() or str(): a logged or printed Settings cannot leak the token.
    plivo_auth_token: str | None = field(default=None, repr=False)
    plivo_auth_token_param: str | None = None
    plivo_api_url: str = "https://api.plivo.com"
    public_base_url: str | None = None
    verify_signatures: bool = True
    plivo_cps: float = 2.0
    max_attempts: int = 3
    retry_delays: tuple[int, ...] = (300, 900, 3600)
    call_window: str = "08:00-21:00"
    default_tz: str = "UTC"
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        base = _text(env, "PUBLIC_BASE_URL")
        prefix = env.get("TEMPLATE_PREFIX")
        return cls(
            template_bucket=_text(env, "TEMPLATE_BUCKET"),
            template_prefix="templates/" if prefix is None else prefix.strip(),
            template_cache_ttl=_number(env, "TEMPLATE_CACHE_TTL", 60.0, float),
            default_template=_text(env, "DEFAULT_TEMPLATE"),
            calls_table=_text(env, "CALLS_TABLE"),
            campaigns_table=_text(env, "CAMPAIGNS_TABLE"),
            event_bus=_text(env, "EVENT_BUS", "default") or "default",
            plivo_auth_id=_text(env, "PLIVO_AUTH_ID"),
            plivo_auth_token=_text(env, "PLIVO_AUTH_TOKEN"),
            plivo_auth_token_param=_text(env, "PLIVO_AUTH_TOKEN_PARAM"),
            plivo_api_url=(_text(env, "PLIVO_API_URL") or "https://api.plivo.com").rstrip("/"),
            public_base_url=base.rstrip("/") if base else None,
            verify_signatures=_bool(env, "VERIFY_SIGNATURES", True),
            plivo_cps=_number(env, "PLIVO_CPS", 2.0, float, minimum=0.001),
            max_attempts=_number(env, "MAX_ATTEMPTS", 3, int, minimum=1),
            retry_delays=_delays(env, "RETRY_DELAYS", (300, 900, 3600)),
            call_window=_text(env, "CALL_WINDOW") or "08:00-21:00",
            default_tz=_text(env, "DEFAULT_TZ") or "UTC",
            log_level=(_text(env, "LOG_LEVEL", "INFO") or "INFO").upper(),
        )

    def require(self, field: str) -> str:
        """Return a setting that this code path cannot work without, or say which variable is missing."""
        value = getattr(self, field)
        if value is None or value == "":
            raise ConfigError(f"{field.upper()} is not set")
        return str(value)

    @property
    def local_stage(self) -> bool:
        """Is this the local stack? Known from PUBLIC_BASE_URL: plain http on a loopback host (localhost,
        127.x, ::1). Only there may a job's answer_url be plain http."""
        from urllib.parse import urlsplit

        if not self.public_base_url:
            return False
        parts = urlsplit(self.public_base_url)
        host = (parts.hostname or "").lower()
        loopback = (
            host == "localhost" or host.endswith(".localhost") or host.startswith("127.") or host == "::1"
        )
        return parts.scheme == "http" and loopback
