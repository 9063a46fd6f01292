"""When schedules fire: cron over wall-clock time in a zone, with a fixed clock (no waiting)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from supervisor.cron import (
    MISSED_AFTER_S,
    BadCron,
    BadZone,
    CatchUp,
    next_fire,
    parse_cron,
    settle,
    upcoming,
    zone,
)

NEW_YORK = zone("America/New_York")  # 2026: springs forward 8 March 02:00, falls back 1 November
SAO_PAULO = zone("America/Sao_Paulo")  # no daylight saving time since 2019: UTC-3 all year


def _local(times: list[datetime], tz=NEW_YORK) -> list[str]:  # type: ignore[no-untyped-def]
    return [t.astimezone(tz).isoformat() for t in times]


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_a_weekly_tick_is_the_wall_clock_time_in_the_zone() -> None:
    # Thursday 3 December 2026: the next Mondays at 03:00 in São Paulo are 06:00 UTC.
    times = upcoming("0 3 * * 1", SAO_PAULO, _utc(2026, 12, 3, 12), 2)
    assert times == [_utc(2026, 12, 7, 6), _utc(2026, 12, 14, 6)]


def test_a_time_skipped_by_spring_forward_fires_once_that_day() -> None:
    # 02:30 does not exist on 8 March in New York (02:00 -> 03:00): it fires
    # once, an hour later by the clock (03:30 EDT), and at 02:30 the days around.
    times = upcoming("30 2 * * *", NEW_YORK, _utc(2026, 3, 7, 12), 3)
    assert _local(times) == [
        "2026-03-08T03:30:00-04:00",
        "2026-03-09T02:30:00-04:00",
        "2026-03-10T02:30:00-04:00",
    ]


def test_a_frequent_schedule_keeps_its_pace_through_spring_forward() -> None:
    times = upcoming("*/15 * * * *", NEW_YORK, _utc(2026, 3, 8, 6, 40), 6)
    assert _local(times) == [
        "2026-03-08T01:45:00-05:00",
        "2026-03-08T03:00:00-04:00",
        "2026-03-08T03:15:00-04:00",
        "2026-03-08T03:30:00-04:00",
        "2026-03-08T03:45:00-04:00",
        "2026-03-08T04:00:00-04:00",
    ]
    assert all(b - a == timedelta(minutes=15) for a, b in pairwise(times))


def test_a_time_repeated_by_fall_back_fires_once_at_its_first_occurrence() -> None:
    times = upcoming("30 1 * * *", NEW_YORK, _utc(2026, 10, 31, 12), 3)
    assert _local(times) == [
        "2026-11-01T01:30:00-04:00",  # the first 01:30 (EDT); the second (EST) does not fire
        "2026-11-02T01:30:00-05:00",
        "2026-11-03T01:30:00-05:00",
    ]
    # Looked at during the repeated hour, after the first 01:30: not again that day.
    assert next_fire("30 1 * * *", NEW_YORK, _utc(2026, 11, 1, 6, 10)) == _utc(2026, 11, 2, 6, 30)


def test_an_hourly_schedule_fires_each_wall_clock_hour_once_through_fall_back() -> None:
    times = upcoming("0 * * * *", NEW_YORK, _utc(2026, 11, 1, 3), 4)
    assert _local(times) == [
        "2026-11-01T00:00:00-04:00",
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T02:00:00-05:00",
        "2026-11-01T03:00:00-05:00",
    ]


def test_next_fire_is_strictly_after() -> None:
    tick = _utc(2026, 12, 7, 6)
    assert next_fire("0 3 * * 1", SAO_PAULO, tick) == _utc(2026, 12, 14, 6)
    assert next_fire("0 3 * * 1", SAO_PAULO, tick - timedelta(milliseconds=1)) == tick


def test_a_tick_on_time_fires_and_the_next_is_after_now() -> None:
    due = _utc(2026, 12, 7, 6)
    now = due + timedelta(seconds=2)
    for catch_up in CatchUp:
        tick = settle("0 3 * * 1", SAO_PAULO, due, now, catch_up)
        assert (tick.fire, tick.missed, tick.next_at) == (True, False, _utc(2026, 12, 14, 6))


def test_missed_ticks_fire_once_with_catch_up_one_and_none_with_none() -> None:
    # Every instance was down for three days of an hourly schedule.
    due = _utc(2026, 12, 1, 10)
    now = _utc(2026, 12, 4, 10, 20)
    one = settle("0 * * * *", NEW_YORK, due, now, CatchUp.ONE)
    assert (one.fire, one.missed, one.next_at) == (True, False, _utc(2026, 12, 4, 11))
    none = settle("0 * * * *", NEW_YORK, due, now, CatchUp.NONE)
    assert (none.fire, none.missed, none.next_at) == (False, True, _utc(2026, 12, 4, 11))


def test_a_tick_just_within_the_missed_bound_still_fires_with_catch_up_none() -> None:
    due = _utc(2026, 12, 1, 10)
    now = due + timedelta(seconds=MISSED_AFTER_S)
    assert settle("0 * * * *", NEW_YORK, due, now, CatchUp.NONE).fire
    later = now + timedelta(milliseconds=1)
    assert not settle("0 * * * *", NEW_YORK, due, later, CatchUp.NONE).fire


@pytest.mark.parametrize(
    "expression",
    ["", "   ", "* * * *", "* * * * * *", "61 * * * *", "0 0 30 2 *", "@reboot", "x" * 300],
)
def test_bad_cron_expressions_are_refused(expression: str) -> None:
    with pytest.raises(BadCron):
        parse_cron(expression)


def test_cron_expressions_are_kept_with_single_spaces() -> None:
    assert parse_cron(" 0  3 * * 1 ") == "0 3 * * 1"
    assert parse_cron("@daily") == "@daily"


@pytest.mark.parametrize(
    "name", ["", "Mars/Olympus", "../etc/passwd", "/etc/localtime", " UTC", "utc", "x" * 200]
)
def test_bad_zones_are_refused(name: str) -> None:
    with pytest.raises(BadZone):
        zone(name)


def test_the_missed_bound_can_be_longer() -> None:
    due = _utc(2026, 12, 1, 10)
    now = due + timedelta(seconds=100)
    assert not settle("0 * * * *", NEW_YORK, due, now, CatchUp.NONE).fire
    assert settle("0 * * * *", NEW_YORK, due, now, CatchUp.NONE, missed_after_s=120).fire
