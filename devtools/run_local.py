"""`make run`: the whole call flow on this machine, with no AWS account and no Plivo account.

Starts, each on its own port: a moto server (S3 + DynamoDB), `chalice local --stage local` (the /answer and
/hangup routes), the Plivo simulator; creates the template bucket and the calls table (from
infra/resources.json, like the deploy), pushes templates/, runs the launcher at once and then every minute
(chalice local runs no schedules), enqueues a demo call and tells, in plain words, what it heard and how it
ended. Ctrl-C stops every process it started. Logs of each process go to .local/logs/.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools import local_aws
from devtools.local_aws import MotoServer, port_problem
from devtools.supervisor import (
    Interrupted,
    StartupError,
    Supervisor,
    http_ready,
    signal_group,
    stop_on_signals,
    stop_with_make,
    tcp_ready,
)

ROOT = Path.cwd()
SIM_AUTH_ID = "MASIMULATOR000000000"
SIM_AUTH_TOKEN = "local-simulator-token"  # noqa: S105 - the simulator's own fake account
DEMO_TO = "14155550123"
DEMO_FROM = "14155550100"
DEMO_HEADERS = {"Template": "Appointment"}
DEMO_DATA = {"Name": "Ada", "When": "Tuesday at 10:00"}
DEMO_CALLEE = {"inputs": ["1"]}  # the simulated callee presses 1 at the first prompt
FINAL_STATUSES = ("completed", "failed", "unknown", "cancelled")
DEMO_MARKER = "==> demo call finished:"


def say(message: str = "") -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """Ports and environment of one local stack; `env` is what every process (and the CLI) needs."""

    api_port: int
    moto_port: int
    plivo_port: int
    host: str = "127.0.0.1"
    root: Path = ROOT
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def moto_url(self) -> str:
        return f"http://{self.host}:{self.moto_port}"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def plivo_url(self) -> str:
        return f"http://{self.host}:{self.plivo_port}"

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        for name in (*local_aws.REAL_ACCOUNT_VARIABLES, "PLIVO_AUTH_TOKEN_PARAM"):
            env.pop(name, None)
        env.update(local_aws.aws_env(self.moto_url))
        env.update(
            {
                "TEMPLATE_BUCKET": local_aws.BUCKET,
                "CALLS_TABLE": local_aws.TABLE,
                "CAMPAIGNS_TABLE": local_aws.CAMPAIGNS_TABLE,
                "PLIVO_AUTH_ID": SIM_AUTH_ID,
                "PLIVO_AUTH_TOKEN": SIM_AUTH_TOKEN,
                "PLIVO_API_URL": self.plivo_url,
                "PUBLIC_BASE_URL": self.api_url,
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.setdefault("TEMPLATE_CACHE_TTL", "5")
        # A demo must dial whatever the hour; set CALL_WINDOW to watch the window logic.
        env.setdefault("CALL_WINDOW", "00:00-24:00")
        env.update(self.extra_env)
        return env

    def ports(self) -> list[tuple[str, str, int]]:
        return [
            ("API (chalice local)", "API_PORT", self.api_port),
            ("moto server", "MOTO_PORT", self.moto_port),
            ("Plivo simulator", "PLIVO_PORT", self.plivo_port),
        ]

    def check_ports(self) -> None:
        seen: dict[int, str] = {}
        for label, variable, port in self.ports():
            if port in seen:
                raise StartupError(f"{label} and {seen[port]} cannot share port {port}")
            seen[port] = label
            problem = port_problem(self.host, port)
            if problem:
                raise StartupError(
                    f"port {port} for the {label} is {problem}: stop what is using it, "
                    f"or pick another one, e.g. `make run {variable}={port + 1}`"
                )

    def start(self, supervisor: Supervisor, status_by_suffix: Mapping[str, str] | None = None) -> None:
        """Start moto, create bucket and table, start the simulator and chalice local; all ready on return."""
        env = self.env()
        python = sys.executable
        self.start_aws(supervisor)
        sim_argv = [
            python,
            "-m",
            "devtools.plivo_sim",
            "--host",
            self.host,
            "--port",
            str(self.plivo_port),
            "--auth-id",
            SIM_AUTH_ID,
            "--auth-token",
            SIM_AUTH_TOKEN,
            "--play-calls",
        ]
        for suffix, status in (status_by_suffix or {}).items():
            sim_argv += ["--status", f"{suffix}={status}"]
        sim = supervisor.start("plivo-sim", sim_argv, env, self.root)
        chalice = supervisor.start(
            "chalice",
            [
                python,
                "-c",
                "import sys; from chalice.cli import main; sys.exit(main())",
                "local",
                "--stage",
                "local",
                "--host",
                self.host,
                "--port",
                str(self.api_port),
                "--no-autoreload",
            ],
            env,
            self.root,
        )
        supervisor.wait_ready(sim, http_ready(f"{self.plivo_url}/__sim/config"), 30)
        # A TCP connect, not a request: chalice local listens only once app.py is imported, and an early
        # /answer would make the warm template cache remember that routes.json is missing.
        supervisor.wait_ready(chalice, tcp_ready(self.host, self.api_port), 60)

    def start_aws(self, supervisor: Supervisor) -> None:
        """The moto server on moto_port, with the template bucket and the calls table."""
        MotoServer(self.moto_port, self.host).start(supervisor, self.env())
        try:
            self.create_resources()
        except Exception as exc:  # noqa: BLE001 - any failure here is reported as one line
            raise StartupError(
                f"cannot create the bucket and table in moto: {type(exc).__name__}: {exc}"
            ) from None

    def boto_client(self, service: str):
        return local_aws.client(service, self.moto_url)

    def create_resources(self) -> None:
        local_aws.ensure_bucket(self.boto_client("s3"), local_aws.BUCKET)
        resources_json = self.root / "infra" / "resources.json"
        dynamodb = self.boto_client("dynamodb")
        local_aws.ensure_table(dynamodb, local_aws.TABLE, resources_json)
        local_aws.ensure_table(dynamodb, local_aws.CAMPAIGNS_TABLE, resources_json, "CampaignsTable")
        local_aws.ensure_events_queue(self.boto_client("sqs"), self.boto_client("events"))

    def callflow(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run the CLI as a user would (`python -m callflow_cli ...`) against this stack."""
        # Own session: Ctrl-C is for the supervisor, which lets a running command finish, then stops.
        return subprocess.run(
            [sys.executable, "-m", "callflow_cli", *args],
            cwd=self.root,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            start_new_session=True,
        )

    def heard(self) -> list[dict[str, Any]]:
        import requests

        return requests.get(f"{self.plivo_url}/__sim/heard", timeout=5).json()


