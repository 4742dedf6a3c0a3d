"""A moto server process (S3 + DynamoDB) for the CLI tests, with the bucket and the tables of the deploy
(created from infra/resources.json)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from callflow_cli.main import main
from chalicelib import resources
from devtools import local_aws
from devtools.local_aws import free_port
from devtools.run_local import Stack
from devtools.supervisor import Supervisor

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGNS_TABLE = local_aws.CAMPAIGNS_TABLE
ENV_PREFIXES = ("AWS_", "TEMPLATE_", "CALLS_", "CAMPAIGNS_", "PLIVO_", "PUBLIC_")


class Cli:
    """Runs `callflow` in-process (CliRunner) or as a real process, against one moto server."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.env = {k: v for k, v in stack.env({}).items() if k.startswith(ENV_PREFIXES)}

    def __call__(self, *args: str, env: dict | None = None):
        resources.reset()
        result = CliRunner().invoke(main, list(args), env={**self.env, **(env or {})}, catch_exceptions=True)
        resources.reset()
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"callflow {' '.join(args)} raised {result.exception!r}:\n{result.output}")
        return result

    def process(self, *args: str, env: dict | None = None, module: bool = True):
        """A real `python -m callflow_cli` (or the installed `callflow` script) process."""
        if module:
            command = [sys.executable, "-m", "callflow_cli"]
        else:
            command = [str(Path(sys.executable).parent / "callflow")]
        full_env = {**stack_free_env(), **self.env, **(env or {})}
        return subprocess.run(
            [*command, *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in full_env.items() if v is not None},
            check=False,
        )

    def s3(self):
        return self.stack.boto_client("s3")

    def table(self, name: str = local_aws.TABLE):
        """A boto3 Table of the moto server (the calls table unless named), to look at what the CLI wrote."""
        import boto3

        env = self.stack.env()
        return boto3.resource(
            "dynamodb",
            endpoint_url=self.stack.moto_url,
            region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        ).Table(name)


def stack_free_env() -> dict:
    """This process's environment without anything that points at an AWS or a Plivo account."""
    return {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    stack = Stack(
        free_port(),
        free_port(),
        free_port(),
        root=ROOT,
        extra_env={"CALL_WINDOW": "00:00-24:00", "CAMPAIGNS_TABLE": CAMPAIGNS_TABLE},
    )
    supervisor = Supervisor(tmp_path_factory.mktemp("moto-logs"))
    try:
        stack.start_aws(supervisor)
        yield Cli(stack)
    finally:
        supervisor.stop_all()
        resources.reset()
