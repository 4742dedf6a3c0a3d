"""`make run` from a fresh clone: the demo call's outcome within 90 s, and Ctrl-C leaves nothing behind.

The clone reuses this checkout's virtualenv (a symlink; `make -o` keeps make from reinstalling into it):
creating a venv is pip's job, not what this test is about.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from devtools.local_aws import free_port
from devtools.run_local import DEMO_MARKER

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
OUR_VARIABLES = ("AWS_", "PLIVO_", "TEMPLATE_", "CALLS_")
DEMO_HEARD = 'The caller heard: "Hello Ada, this is your appointment reminder for Tuesday at 10:00.'


def processes_in(directory: Path) -> list[str]:
    """Processes whose working directory is inside `directory` (what `make run` started there)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cwd == str(directory) or cwd.startswith(f"{directory}/"):
            found.append(f"{entry.name}: {cmdline}")
    return found


def read_until(process: subprocess.Popen, marker: str, timeout: float) -> str:
    """Output of `process` until `marker` appears (or it exits, or `timeout`). Unbuffered: a line
    already sitting in a read buffer must not wait for the next one."""
    fd = process.stdout.fileno()
    os.set_blocking(fd, False)
    output = b""
    deadline = time.monotonic() + timeout
    while marker.encode() not in output and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            output += chunk
        elif process.poll() is not None:
            break
    if marker.encode() in output:  # the rest of the marker's line
        end = time.monotonic() + 2
        while not output.endswith(b"\n") and time.monotonic() < end:
            if select.select([fd], [], [], 0.2)[0]:
                output += os.read(fd, 65536)
    os.set_blocking(fd, True)
    return output.decode(errors="replace")


@pytest.fixture
def clone(tmp_path):
    target = tmp_path / "callflow"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(target)], check=True)
    (target / ".venv").symlink_to(ROOT / ".venv")
    yield target
    leftovers = processes_in(target)
    for line in leftovers:
        try:
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(target, ignore_errors=True)


def make_run(clone: Path, api: int, moto: int, plivo: int) -> subprocess.Popen:
    return subprocess.Popen(
        [
            "make",
            "--no-print-directory",
            "-o",
            ".venv/.installed",
            "run",
            f"API_PORT={api}",
            f"MOTO_PORT={moto}",
            f"PLIVO_PORT={plivo}",
        ],
        cwd=clone,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={k: v for k, v in os.environ.items() if not k.startswith(OUR_VARIABLES)},
    )


def test_make_run_shows_the_demo_call_and_stops_cleanly(clone):
    api, moto, plivo = free_port(), free_port(), free_port()
    started = time.monotonic()
    process = make_run(clone, api, moto, plivo)
    try:
        output = read_until(process, DEMO_MARKER, 90)
        assert DEMO_MARKER in output, output
        assert time.monotonic() - started < 90
        assert f"{DEMO_MARKER} completed" in output, output
        # the two-step reminder: the callee pressed 1, the result and the answer are read from the job
        assert "result confirmed" in output and "answered '1'" in output, output
        assert DEMO_HEARD in output, output
        assert len(processes_in(clone)) >= 4  # make, run_local, moto, simulator, chalice local
    finally:
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        try:
            rest = process.communicate(timeout=40)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    assert "stopped 3 processes" in rest, rest
    assert "Traceback" not in output + rest
    assert no_processes_left(clone)

    # The ports are free again and nothing is left over: a second `make run` works the same way.
    second = make_run(clone, api, moto, plivo)
    try:
        output = read_until(second, DEMO_MARKER, 90)
        assert f"{DEMO_MARKER} completed" in output, output
    finally:
        os.killpg(second.pid, signal.SIGINT)
        second.communicate(timeout=40)
    assert no_processes_left(clone)


def no_processes_left(clone: Path, grace: float = 5.0) -> bool:
    deadline = time.monotonic() + grace
    while processes_in(clone) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_in(clone) == []
    return True


def test_port_in_use_gives_a_clear_message(clone):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        process = make_run(clone, free_port(), port, free_port())
        output = process.communicate(timeout=60)[0].decode(errors="replace")
    assert process.returncode != 0
    assert f"port {port} for the moto server is already in use" in output, output
    assert "Traceback" not in output
    assert no_processes_left(clone)


def make_pid(process: subprocess.Popen) -> int:
    """`make` is the session leader we started; its pid is the Popen's."""
    return process.pid


@pytest.mark.parametrize(
    ("sig", "whole_group"),
    [(signal.SIGINT, False), (signal.SIGHUP, False), (signal.SIGTERM, True), (signal.SIGHUP, True)],
    ids=["INT-to-make-alone", "HUP-to-make-alone", "TERM-to-make-run", "HUP-to-make-run"],
)
def test_any_stop_signal_to_make_stops_the_whole_stack(clone, sig, whole_group):
    """An IDE's stop button sends SIGINT to the make process only; GNU make forwards only SIGTERM to its
    recipe. Whatever the signal, nothing is left running a few seconds later."""
    process = make_run(clone, free_port(), free_port(), free_port())
    try:
        output = read_until(process, "Press Ctrl-C to stop.", 90)
        assert "Press Ctrl-C to stop." in output, output
        assert len(processes_in(clone)) >= 4
        sent = time.monotonic()
        if whole_group:
            os.killpg(process.pid, sig)
        else:
            os.kill(make_pid(process), sig)
        process.communicate(timeout=15)
        deadline = sent + 10
        while processes_in(clone) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert processes_in(clone) == [], f"left running {time.monotonic() - sent:.1f} s after the signal"
        assert time.monotonic() - sent < 10
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
