"""Logs through Powertools for AWS Lambda's Logger: one JSON object per line, fields as keyword arguments
(`log.info("call placed", call_id=..., request_uuid=...)`), so CloudWatch Logs Insights can query each one.

Everything Lambda runs logs through the one `log`; its level follows LOG_LEVEL once the settings are read.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
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
    when it is built, and importing app.py reads none. An invocation that logs nothing builds none, so a
    cold start whose first answer is served without a line never imports Powertools (15-20 ms of it).

    What would have been applied to it before then is kept and applied when it is built: the level
    (`set_level`) and the running invocation's Lambda context (`lambda_entry`), through Powertools' own
    `inject_lambda_context`, so its lines carry the same keys as if it had existed from the start."""

    _logger: Logger | None = None
    _level: int | None = None
    _invocation: tuple[Any, Any, bool] | None = None  # (event, Lambda context, cold start) while unbuilt

    def __getattr__(self, name: str) -> Any:
        logger = _Lazy._logger
        if logger is None:
            logger = _build()
        return getattr(logger, name)


# `chalice local` serves requests on threads: two first lines at once must build one Logger, not two
# (a second Powertools Logger of the same service resets the first one's handler while it is in use).
_building = threading.Lock()


def _build() -> Logger:
    with _building:
        return _Lazy._logger or _new_logger()


def _new_logger() -> Logger:
    from aws_lambda_powertools import Logger

    logger = Logger(service=SERVICE, logger_handler=_StderrHandler(), level="INFO", use_rfc3339=True)
    if _Lazy._level is not None:
        logger.setLevel(_Lazy._level)
    invocation = _Lazy._invocation
    if invocation is not None:
        event, context, cold = invocation
        # Powertools' decorator around nothing: the keys it sets at an invocation's start, set now.
        logger.inject_lambda_context(_nothing, clear_state=True)(event, context)
        logger.append_keys(cold_start=cold)  # Powertools' own flag counts decorated calls, not invocations
    _Lazy._logger = logger
    return logger


def _nothing(event: Any, context: Any) -> None:
    return None


log: Logger = _Lazy()  # type: ignore[assignment]


def set_level(level: str) -> None:
    number = getattr(logging, level.upper(), logging.INFO)
    if _Lazy._logger is None:
        _Lazy._level = number
    else:
        log.setLevel(number)


def cause(exc: BaseException) -> str:
    """A caught exception as one short field: its type and message, never a traceback."""
    return f"{type(exc).__name__}: {exc}"


# Powertools settings that act at every invocation's start (log the event, sample DEBUG): with either set,
# the Logger is built when an invocation starts, as Powertools' decorator would have it.
_EVERY_INVOCATION = ("POWERTOOLS_LOGGER_LOG_EVENT", "POWERTOOLS_LOGGER_SAMPLE_RATE")
_cold = [True]  # no invocation with a Lambda context has started in this process yet


def lambda_entry(handler: Handler) -> Handler:
    """Powertools' `inject_lambda_context` (request id, function, cold_start) when a real Lambda context
    is there; tests and `chalice local`'s stand-ins without one run the handler as it is. While no Logger
    exists, the context is kept for the one a log line would build (see `_Lazy`)."""
    injected: list[Handler] = []

    @functools.wraps(handler)
    def entry(event: Any, context: Any = None) -> Any:
        if context is None or not hasattr(context, "aws_request_id") or not hasattr(context, "function_name"):
            return handler(event, context)
        cold, _cold[0] = _cold[0], False
        if _Lazy._logger is None and not any(os.environ.get(name) for name in _EVERY_INVOCATION):
            _Lazy._invocation = (event, context, cold)
            try:
                return handler(event, context)
            finally:
                _Lazy._invocation = None
        if not injected:
            injected.append(log.inject_lambda_context(handler, clear_state=True))
        return injected[0](event, context)

    return entry  # type: ignore[return-value]
