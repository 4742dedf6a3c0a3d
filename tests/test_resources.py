"""The composition root builds each client once, however many threads ask for it first (`chalice local`
serves requests on threads, the launcher dials from a pool)."""

from __future__ import annotations

import threading
import time

import pytest

from chalicelib import resources


def _at_once(count: int, work) -> list:
    barrier = threading.Barrier(count)
    got: list = []
    failed: list = []

    def one() -> None:
        barrier.wait()
        try:
            got.append(work())
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            failed.append(exc)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failed, failed[:3]
    return got


def test_a_getter_asked_by_many_threads_at_once_builds_one_value():
    built: list[object] = []

    def slow() -> object:
        built.append(object())
        time.sleep(0.05)  # every thread arrives while the first is still building
        return built[-1]

    getter = resources._once(slow)
    got = _at_once(16, getter)
    assert len(built) == 1 and all(value is built[0] for value in got)
    getter.cache_clear()
    assert getter() is not built[0] and len(built) == 2


def test_a_getter_that_fails_is_tried_again_by_the_next_caller():
    tries: list[int] = []

    def flaky() -> str:
        tries.append(1)
        if len(tries) == 1:
            raise RuntimeError("SSM is down")
        return "token"

    getter = resources._once(flaky)
    with pytest.raises(RuntimeError):
        getter()
    assert getter() == "token" and getter() == "token" and len(tries) == 2


def test_real_clients_from_many_threads_are_one_client_each(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("CALLS_TABLE", "calls")
    resources.reset()
    try:
        tables = _at_once(12, resources.calls_table)
        clients = _at_once(12, resources.s3_client)
        assert len({id(t) for t in tables}) == 1 and len({id(c) for c in clients}) == 1
    finally:
        resources.reset()
