"""The directory's public shapes, encoded to JSON as they are (camelCase).

Times are BIGINT epoch milliseconds in the database and timezone-aware UTC
datetimes here, which msgspec encodes as ISO 8601.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from workers.db import MAX_ID_LENGTH
from workers.times import (
    EPOCH,
    MAX_TIME,
    MIN_TIME,
    from_ms,
    in_range,
    now_ms,
    opt_from_ms,
    to_ms,
)

current_ms = now_ms  # the name the directory's callers knew the clock by

__all__ = [
    "EPOCH",
    "MAX_ID_LENGTH",
    "MAX_TIME",
    "MIN_TIME",
    "current_ms",
    "from_ms",
    "in_range",
    "now_ms",
    "opt_from_ms",
    "to_ms",
]

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
    # The member's other id, when known: its LID beside a phone id, or the reverse.
    alt_id: WhatsappId | None = None
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
    alt_id: str | msgspec.UnsetType = msgspec.UNSET  # the other id; absent until known
    is_admin: bool
    joined_at: datetime
    last_active_at: datetime | None
    removed_at: datetime | None
    whitelisted: bool
    queued: bool


class RemovalRecord(_View, kw_only=True):
    group_wa_id: str
    whatsapp_id: str
    alt_id: str | msgspec.UnsetType = msgspec.UNSET  # the member's other id, when known
    outcome: Literal["SUCCESS", "FAILURE"]
    reason: str | None
    job_id: str | None
    attempt: int | None = None  # which run of the job wrote it
    at: datetime
