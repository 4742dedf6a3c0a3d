"""How the CLI fails: every user mistake and every AWS failure a user can cause or fix ends in one readable
line on stderr and exit 1, never a traceback. Commands raise UserError; `Group` turns the expected failures
raised anywhere below it (configuration, botocore) into one."""

from __future__ import annotations

import os
from typing import Any

import click

from chalicelib import resources
from chalicelib.settings import ConfigError

REFUSED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "403",
        "UnrecognizedClientException",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
    }
)


class UserError(click.ClickException):
    """One line for the user; exit code 1."""


def plural(count: int, noun: str) -> str:
    """`1 call`, `2 calls`: the CLI's counts read as sentences."""
    return f"{count} {noun}{'s' if count != 1 else ''}"


def aws_message(exc: BaseException) -> str | None:
    """A readable line for the AWS failures a user can cause or fix, else None."""
    from botocore import exceptions as bx

    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectTimeoutError | bx.ReadTimeoutError):
        if endpoint:
            return f"cannot reach AWS at {endpoint} (is the local stack running? start it with `make run`)"
        return f"cannot reach AWS: {exc}"
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return "no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    if isinstance(exc, bx.NoRegionError):
        return "no AWS region: set AWS_DEFAULT_REGION (e.g. us-east-1)"
    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        settings = resources.settings()
        if code in ("NoSuchBucket",) or (code in ("404", "NotFound") and "HeadBucket" in str(exc)):
            return f"bucket {settings.template_bucket!r} does not exist (TEMPLATE_BUCKET)"
        if code == "ResourceNotFoundException":
            return missing_table_message(exc)
        if code in REFUSED_CODES:
            return f"AWS refused the request ({code}): check your credentials and permissions"
        return f"AWS error {code}: {error.get('Message') or exc}"
    if isinstance(exc, bx.BotoCoreError):
        return f"AWS error: {exc}"
    return None


TABLE_SETTINGS = (("calls_table", "CALLS_TABLE"), ("campaigns_table", "CAMPAIGNS_TABLE"))


def missing_table_message(exc: BaseException) -> str:
    """Which configured table is missing. DynamoDB's message does not always name it (moto's does), so ask:
    one DescribeTable per configured table, on this failure path only."""
    from botocore.exceptions import BotoCoreError, ClientError

    settings = resources.settings()
    configured = [(getattr(settings, field), variable) for field, variable in TABLE_SETTINGS]
    configured = [(name, variable) for name, variable in configured if name]
    missing: list[tuple[str, str]] = []
    for name, variable in configured:
        try:
            resources.dynamodb_resource().meta.client.describe_table(TableName=name)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                missing.append((name, variable))
        except BotoCoreError:
            pass
    if not missing:  # DescribeTable refused or raced: fall back on the message itself
        missing = [(name, variable) for name, variable in configured if repr(name)[1:-1] in str(exc)]
    if len(missing) == 1:
        name, variable = missing[0]
        return f"table {name!r} does not exist ({variable})"
    if missing:
        return "tables " + " and ".join(f"{n!r} ({v})" for n, v in missing) + " do not exist"
    return "a table does not exist (check " + " and ".join(v for _, v in TABLE_SETTINGS) + ")"


class Group(click.Group):
    """Turns expected failures raised anywhere below into one line and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except ConfigError as exc:
            raise UserError(str(exc)) from None
        except Exception as exc:
            message = aws_message(exc)
            if message is None:
                raise
            raise UserError(message) from None
