"""The S3 template store against moto: TTL, ETag revalidation, compile-once, bounds, stale-on-error.
Time is a fake clock; S3 requests are counted (and failed) at botocore's send hook."""

from __future__ import annotations

import json
import logging

import boto3
import pytest

from chalicelib.answer import render
from chalicelib.answer import routes as routing
from chalicelib.answer.store import StoreUnavailable, TemplateBroken, TemplateMissing, TemplateStore
from tests.answer.answerlib import BUCKET, PREFIX, S3Traffic, put


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def traffic(s3):
    return S3Traffic(s3)


@pytest.fixture
def store(s3, clock):
    return TemplateStore(s3, BUCKET, PREFIX, ttl=60, clock=clock, error_backoff=5.0)


def speak(store, name, **headers):
    context = render.answer_context({f"X-PH-{k}": v for k, v in headers.items()})
    return render.render(store.template(name), context)


def test_warm_requests_within_ttl_make_no_s3_request(store, traffic, clock):
    speak(store, "Welcome")
    assert len(traffic.calls) == 1 and store.compiles == 1
    traffic.reset()
    for _ in range(1000):
        clock.now += 0.05  # 50 s in all, inside the 60 s TTL
        assert "Welcome to callflow" in speak(store, "Welcome")
        store.routes()
    assert traffic.calls[1:] == []  # routes.json's first fetch is the only request
    assert len(traffic.calls) == 1 and traffic.calls[0].endswith("routes.json")
    assert store.compiles == 1


def test_after_ttl_a_304_revalidation_and_no_recompile(store, traffic, clock, s3):
    template = store.template("Reminder")
    headers = []
    s3.meta.events.register(
        "before-send.s3.GetObject", lambda request, **_: headers.append(dict(request.headers))
    )
    clock.now += 61
    traffic.reset()
    assert store.template("Reminder") is template
    assert len(traffic.calls) == 1
    assert "If-None-Match" in headers[-1]
    assert store.compiles == 1
    clock.now += 30  # fresh again after the 304
    traffic.reset()
    store.template("Reminder")
    assert traffic.calls == []


def test_a_changed_object_is_picked_up_after_ttl(store, s3, clock):
    assert "Hello Ann" in speak(store, "Reminder", Name="Ann")
    put(s3, "Reminder.xml", "<Response><Speak>Changed for {{ headers.Name }}</Speak></Response>")
    clock.now += 30
    assert "Hello Ann" in speak(store, "Reminder", Name="Ann")  # still trusted within the TTL
    clock.now += 31
    assert speak(store, "Reminder", Name="Ann") == "<Response><Speak>Changed for Ann</Speak></Response>"
    assert store.compiles == 2


def test_each_version_compiled_once_even_when_broken(store, s3, clock):
    put(s3, "Bad.xml", "<Response>{% if %}</Response>")
    for _ in range(50):
        with pytest.raises(TemplateBroken, match="line 1"):
            store.template("Bad")
    clock.now += 61
    with pytest.raises(TemplateBroken):
        store.template("Bad")
    assert store.compiles == 1


def test_unknown_names_are_remembered_briefly(s3, clock, traffic):
    store = TemplateStore(s3, BUCKET, PREFIX, ttl=60, clock=clock, unknown_ttl=5)
    with pytest.raises(TemplateMissing):
        store.template("Nope")
    for _ in range(100):
        with pytest.raises(TemplateMissing):
            store.template("Nope")
    assert len(traffic.calls) == 1
    put(s3, "Nope.xml", "<Response><Speak>now here</Speak></Response>")
    clock.now += 6
    assert "now here" in render.render(store.template("Nope"), {})
    assert store.cache_sizes() == {"templates": 1, "unknown": 0}


def test_flood_of_random_names_stays_bounded(s3, clock):
    store = TemplateStore(s3, BUCKET, PREFIX, ttl=60, clock=clock, max_unknown=100, max_templates=3)
    for i in range(250):
        with pytest.raises(TemplateMissing):
            store.template(f"Random{i}")
    assert store.cache_sizes()["unknown"] == 100
    for name in ("Welcome", "Reminder", "Promo", "PlivoTest", "Welcome"):
        store.template(name)
    assert store.cache_sizes()["templates"] == 3
    assert store.compiles == 5  # Welcome was evicted by the LRU and compiled again


def test_invalid_names_never_reach_s3(store, traffic):
    for name in ("../etc/passwd", "a/b", "", "x" * 65, "Welcome.xml", "Wel come", "ünï"):
        with pytest.raises(TemplateMissing):
            store.template(name)
    assert traffic.calls == []


def test_s3_down_with_warm_cache_serves_stale_and_backs_off(store, traffic, clock):
    template = store.template("Promo")
    traffic.down = True
    clock.now += 61
    traffic.reset()
    assert store.template("Promo") is template
    attempts = len(traffic.calls)
    assert attempts >= 1
    for _ in range(100):  # within the back-off: no more S3 traffic, still served
        clock.now += 0.01
        assert store.template("Promo") is template
    assert len(traffic.calls) == attempts
    traffic.down = False
    clock.now += 6
    assert store.template("Promo") is template  # 304 once S3 is back
    assert store.compiles == 1


