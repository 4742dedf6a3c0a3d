"""Campaign rules and callee zones: pure, no AWS."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from callflow_cli import campaign_rules
from callflow_cli.campaign_rules import CampaignError
from chalicelib.calls import numbers
from chalicelib.calls.campaigns import Campaign, CampaignState, next_allowed


def at(zone: str, *parts: int) -> float:
    return datetime(*parts, tzinfo=ZoneInfo(zone)).timestamp()


def local(instant: float, zone: str) -> datetime:
    return datetime.fromtimestamp(instant, ZoneInfo(zone))


@pytest.mark.parametrize(
    ("text", "days"),
    [
        ("mon-fri", (0, 1, 2, 3, 4)),
        ("sat,sun", (5, 6)),
        ("fri-mon", (0, 4, 5, 6)),
        ("Wed", (2,)),
        ("mon-wed,fri", (0, 1, 2, 4)),
    ],
)
def test_days(text, days):
    assert campaign_rules.parse_days(text) == days


@pytest.mark.parametrize("text", ["", "monday", "mon-xyz", "1-5"])
def test_bad_days(text):
    with pytest.raises(CampaignError, match="days"):
        campaign_rules.parse_days(text)


def test_retry_rules():
    assert campaign_rules.parse_retry("busy=300,900") == ("busy", (300, 900))
    assert campaign_rules.parse_retry("machine=") == ("machine", ())
    for bad in ("busy", "cancel=300", "busy=5m", "busy=-1"):
        with pytest.raises(CampaignError):
            campaign_rules.parse_retry(bad)


def test_campaign_round_trips_through_its_item():
    c = Campaign(
        "Spring-1",
        CampaignState.PAUSED,
        "09:00-17:00",
        "Europe/Paris",
        (0, 1, 2, 3, 4),
        ("2026-12-25",),
        4,
        {"busy": (300, 900), "machine": ()},
        "voicemail:Vm",
        "14155550100",
        2.0,
    )
    assert c.problems() == []
    assert Campaign.from_item(c.to_item()) == c


def test_campaign_problems_name_every_rule():
    c = Campaign(
        "bad name",
        window="8-21",
        tz="Mars/Base",
        days=(),
        max_attempts=0,
        weight=0,
        machine_detection="voicemail:",
    )
    said = " ".join(c.problems())
    for word in ("name", "window", "Mars/Base", "days", "max_attempts", "weight", "machine detection"):
        assert word in said


def test_a_stored_campaign_with_odd_fields_reads_as_defaults():
    c = Campaign.from_item(
        {"name": "X", "state": "weird", "weight": "heavy", "days": "mon", "retry": {"cancel": [1]}}
    )
    assert c.state == CampaignState.ACTIVE and c.weight == 1.0 and c.days is None and dict(c.retry) == {}


# ---------------------------------------------------------------- numbers and zones


@pytest.mark.parametrize("text", ["+14155550123", "14155550123", "+1 (415) 555-0123"])
def test_numbers_are_stored_without_plus(text):
    assert numbers.normalize(text) == "14155550123"


@pytest.mark.parametrize("text", ["+1415", "1", "+999999999999999999", "abc", "+1-800-FLOWERS"])
def test_impossible_numbers_are_refused(text):
    with pytest.raises(numbers.NumberError):
        numbers.normalize(text)


def test_zones_from_the_number():
    assert numbers.zones_for("12125550123") == ("America/New_York",)
    assert numbers.zones_for("33612345678") == ("Europe/Paris",)
    assert len(numbers.zones_for("79161234567")) > 3  # Russian mobiles span the country
    assert numbers.zones_for("15555550100") == ()  # no zone known: the caller uses DEFAULT_TZ


# ---------------------------------------------------------------- when a callee may be called


def test_a_us_callee_at_night_is_deferred_to_their_morning():
    night = at("America/New_York", 2026, 12, 2, 23, 30)
    moved = next_allowed(night, "08:00-21:00", numbers.zones_for("12125550123"))
    assert local(moved, "America/New_York") == datetime(
        2026, 12, 3, 8, 0, tzinfo=ZoneInfo("America/New_York")
    )


def test_several_zones_must_all_be_inside_the_window():
    zones = ["America/New_York", "America/Los_Angeles"]
    ny_morning = at("America/New_York", 2026, 12, 2, 8, 30)  # 05:30 in Los Angeles
    moved = next_allowed(ny_morning, "08:00-21:00", zones)
    assert local(moved, "America/Los_Angeles").hour == 8 and local(moved, "America/Los_Angeles").minute == 0
    assert next_allowed(moved, "08:00-21:00", zones) == moved
    late = at("America/New_York", 2026, 12, 2, 21, 30)  # 18:30 in LA, but closed in New York
    assert local(next_allowed(late, "08:00-21:00", zones), "America/Los_Angeles").day == 3


def test_windows_that_never_overlap_give_no_moment():
    # UTC+14 and UTC-11: 09:00-10:00 in one ends the moment it starts in the other.
    start = at("UTC", 2026, 12, 1, 0, 0)
    assert next_allowed(start, "09:00-10:00", ["Pacific/Kiritimati", "Pacific/Pago_Pago"]) is None


def test_blackout_and_days_defer_to_the_next_allowed_day():
    christmas = at("Europe/Paris", 2026, 12, 25, 10, 0)
    moved = next_allowed(christmas, "08:00-21:00", ["Europe/Paris"], blackout=["2026-12-25"])
    assert local(moved, "Europe/Paris") == datetime(2026, 12, 26, 8, 0, tzinfo=ZoneInfo("Europe/Paris"))
    saturday = at("Europe/Paris", 2026, 12, 26, 10, 0)
    moved = next_allowed(
        saturday,
        "08:00-21:00",
        ["Europe/Paris"],
        days=campaign_rules.parse_days("mon-fri"),
        blackout=["2026-12-28"],
    )
    assert local(moved, "Europe/Paris") == datetime(2026, 12, 29, 8, 0, tzinfo=ZoneInfo("Europe/Paris"))


def test_blackout_in_the_campaigns_zone():
    # 23:30 on the 24th in New York is already the 25th in Paris, the campaign's zone.
    eve = at("America/New_York", 2026, 12, 24, 18, 30)
    moved = next_allowed(
        eve, "08:00-21:00", ["America/New_York"], blackout=["2026-12-25"], blackout_zone="Europe/Paris"
    )
    assert local(moved, "Europe/Paris").date().isoformat() == "2026-12-26"
