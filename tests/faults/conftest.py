"""Fault and fuzz tests: the real app, the real boto3 clients from `chalicelib.resources`, moto for AWS,
the Plivo simulator for Plivo. Faults are injected at the AWS boundary (botocore's event hooks on the
app's own clients, moto IAM, a really deleted bucket), never by replacing our code.

Helpers shared by the test modules live in `faultlib.py` (a plain module, so no test imports a conftest).
"""

from __future__ import annotations

import pytest

from chalicelib import resources
from tests.faults import faultlib


@pytest.fixture(autouse=True)
def env(monkeypatch):
    """Lambda-like environment for every test; memoized clients forgotten before and after."""
    faultlib.apply_env(monkeypatch)
    resources.reset()
    yield monkeypatch
    resources.reset()


@pytest.fixture
def aws(atomic_moto):
    """One moto account holding the sample templates and the calls table (shaped like the deploy's)."""
    from moto import mock_aws

    with mock_aws():
        yield faultlib.create_stack()


@pytest.fixture
def sim_account():
    return faultlib.AUTH_ID, faultlib.TOKEN, 3.0


@pytest.fixture
def plivo_env(env, sim):
    """Point the launcher's Plivo client at the simulator."""
    env.setenv("PLIVO_API_URL", sim.url)
    resources.reset()
    return sim


@pytest.fixture
def json_logs():
    """The app's log lines as the JSON objects its formatter writes."""
    reader = faultlib.LogReader()
    yield reader
    reader.close()