# --------------------------------------------------------------------------- scheduler and demo


class Scheduler(threading.Thread):
    """chalice local runs no schedules: run the launcher now and then every `interval` seconds."""

    def __init__(self, stack: Stack, interval: float, stop: threading.Event) -> None:
        super().__init__(name="scheduler", daemon=True)
        self.stack = stack
        self.interval = interval
        self.stop_event = stop

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.run_once()
            self.stop_event.wait(self.interval)

    def run_once(self) -> None:
        """One `callflow launch` in a child process (a fresh interpreter, like a Lambda invocation)."""
        process = subprocess.Popen(
            [sys.executable, "-m", "callflow_cli", "launch"],
            cwd=self.stack.root,
            env=self.stack.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        watcher = threading.Thread(target=self._stop_on_shutdown, args=(process,), daemon=True)
        watcher.start()
        stdout, stderr = process.communicate()
        log_dir = self.stack.root / ".local" / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir / "launcher.log", "a", encoding="utf-8") as log_file:
            log_file.write(stderr or "")
        if self.stop_event.is_set():
            return
        if process.returncode == 0:
            say(f"[scheduler] launcher pass: {_summary(stdout)}")
        else:
            lines = (stderr or stdout).strip().splitlines()
            say(f"[scheduler] launcher pass failed: {lines[-1] if lines else process.returncode}")

    def _stop_on_shutdown(self, process: subprocess.Popen) -> None:
        while process.poll() is None:
            if self.stop_event.wait(0.2):
                signal_group(process, signal.SIGTERM)
                try:
                    process.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    signal_group(process, signal.SIGKILL)
                return


def _summary(stdout: str) -> str:
    import json

    try:
        data = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return stdout.strip()
    return ", ".join(f"{count} {name}" for name, count in data.items())


def enqueue_demo(stack: Stack) -> str:
    call_id = f"demo-{int(time.time())}"
    args = ["calls", "add", "--id", call_id, "--to", DEMO_TO, "--from", DEMO_FROM, "--window", "00:00-24:00"]
    for name, value in DEMO_HEADERS.items():
        args += ["--header", f"{name}={value}"]
    for name, value in DEMO_DATA.items():
        args += ["--data", f"{name}={value}"]
    import requests

    requests.post(
        f"{stack.plivo_url}/__sim/callees", json={DEMO_TO: DEMO_CALLEE}, timeout=5
    ).raise_for_status()
    result = stack.callflow(*args)
    if result.returncode != 0:
        problem = result.stderr.strip() or result.stdout.strip()
        raise StartupError(f"could not enqueue the demo call: {problem}")
    return call_id


