"""When a recurring schedule fires: cron in a time zone, pure functions of a given ``now``.

Cron fields are read by croniter over *wall-clock* time in the schedule's
zone; zoneinfo turns each wall-clock time into an instant. Daylight saving
time moves wall clocks, and each wall-clock time fires exactly once:

- a time that does not exist (in the hour skipped when clocks spring
  forward) fires as much later as the gap is long: 02:30 fires at 03:30,
  as java.time reads such a time. A ``*/15`` schedule thus keeps firing
  every 15 minutes of real time through the change, once each;
- a time that happens twice (in the hour repeated when clocks fall back)
  fires at its first occurrence only.

Nothing here reads the clock: every function takes ``now`` (or ``after``),
so tests pass a fixed one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter

# A tick later than this when it is looked at was missed (every instance was
# down, or the database was): catchUp decides whether it still fires.
MISSED_AFTER_S = 60.0
# How many wall-clock times one search may pass over before it gives up
# (times in a gap, or times of a repeated hour, that map to instants already past).
_MAX_STEPS = 5000
# The longest daylight-saving jump looked back over (two hours is the most in use).
LOOK_BACK = timedelta(hours=3)
MAX_CRON_LENGTH = 200
MAX_ZONE_LENGTH = 100


class BadCron(ValueError):
    """The expression is not a cron expression this module fires."""


class BadZone(ValueError):
    """The name is not an IANA time zone zoneinfo knows."""


class CatchUp(StrEnum):
    ONE = "one"  # a missed tick fires once when an instance next looks
    NONE = "none"  # a missed tick is skipped; the schedule moves to its next future tick


def parse_cron(expression: str) -> str:
    """The expression, checked: five fields (or an ``@daily``-style alias) that fire some day."""
    text = " ".join(expression.split())
    if not text or len(text) > MAX_CRON_LENGTH:
        raise BadCron(f"a cron expression has 1 to {MAX_CRON_LENGTH} characters")
    if not text.startswith("@") and len(text.split(" ")) != 5:
        raise BadCron(
            "expected five fields (minute hour day-of-month month day-of-week), "
            f"got {len(text.split(' '))}"
        )
    try:
        if not croniter.is_valid(text):
            raise BadCron(f"{text!r} is not a valid cron expression")
        croniter(text, datetime(2000, 1, 1)).get_next(datetime)
    except (CroniterBadCronError, CroniterBadDateError, CroniterError) as exc:
        raise BadCron(f"{text!r} never fires or is not valid ({exc})") from None
    return text


# Files in a zoneinfo directory that are not zone names: ``localtime`` is the host's
# own zone, ``posixrules`` a build file, ``posix/`` and ``right/`` copies of every
# zone (``right/`` counting leap seconds). Two instances could read them differently.
_HOST_FILES = ("localtime", "posixrules")
_HOST_TREES = ("posix/", "right/")


def zone(name: str) -> ZoneInfo:
    """The IANA zone by name; ``BadZone`` for anything else (paths, blanks, unknown names)."""
    if not name or len(name) > MAX_ZONE_LENGTH or name != name.strip():
        raise BadZone(f"{name!r} is not an IANA time zone name")
    if name in _HOST_FILES or name.startswith(_HOST_TREES):
        raise BadZone(f"{name!r} is not an IANA time zone name (e.g. America/Sao_Paulo)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise BadZone(f"{name!r} is not an IANA time zone name (e.g. America/Sao_Paulo)") from None


def _instant(wall: datetime, tz: ZoneInfo) -> datetime:
    """The instant (UTC) the zone's clock first shows ``wall``; a skipped time moves on by the gap.

    ``fold=0`` is the first occurrence of a repeated time, and reads a
    skipped one with the offset from before the gap: 02:30 on a day whose
    clocks jump from 02:00 to 03:00 becomes 03:30 (as java.time does).
    """
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC)


def next_fire(expression: str, tz: ZoneInfo, after: datetime) -> datetime:
    """The first fire instant strictly after ``after`` (aware), in UTC."""
    wall = after.astimezone(tz).replace(tzinfo=None)
    # Wall times shortly before ``after``'s may lie in a gap that a recent
    # spring-forward opened, and map past ``after``: start before them.
    sprang = (after.astimezone(tz).utcoffset() or timedelta(0)) - (
        (after - LOOK_BACK).astimezone(tz).utcoffset() or timedelta(0)
    )
    it = croniter(expression, wall - max(sprang, timedelta(0)) - timedelta(minutes=1))
    for _ in range(_MAX_STEPS):
        candidate = _instant(it.get_next(datetime), tz)
        if candidate > after:
            return candidate
    raise BadCron(f"{expression!r}: no fire time found after {after.isoformat()}")


def upcoming(expression: str, tz: ZoneInfo, after: datetime, count: int) -> list[datetime]:
    times: list[datetime] = []
    for _ in range(count):
        after = next_fire(expression, tz, after)
        times.append(after)
    return times


@dataclass(frozen=True)
class Tick:
    """What to do with a due tick: fire it or not (``missed``: late and skipped), and what next."""

    fire: bool
    missed: bool
    next_at: datetime


def settle(
    expression: str,
    tz: ZoneInfo,
    due: datetime,
    now: datetime,
    catch_up: CatchUp,
    missed_after_s: float = MISSED_AFTER_S,
) -> Tick:
    """A tick due at ``due`` looked at ``now`` (>= due).

    On time, it fires. Missed (later than ``missed_after_s``), it fires once
    with ``catchUp: one`` however many ticks were missed, and not at all
    with ``none``. Either way the next tick is the first one after ``now``,
    so a late look never fires twice.
    """
    late = (now - due).total_seconds() > missed_after_s
    missed = late and catch_up is CatchUp.NONE
    return Tick(fire=not missed, missed=missed, next_at=next_fire(expression, tz, now))
