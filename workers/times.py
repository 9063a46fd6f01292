"""Time as the database keeps it: BIGINT epoch milliseconds, read back as aware UTC datetimes.

One clock and one rounding for everything that stores a time.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# What a datetime holds in UTC. A time beyond it (9999-12-31T23:59:59-14:00)
# is refused at the door; one already stored is read back clamped to it.
MIN_TIME = datetime.min.replace(tzinfo=UTC)
MAX_TIME = datetime.max.replace(tzinfo=UTC)


def now_ms() -> int:
    """The one millisecond clock: wall time, as every stored time is kept."""
    return time.time_ns() // 1_000_000


def to_ms(moment: datetime) -> int:
    """Exact: whole milliseconds since the epoch, rounded down (no float on the way)."""
    return (moment - EPOCH) // timedelta(milliseconds=1)


def as_stored(moment: datetime) -> datetime:
    """The time as a store read gives it back: whole milliseconds."""
    return from_ms(to_ms(moment))


def iso(moment: datetime) -> str:
    """The one text form of a time in answers: UTC, milliseconds always present, ``Z``.

    ``2026-11-29T07:41:53.300Z``; the fraction is cut to milliseconds as
    ``to_ms`` rounds, so a time reads the same from memory as from the store.
    """
    utc = moment.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="milliseconds") + "Z"


def opt_to_ms(moment: datetime | None) -> int | None:
    return None if moment is None else to_ms(moment)


def in_range(moment: datetime) -> bool:
    """Whether the time, in UTC, is one a datetime can hold (and so be read back)."""
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return False
    return True


def from_ms(ms: int) -> datetime:
    try:
        return EPOCH + timedelta(milliseconds=ms)
    except OverflowError:  # stored before times were range-checked
        return MAX_TIME if ms > 0 else MIN_TIME


def opt_from_ms(ms: int | None) -> datetime | None:
    return None if ms is None else from_ms(ms)
