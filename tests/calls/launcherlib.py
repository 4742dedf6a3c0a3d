"""Shared pieces of the launcher tests: their settings and the job factory (a named module, so no test
imports a conftest)."""

from __future__ import annotations

from tests.support import make_job

__all__ = ["AUTH_ID", "AUTH_TOKEN", "BASE", "ENV", "TABLE", "UNSET", "make_job"]

TABLE = "callflow-calls-test"
AUTH_ID = "MAXXXXXXXXXXXXXXXXXX"
AUTH_TOKEN = "test-token-do-not-log"
BASE = "https://example.execute-api.us-east-1.amazonaws.com/api"

ENV = {
    "CALLS_TABLE": TABLE,
    "PLIVO_AUTH_ID": AUTH_ID,
    "PLIVO_AUTH_TOKEN": AUTH_TOKEN,
    "PUBLIC_BASE_URL": BASE,
    "PLIVO_CPS": "50",
    "CALL_WINDOW": "00:00-00:00",
    "DEFAULT_TZ": "UTC",
    "VERIFY_SIGNATURES": "false",
}
UNSET = ("PLIVO_AUTH_TOKEN_PARAM", "PLIVO_API_URL", "MAX_ATTEMPTS", "RETRY_DELAYS")
