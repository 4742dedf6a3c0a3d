"""Structured logs: one JSON object per line, so CloudWatch Logs Insights can query every field."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

ROOT = "callflow"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (test runners and tools swap it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure(level: str = "INFO") -> None:
    """Attach the JSON handler once; Lambda's runtime handler on the root logger is bypassed."""
    logger = logging.getLogger(ROOT)
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(getattr(logging, level.upper(), logging.INFO))


def get_logger(name: str) -> logging.Logger:
    short = name.rsplit(".", 1)[-1]
    return logging.getLogger(f"{ROOT}.{short}")


def log(logger: logging.Logger, level: int, message: str, **fields: Any) -> None:
    """Log `message` with extra JSON fields (call_uuid, call_id, cause ...)."""
    if logger.isEnabledFor(level):
        logger.log(level, message, extra={"fields": fields})