def describe(job: Mapping[str, Any], heard: Mapping[str, Any] | None) -> list[str]:
    """What the demo caller experienced, in plain words."""
    headers = ", ".join(f"{k}={v}" for k, v in (job.get("headers") or {}).items()) or "none"
    lines = [f"Demo call {job['call_id']}: from {job.get('from')} to {job.get('to')}, headers {headers}."]
    if heard is None:
        lines.append("  The simulator has no record of what the caller heard.")
    elif heard.get("error"):
        lines.append(f"  Plivo could not use the answer: {heard['error']}")
    else:
        for event in heard.get("events", []):
            lines.append("  " + _event_words(event))
        if not heard.get("events"):
            lines.append(f"  The call was not answered (CallStatus {heard.get('call_status')}).")
    for step, given in sorted((job.get("responses") or {}).items(), key=lambda kv: str(kv[1].get("at", ""))):
        said = given.get("Digits") or given.get("Speech") or ""
        lines.append(f"  At step {step} the caller answered {said!r}.")
    if job.get("result"):
        lines.append(f"  The conversation's result, stored on the job: {job['result']}.")
    outcome = job.get("outcome") or (heard or {}).get("call_status") or "?"
    cause = job.get("hangup_cause") or (heard or {}).get("hangup_cause") or ""
    duration = job.get("duration", (heard or {}).get("duration", 0))
    lines.append(
        f"  The call ended: {outcome}{f' ({cause})' if cause else ''} after {duration} s; "
        f"the job is now {job.get('status')}"
        + (f", CallUUID {job['call_uuid']}" if job.get("call_uuid") else "")
        + "."
    )
    return lines


def _event_words(event: Mapping[str, Any]) -> str:
    verb = event.get("verb")
    if verb == "Speak":
        return f'The caller heard: "{event.get("text")}"'
    if verb == "Play":
        return f"The caller heard the audio file {event.get('url')}"
    if verb in ("GetDigits", "GetInput"):
        prompts = "; ".join(_event_words(p) for p in event.get("prompts", []))
        wanted = f"{event.get('num_digits')} digit(s)" if event.get("num_digits") else "digits"
        return f"The caller was asked for {wanted} ({prompts or 'no prompt'})."
    if verb == "Wait":
        return f"Silence for {event.get('length')} s."
    if verb == "Hangup":
        return "The app hung up" + (f" (reason {event['reason']})." if event.get("reason") else ".")
    if verb == "Redirect":
        return f"The call was redirected to {event.get('url')}"
    if verb == "Dial":
        return f"The call was transferred to {', '.join(event.get('targets', []))}"
    return f"<{verb}> {event.get('text') or ''}".rstrip()


def wait_for_demo(
    stack: Stack, call_id: str, stop: threading.Event, timeout: float
) -> tuple[dict, dict | None]:
    """Wait until the demo job has its hangup recorded (final, or back to pending for a retry)."""
    from boto3.dynamodb.types import TypeDeserializer

    from chalicelib.calls.jobs import plain

    client = stack.boto_client("dynamodb")
    deserialize = TypeDeserializer().deserialize
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline and not stop.is_set():
        item = client.get_item(
            TableName=local_aws.TABLE, Key={"call_id": {"S": call_id}}, ConsistentRead=True
        ).get("Item")
        if item:
            job = plain({k: deserialize(v) for k, v in item.items()})
            if job.get("status") in FINAL_STATUSES or job.get("outcome"):
                # The simulator files its record once the hangup callback has been answered: just after.
                heard = None
                settle = time.monotonic() + 5
                while heard is None and time.monotonic() < settle and not stop.is_set():
                    heard = next(
                        (h for h in stack.heard() if h.get("request_uuid") == job.get("request_uuid")), None
                    )
                    if heard is None:
                        stop.wait(0.1)
                return job, heard
        stop.wait(0.25)
    if stop.is_set():
        raise Interrupted()
    raise TimeoutError(
        f"the demo call had no outcome after {timeout:.0f} s (job status "
        f"{job.get('status', 'missing')}); see {stack.root / '.local' / 'logs'}"
    )


# --------------------------------------------------------------------------- main


