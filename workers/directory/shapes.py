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
WhatsappId = Annotated[str, msgspec.Meta(min_length=1)]
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
    name: Annotated[str, msgspec.Meta(min_length=1)]
    members: list[MemberIn]


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


def from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def opt_from_ms(ms: int | None) -> datetime | None:
    return None if ms is None else from_ms(ms)
