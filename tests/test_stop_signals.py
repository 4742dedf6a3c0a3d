"""`stop_on_signals`: a stop signal always stops, however signals land.

CI once saw `make run` hang for ever after SIGTERM to make's process group: the signal arrives twice (from
the sender and forwarded by make), and the old handler's `Event.set()` ran inside the first one's, on a lock
that is not re-entrant. Each case runs in its own interpreter so that a deadlock is a timeout, not a hang.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from devtools.local_aws import free_port
from devtools.supervisor import STOP_SIGNALS, stop_on_signals

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def child_process(argv: list[str], stderr: int | None = None) -> Iterator[subprocess.Popen]:
    """A Python child of this checkout with its stdout piped; killed if a check fails."""
    child = subprocess.Popen(
        [sys.executable, *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True
    )
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def python_code(code: str) -> list[str]:
    return ["-c", textwrap.dedent(code)]


def test_a_signal_while_the_main_thread_holds_the_events_lock_still_stops():
    """Where a handler lands inside `Event.set()` or `Event.wait()`: the Event's lock is held by the very
    thread the handler runs on. Setting the Event from the handler deadlocks here, every time."""
    result = run_python(
        """
        import signal, threading
        from devtools.supervisor import stop_on_signals
        stop = threading.Event()
        with stop_on_signals(stop):
            with stop._cond:  # what Event.set and Event.wait hold while they run
                signal.raise_signal(signal.SIGTERM)
                signal.raise_signal(signal.SIGTERM)
            print("stopped" if stop.wait(5) else "not stopped")
        """,
        timeout=20,
    )
    assert result.stdout.strip() == "stopped", result.stderr


def test_a_signal_the_kernel_gives_another_thread_stops_a_main_thread_waiting_without_timeout():
    """A process-directed signal goes to any thread that does not block it. A Python handler runs only
    when the main thread next wakes up, and one blocked in `Event.wait()` without a timeout never does."""
    code = """
        import signal, threading
        from devtools.supervisor import stop_on_signals
        stop = threading.Event()
        with stop_on_signals(stop):
            signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])  # main thread only
            print("ready", flush=True)
            stop.wait()
            print("stopped", flush=True)
        """
    with child_process(python_code(code)) as child:
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=10)
        assert out.strip() == "stopped"


def test_a_burst_of_stop_signals_at_a_waiting_loop_stops_it():
    """The shape of `make run`'s main loop, hit by signals as fast as they can be sent until it says it
    stopped (it stays in the block a moment after, so none of them finds the default handler)."""
    code = """
        import threading, time
        from devtools.supervisor import stop_on_signals
        stop = threading.Event()
        with stop_on_signals(stop):
            print("ready", flush=True)
            while not stop.wait(0.001):
                pass
            print("stopped", flush=True)
            time.sleep(1)
        """
    with tempfile.TemporaryFile("w+") as errors, child_process(python_code(code), stderr=errors) as child:
        assert child.stdout.readline().strip() == "ready"
        fd = child.stdout.fileno()
        sent = 0
        deadline = time.monotonic() + 10
        while not select.select([fd], [], [], 0)[0] and time.monotonic() < deadline:
            os.kill(child.pid, STOP_SIGNALS[sent % len(STOP_SIGNALS)])
            sent += 1
        out, _ = child.communicate(timeout=10)
        assert out.strip() == "stopped", f"after {sent} signals"
        assert child.returncode == 0
        errors.seek(0)
        assert errors.read() == ""  # every signal's wake-up byte found the pipe open (no "Exception ignored")


def test_the_block_restores_the_handlers_and_its_relay_ends():
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    stop = threading.Event()
    with stop_on_signals(stop):
        assert all(signal.getsignal(sig) is not before[sig] for sig in STOP_SIGNALS)
    assert {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} == before
    deadline = time.monotonic() + 5
    while any(t.name == "signal-relay" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.name == "signal-relay" for t in threading.enumerate())
    assert not stop.is_set()  # leaving the block is not a stop


@pytest.mark.parametrize("signals", [(signal.SIGTERM, signal.SIGTERM), (signal.SIGTERM, signal.SIGINT)])
def test_the_simulator_stops_on_back_to_back_signals(signals):
    argv = ["-m", "devtools.plivo_sim", "--host", "127.0.0.1", "--port", str(free_port()), "--quiet"]
    with child_process(
        argv + ["--auth-id", "MATEST00000000000000", "--auth-token", "token"], subprocess.STDOUT
    ) as sim:
        assert "listening" in sim.stdout.readline()
        for sig in signals:
            sim.send_signal(sig)
        sim.communicate(timeout=10)
        assert sim.returncode == 0