def run(stack: Stack, interval: float, demo: bool, demo_timeout: float) -> int:
    stop = threading.Event()
    with stop_on_signals(stop):
        stop_with_make(stop)
        return _run(stack, interval, demo, demo_timeout, stop)


def _run(stack: Stack, interval: float, demo: bool, demo_timeout: float, stop: threading.Event) -> int:
    supervisor = Supervisor(stack.root / ".local" / "logs", stop)
    code = 0
    try:
        stack.check_ports()
        say(
            f"starting moto server on {stack.moto_url}, the Plivo simulator on {stack.plivo_url}, "
            f"chalice local on {stack.api_url} ..."
        )
        stack.start(supervisor, status_by_suffix={"0": "busy"})
        pushed = stack.callflow("templates", "push", str(stack.root / "templates"))
        if stop.is_set():
            raise Interrupted()
        if pushed.returncode != 0:
            raise StartupError(f"templates push failed:\n{pushed.stderr.strip()}")
        say(pushed.stdout.strip())
        call_id = enqueue_demo(stack) if demo else None
        if stop.is_set():
            raise Interrupted()
        if call_id:
            say(
                f"enqueued demo call {call_id} to {DEMO_TO} with headers "
                + ", ".join(f"X-PH-{k}={v}" for k, v in DEMO_HEADERS.items())
                + " and data "
                + ", ".join(f"{k}={v!r}" for k, v in DEMO_DATA.items())
                + " (the simulated callee will press 1)"
            )
        scheduler = Scheduler(stack, interval, stop)
        scheduler.start()
        supervisor.threads.append(scheduler)
        if call_id and not stop.is_set():
            try:
                job, heard = wait_for_demo(stack, call_id, stop, demo_timeout)
            except TimeoutError as exc:
                say(f"{DEMO_MARKER} no outcome: {exc}")
            else:
                for line in describe(job, heard):
                    say(line)
                say(
                    f"{DEMO_MARKER} {job.get('outcome') or job.get('status')} (job {job.get('status')}"
                    + (f", result {job['result']}" if job.get("result") else "")
                    + ")"
                )
        banner(stack, interval)
        while not stop.wait(0.5):
            dead = supervisor.dead()
            if dead is not None:
                say(f"{dead.name} stopped unexpectedly (code {dead.process.returncode}):\n{dead.tail()}")
                code = 1
                break
    except StartupError as exc:
        say(f"make run: {exc}")
        code = 2
    except Interrupted:
        pass
    finally:
        stop.set()
        count = len(supervisor.children)
        supervisor.stop_all()
        if count:
            say(f"stopped {count} process{'es' if count != 1 else ''}; bye.")
    return code


def banner(stack: Stack, interval: float) -> None:
    env = stack.env({})
    exports = " ".join(
        f"{name}={env[name]}"
        for name in (
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
            "TEMPLATE_BUCKET",
            "CALLS_TABLE",
            "CAMPAIGNS_TABLE",
            "PLIVO_AUTH_ID",
            "PLIVO_AUTH_TOKEN",
            "PLIVO_API_URL",
            "PUBLIC_BASE_URL",
        )
    )
    say("")
    say(f"callflow is running: answer URL {stack.api_url}/answer, hangup URL {stack.api_url}/hangup.")
    say(f"The launcher runs every {interval:.0f} s. Logs: {stack.root / '.local' / 'logs'}/")
    say("To use the CLI against this stack, in another terminal:")
    say(f"  export {exports}")
    say("  .venv/bin/callflow calls add --to 14155550110 --from 14155550100 --header Campaign=Spring")
    say("  (destinations ending in 0 are busy in the simulator, so you can watch the retry)")
    say(f"Calling window here: {env['CALL_WINDOW']} (set CALL_WINDOW before `make run` to change it).")
    say("Press Ctrl-C to stop.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__.split("\n")[0])
    parser.add_argument("--api-port", type=int, default=8000)
    parser.add_argument("--moto-port", type=int, default=5000)
    parser.add_argument("--plivo-port", type=int, default=8111)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between launcher passes")
    parser.add_argument("--no-demo", action="store_true", help="do not enqueue the demo call")
    parser.add_argument("--demo-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    stack = Stack(
        args.api_port,
        args.moto_port,
        args.plivo_port,
        host=args.host,
        root=Path.cwd(),
        extra_env={"RETRY_DELAYS": os.environ.get("RETRY_DELAYS", "60")},
    )
    return run(stack, args.interval, not args.no_demo, args.demo_timeout)


if __name__ == "__main__":
    sys.exit(main())
