"""The Call API client takes the environment's proxies and CA bundle, as `requests` does for any request,
and looks them up once per client rather than on every call."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from chalicelib.calls.plivo_api import PlivoClient
from tests.calls.launcherlib import AUTH_ID, AUTH_TOKEN, make_job
from tests.calls.pacinglib import launcher_for
from tests.support import call_api_server

BODY = {"from": "14155559999", "to": "14155550100", "answer_url": "https://example.com/a"}
PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
NO_PROXY_VARIABLES = ("NO_PROXY", "no_proxy")


@contextlib.contextmanager
def serve(context: ssl.SSLContext | None = None) -> Iterator[tuple[str, list[str]]]:
    """A Call API stand-in that keeps each request line: its base URL and those lines."""
    lines: list[str] = []
    with call_api_server(lambda handler, raw: lines.append(handler.requestline), context) as url:
        yield url, lines


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARIABLES + NO_PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def proxy() -> Iterator[tuple[str, list[str]]]:
    with serve() as (url, lines):
        yield url, lines


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key: trusted only where a CA bundle names it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "callflow test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_calls_go_through_the_environments_proxy_looked_up_once_per_client(clean_env, proxy):
    url, lines = proxy
    clean_env.setenv("HTTP_PROXY", url)
    client = PlivoClient(AUTH_ID, AUTH_TOKEN, "http://plivo.invalid")
    hooks: list[str] = []
    placed = client.create_call(
        BODY, before_send=lambda: hooks.append("before"), on_sent=lambda: hooks.append("sent")
    )
    assert placed.outcome == "placed"
    assert lines == [f"POST http://plivo.invalid/v1/Account/{AUTH_ID}/Call/ HTTP/1.1"]
    assert hooks == ["before", "sent"]  # the launcher's hold and start stamp work through a proxy too

    clean_env.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    assert client.create_call(BODY).outcome == "placed"  # the client's proxy is the one it looked up
    assert len(lines) == 2
    refused = PlivoClient(AUTH_ID, AUTH_TOKEN, "http://plivo.invalid").create_call(BODY)
    assert refused.outcome == "retry" and len(lines) == 2  # a new client reads the environment anew


def test_no_proxy_keeps_the_call_api_off_the_proxy(clean_env, proxy):
    url, lines = proxy
    with serve() as (base, direct):
        clean_env.setenv("HTTP_PROXY", url)
        clean_env.setenv("NO_PROXY", "127.0.0.1")
        client = PlivoClient(AUTH_ID, AUTH_TOKEN, base)
        assert client.create_call(BODY).outcome == "placed"
        assert lines == [] and direct == [f"POST /v1/Account/{AUTH_ID}/Call/ HTTP/1.1"]


def test_calls_trust_the_ca_bundle_requests_ca_bundle_names(clean_env, tmp_path):
    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with serve(context) as (base, lines):
        clean_env.delenv("CURL_CA_BUNDLE", raising=False)
        clean_env.delenv("REQUESTS_CA_BUNDLE", raising=False)
        untrusted = PlivoClient(AUTH_ID, AUTH_TOKEN, base).create_call(BODY)
        assert untrusted.outcome == "retry" and "TLS handshake failed" in (untrusted.error or "")
        assert lines == []

        clean_env.setenv("REQUESTS_CA_BUNDLE", str(cert))
        client = PlivoClient(AUTH_ID, AUTH_TOKEN, base)
        assert client.create_call(BODY).outcome == "placed"
        assert lines == [f"POST /v1/Account/{AUTH_ID}/Call/ HTTP/1.1"]


def test_a_ca_bundle_path_that_does_not_exist_sends_nothing_and_raises_nothing(clean_env, tmp_path):
    missing = tmp_path / "no-such-bundle.pem"
    clean_env.setenv("REQUESTS_CA_BUNDLE", str(missing))
    client = PlivoClient(AUTH_ID, AUTH_TOKEN, "https://127.0.0.1:9")
    result = client.create_call(BODY)
    assert result.outcome == "config_error" and result.status is None
    assert result.error is not None and "not sent" in result.error and str(missing) in result.error
    record = client.call_record("abc-123")
    assert record.status is None and record.sent is False and "not sent" in (record.error or "")


def test_a_run_whose_call_api_request_cannot_be_set_up_stops_and_leaves_every_job_pending(
    clean_env, tmp_path, repo, caplog
):
    clean_env.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "no-such-bundle.pem"))
    for i in range(3):
        repo.add(make_job(f"job-{i}"))
    run = launcher_for(repo, None, "https://127.0.0.1:9")
    with caplog.at_level(logging.ERROR, logger="callflow"):
        summary = run.run()
    assert summary["placed"] == summary["failed"] == summary["unknown"] == 0
    assert run.stop_reason == "the Call API request cannot be sent from here"
    jobs = repo.list()
    assert [job["status"] for job in jobs] == ["pending"] * 3  # none left `dialing`, none failed
    assert all(not job.get("attempts") for job in jobs)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["launcher configuration error; run stopped"]
