"""Process supervision for the local stack: start children in their own sessions, wait until they are
ready, notice one dying, and stop every one of them (and whatever they spawned) on the way out.

`make run`, the end-to-end tests, the CLI tests and the benchmarks all start their processes through this
module, so stopping them is written once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class StartupError(Exception):
    """The stack cannot start; the message says why in one line."""


class Interrupted(Exception):
    """A stop was asked for (Ctrl-C, SIGTERM, SIGHUP) while starting: stop quietly."""


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    log_path: Path

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Supervisor:
    """Starts processes in their own sessions so that stopping one also stops anything it spawned."""

    log_dir: Path
    stop: threading.Event = field(default_factory=threading.Event)
    children: list[Child] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: Mapping[str, str], cwd: Path) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        child = Child(name, process, log_path)
        self.children.append(child)
        return child

    def wait_ready(self, child: Child, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stop.is_set():
                raise Interrupted()
            if child.process.poll() is not None:
                raise StartupError(
                    f"{child.name} exited during start-up (code {child.process.returncode}):\n{child.tail()}"
                )
            if ready():
                return
            time.sleep(0.1)
        raise StartupError(f"{child.name} was not ready after {timeout:.0f} s; see {child.log_path}")

    def dead(self) -> Child | None:
        for child in self.children:
            if child.process.poll() is not None:
                return child
        return None

    def stop_all(self, grace: float = 5.0) -> None:
        """SIGTERM every process group, SIGKILL what is left after `grace` (threads watch the stop event)."""
        for thread in self.threads:
            thread.join(timeout=grace)
        for child in reversed(self.children):
            signal_group(child.process, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in reversed(self.children):
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for child in self.children:
            signal_group(child.process, signal.SIGKILL)  # whatever is left, including grandchildren
            try:
                child.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        self.children.clear()


def signal_group(process: subprocess.Popen, sig: int) -> None:
    """Send `sig` to the process group a child leads (children are started with start_new_session)."""
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Terminate a child process we started; kill it if it does not exit within `timeout` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """While the block runs, SIGINT, SIGTERM and SIGHUP set `stop` (the caller then stops its children);
    the previous handlers come back afterwards. `make run` gets SIGINT from a terminal's Ctrl-C, SIGTERM
    or SIGINT from an IDE's stop button, SIGHUP when its terminal closes.

    Signals reach `stop` through `signal.set_wakeup_fd`: the C-level handler writes the signal's number to
    a pipe, whichever thread the kernel delivered it to, and a relay thread sets `stop`; the Python handler
    does nothing. Setting the Event from a Python handler deadlocks: handlers run in the main thread
    between bytecodes, so a second signal (SIGTERM to make's process group arrives twice, once from the
    sender and once forwarded by make) runs inside the first handler's `Event.set()`, on a lock that is
    not re-entrant. And a handler waits for the main thread to wake up, which a main thread blocked in
    `Event.wait()` without a timeout never does when the signal went to another thread."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)

    def relay() -> None:
        # Reads until the block ends (end-of-file), so the pipe stays open for every later signal: with
        # its read end closed, each one made the C handler's write fail and Python print "Exception
        # ignored" from the main thread, and a burst of them hung it inside that printing.
        try:
            while os.read(read_fd, 512):
                stop.set()
        finally:
            os.close(read_fd)

    threading.Thread(target=relay, name="signal-relay", daemon=True).start()
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    previous = {sig: signal.signal(sig, _ignore) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(previous_fd)
        os.close(write_fd)  # the relay reads end-of-file and exits


def _ignore(signum: int, frame: Any) -> None:
    """Installed so that the default action (exit) does not run; the wake-up fd carries the stop."""


def http_ready(url: str) -> Callable[[], bool]:
    def check() -> bool:
        import requests

        try:
            requests.get(url, timeout=0.5)
        except requests.RequestException:
            return False
        return True

    return check


def tcp_ready(host: str, port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    return check


def _switches(pid: int) -> int | None:
    """How often process `pid` has been scheduled so far (voluntary + involuntary), None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return sum(int(line.split()[1]) for line in text.splitlines() if "ctxt_switches:" in line)


def stop_with_make(stop: threading.Event, poll: float = 0.2) -> threading.Thread | None:
    """Under `make run`, set `stop` when make itself is signalled or gone.

    GNU make forwards only SIGTERM to its recipe: a SIGINT or SIGHUP sent to the make process alone (an
    IDE's stop button) makes it wait for us for ever, and no signal reaches us. While it waits for its one
    child make is never scheduled, so any wake-up of make (its signal handler running) or its exit means
    "stop". Does nothing (None) when our parent is not make."""
    parent = os.getppid()
    try:
        name = Path(f"/proc/{parent}/comm").read_text().strip()
    except OSError:
        return None
    if name not in ("make", "gmake") or "MAKELEVEL" not in os.environ:
        return None

    def watch() -> None:
        baseline = _switches(parent)
        while not stop.wait(poll):  # settle: make may still be finishing the fork when we start
            now = _switches(parent)
            if now == baseline:
                break
            baseline = now
        while not stop.wait(poll):
            if os.getppid() != parent or _switches(parent) != baseline:
                stop.set()
                return

    thread = threading.Thread(target=watch, name="make-watch", daemon=True)
    thread.start()
    return thread
