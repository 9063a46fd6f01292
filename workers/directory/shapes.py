"""The directory's public shapes, encoded to JSON as they are (camelCase).

Times are BIGINT epoch milliseconds in the database and timezone-aware UTC
datetimes here, which msgspec encodes as ISO 8601.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import msgspec

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# What a datetime holds in UTC. A time beyond it (9999-12-31T23:59:59-14:00)
# is refused at the door; one already stored is read back clamped to it.
MIN_TIME = datetime.min.replace(tzinfo=UTC)
MAX_TIME = datetime.max.replace(tzinfo=UTC)
# Ids are indexed: PostgreSQL refuses an index entry over about 2.7 KB, and
# no WhatsApp id comes near this.
MAX_ID_LENGTH = 256
WhatsappId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
# A time without a zone is ambiguous; the API asks for ISO 8601 with one.
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


# Subclasses set kw_only themselves: msgspec does not inherit it.
class _Body(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    pass


class _View(msgspec.Struct, rename="camel"):
    pass


class MemberIn(_Body, kw_only=True):
    whatsapp_id: WhatsappId
    is_admin: bool = False
    joined_at: AwareDatetime
    last_active_at: AwareDatetime | None = None


class GroupIn(_Body, kw_only=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    members: list[MemberIn]

    def time_out_of_range(self) -> str | None:
        """The field (``members[3].joinedAt``) of the first time outside MIN_TIME..MAX_TIME."""
        for i, member in enumerate(self.members):
            if not in_range(member.joined_at):
                return f"members[{i}].joinedAt"
            if member.last_active_at is not None and not in_range(member.last_active_at):
                return f"members[{i}].lastActiveAt"
        return None


class WhitelistIn(_Body, kw_only=True):
    whatsapp_ids: list[WhatsappId]


class GroupSummary(_View, kw_only=True):
    group_wa_id: str
    name: str
    member_count: int
    admin_count: int
    whitelist_count: int
    # None when no inactivity window was given to count against.
    inactive_count: int | None
    queued_count: int
    removed_count: int
    created_at: datetime
    updated_at: datetime


class MemberView(_View, kw_only=True):
    whatsapp_id: str
    is_admin: bool
    joined_at: datetime
    last_active_at: datetime | None
    removed_at: datetime | None
    whitelisted: bool
    queued: bool


class RemovalRecord(_View, kw_only=True):
    group_wa_id: str
    whatsapp_id: str
    outcome: Literal["SUCCESS", "FAILURE"]
    reason: str | None
    job_id: str | None
    at: datetime


def current_ms() -> int:
    return time.time_ns() // 1_000_000


def to_ms(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


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
