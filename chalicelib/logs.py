"""Logs through Powertools for AWS Lambda's Logger: one JSON object per line, fields as keyword arguments
(`log.info("call placed", call_id=..., request_uuid=...)`), so CloudWatch Logs Insights can query each one.

Everything Lambda runs logs through the one `log`; its level follows LOG_LEVEL once the settings are read.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools import Logger

SERVICE = "callflow"

Handler = TypeVar("Handler", bound=Callable[..., Any])


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (test runners and tools swap it); stdout is left to
    the metrics, which CloudWatch reads from the same stream."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class _Lazy:
    """The Logger is built on first use: Powertools reads its environment variables (LOG_LEVEL among them)
    when it is built, and importing app.py reads none."""

    _logger: Logger | None = None

    def __getattr__(self, name: str) -> Any:
        logger = _Lazy._logger
        if logger is None:
            logger = _Lazy._logger = Logger(
                service=SERVICE, logger_handler=_StderrHandler(), level="INFO", use_rfc3339=True
            )
        return getattr(logger, name)


log: Logger = _Lazy()  # type: ignore[assignment]


def set_level(level: str) -> None:
    log.setLevel(getattr(logging, level.upper(), logging.INFO))


def cause(exc: BaseException) -> str:
    """A caught exception as one short field: its type and message, never a traceback."""
    return f"{type(exc).__name__}: {exc}"


def lambda_entry(handler: Handler) -> Handler:
    """Powertools' `inject_lambda_context` (request id, function, cold_start) when a real Lambda context
    is there; tests and `chalice local`'s stand-ins without one run the handler as it is."""
    injected: list[Handler] = []

    @functools.wraps(handler)
    def entry(event: Any, context: Any = None) -> Any:
        if context is None or not hasattr(context, "aws_request_id") or not hasattr(context, "function_name"):
            return handler(event, context)
        if not injected:
            injected.append(log.inject_lambda_context(handler, clear_state=True))
        return injected[0](event, context)

    return entry  # type: ignore[return-value]