def test_s3_down_cold_raises_unavailable_and_backs_off(store, traffic, clock):
    traffic.down = True
    with pytest.raises(StoreUnavailable, match="EndpointConnectionError"):
        store.template("Promo")
    attempts = len(traffic.calls)
    with pytest.raises(StoreUnavailable):
        store.template("Welcome")
    with pytest.raises(StoreUnavailable):
        store.routes()
    assert len(traffic.calls) == attempts
    traffic.down = False
    clock.now += 6
    assert store.template("Promo") is not None


def test_missing_bucket_is_an_outage_not_a_missing_template(s3, clock):
    store = TemplateStore(s3, "no-such-bucket", PREFIX, ttl=60, clock=clock)
    with pytest.raises(StoreUnavailable, match="NoSuchBucket"):
        store.template("Welcome")


def test_deleted_template_becomes_missing_after_ttl(store, s3, clock):
    store.template("Promo")
    s3.delete_object(Bucket=BUCKET, Key=PREFIX + "Promo.xml")
    clock.now += 61
    with pytest.raises(TemplateMissing):
        store.template("Promo")


def test_oversized_and_non_utf8_sources_are_broken(store, s3):
    put(s3, "Huge.xml", "<Response>" + " " * 200_000 + "</Response>")
    put(s3, "Latin.xml", b"<Response><Speak>caf\xe9</Speak></Response>")
    with pytest.raises(TemplateBroken, match="over"):
        store.template("Huge")
    with pytest.raises(TemplateBroken, match="UTF-8"):
        store.template("Latin")


def test_routes_cached_revalidated_and_errors(store, s3, clock, traffic):
    routes = store.routes()
    assert routes.choose({"Test": "Sample"}) == "PlivoTest"
    clock.now += 61
    traffic.reset()
    assert store.routes() is routes and len(traffic.calls) == 1  # 304
    put(s3, "routes.json", json.dumps({"default": "Promo", "rules": "nope"}))
    clock.now += 61
    with pytest.raises(routing.RoutesError, match="rules"):
        store.routes()
    s3.delete_object(Bucket=BUCKET, Key=PREFIX + "routes.json")
    clock.now += 61
    assert store.routes() == routing.EMPTY_ROUTES
    traffic.reset()
    clock.now += 30
    assert store.routes() == routing.EMPTY_ROUTES and traffic.calls == []  # absence is cached too


def test_access_denied_is_an_outage_stale_when_warm_logged_once_per_backoff(store, traffic, clock, caplog):
    """The role may list the prefix, so S3 says 404 for a missing key: a 403 is a real access problem."""
    caplog.set_level(logging.WARNING, logger="callflow")
    template = store.template("Promo")
    traffic.error = (403, "AccessDenied")
    clock.now += 61
    traffic.reset()
    assert store.template("Promo") is template  # stale-on-error for the cached key
    for _ in range(50):  # within the back-off: S3 is left alone, the cached version is still served
        clock.now += 0.01
        assert store.template("Promo") is template
        with pytest.raises(StoreUnavailable):
            store.template("Reminder")
    assert len(traffic.calls) == 1
    denied = [r for r in caplog.records if "denied" in r.getMessage()]
    assert [r.levelno for r in denied] == [logging.ERROR]  # one ERROR, not a WARNING per request
    clock.now += 6
    with pytest.raises(StoreUnavailable, match="access denied"):  # an unknown name is not "missing"
        store.template("Welcome")
    assert len(traffic.calls) == 2
    assert len([r for r in caplog.records if "denied" in r.getMessage()]) == 2


def test_deleted_template_is_dropped_and_negative_cached(store, s3, traffic, clock):
    """A 404 on revalidation drops the cached version (no stale-forever) and remembers the absence."""
    store.template("Promo")
    s3.delete_object(Bucket=BUCKET, Key=PREFIX + "Promo.xml")
    clock.now += 61
    with pytest.raises(TemplateMissing):
        store.template("Promo")
    assert store.cache_sizes() == {"templates": 0, "unknown": 1}
    traffic.reset()
    with pytest.raises(TemplateMissing):
        store.template("Promo")
    assert traffic.calls == []


def test_body_stream_is_closed_when_read_fails(s3, clock):
    """A body whose read() raises (connection dropped mid-body) is still closed, and counts as an outage."""
    closed = []

    class FailingBody:
        def read(self, *args):
            raise ConnectionResetError("peer reset mid-body")

        def close(self):
            closed.append(True)

    class Client:
        def get_object(self, **kwargs):
            return {"Body": FailingBody(), "ETag": '"x"'}

    store = TemplateStore(Client(), BUCKET, PREFIX, ttl=60, clock=clock)
    with pytest.raises(StoreUnavailable, match="ConnectionResetError"):
        store.template("Promo")
    assert closed == [True]


@pytest.mark.parametrize("status,code", [(500, "InternalError"), (503, "SlowDown")])
@pytest.mark.usefixtures("s3")
def test_server_errors_are_outages(clock, status, code):
    from botocore.config import Config

    client = boto3.client("s3", region_name="us-east-1", config=Config(retries={"max_attempts": 1}))
    traffic = S3Traffic(client)
    store = TemplateStore(client, BUCKET, PREFIX, ttl=60, clock=clock)
    traffic.error = (status, code)
    with pytest.raises(StoreUnavailable, match=code):
        store.template("Promo")
