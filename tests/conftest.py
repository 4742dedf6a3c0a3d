"""Fixtures shared by every test directory. Helpers a test module imports live in `tests/support.py`
(a named module, so no test imports a conftest); each directory's conftest.py holds only its settings.

A directory that wants the Plivo simulator defines `sim_account` (auth id, token, hold seconds)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # app.py, devtools/ and bench/ import from the root, however pytest started
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def atomic_moto(monkeypatch):
    """In-process moto with each request applied atomically, as DynamoDB applies a conditional write."""
    from tests import support

    support.serialise_moto(monkeypatch)


@pytest.fixture
def sim(sim_account):
    """The Plivo simulator's real HTTP server in this process, for the directory's account."""
    from devtools.plivo_sim import PlivoSimulator

    auth_id, token, hold_seconds = sim_account
    simulator = PlivoSimulator(auth_id, token, hold_seconds=hold_seconds).start()
    yield simulator
    simulator.stop()
