"""The Plivo auth token: from the environment, or from an SSM SecureString (read once per container by
`resources.plivo_auth_token`). The token never appears in a log line or an error message."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalicelib.settings import ConfigError, Settings


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
