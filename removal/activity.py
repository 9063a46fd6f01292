"""Member activity and membership from outside a sync: webhook facts and imports.

``ActivityService.apply`` writes one delivery's facts and returns once they
are committed. Deliveries arriving together are written together (group
commit): while one transaction runs, the deliveries that arrive queue up and
the next transaction takes them all, up to ``MAX_BATCH``. A burst of a
thousand deliveries is thus a few transactions on the store's writer, not a
thousand, and the job table's own writes are never queued behind more than
one of them. At most ``MAX_WAITING`` deliveries wait; beyond that a delivery
is refused (``QueueFull``: the gateway retries it later) instead of queueing
without bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import msgspec

from removal.directory import activity
from removal.directory.activity import Activity, Fact, Seen
from removal.directory.shapes import AwareDatetime, WhatsappId, in_range, to_ms
from supervisor.errors import Invalid, QueueFull
from supervisor.store import Store
from workers.times import now_ms

MAX_BATCH = 500  # deliveries per transaction
MAX_WAITING = 5000  # deliveries waiting for their transaction
MAX_IMPORT_ROWS = 10_000  # rows per import request


class MemberImport(msgspec.Struct, forbid_unknown_fields=True, rename="camel", kw_only=True):
    whatsapp_id: WhatsappId
    alt_id: WhatsappId | None = None
    is_admin: bool = False
    joined_at: AwareDatetime
    last_active_at: AwareDatetime | None = None


class MembersImport(msgspec.Struct, forbid_unknown_fields=True, rename="camel", kw_only=True):
    members: list[MemberImport]


class ActivityImport(msgspec.Struct, forbid_unknown_fields=True, rename="camel", kw_only=True):
    whatsapp_id: WhatsappId
    group_wa_id: WhatsappId
    last_active_at: AwareDatetime


class ActivitiesImport(msgspec.Struct, forbid_unknown_fields=True, rename="camel", kw_only=True):
    activity: list[ActivityImport]


class Rejection(msgspec.Struct, rename="camel", kw_only=True):
    index: int
    message: str


class ImportResult(msgspec.Struct, rename="camel", kw_only=True):
    loaded: int
    rejected: list[Rejection]


def member_fact(group_wa_id: str, row: MemberImport) -> Seen:
    """An imported member: in the group since ``joinedAt``, and still at their last activity."""
    joined = to_ms(row.joined_at)
    active = None if row.last_active_at is None else to_ms(row.last_active_at)
    return Seen(
        group_wa_id,
        row.whatsapp_id,
        max(joined, active or joined),
        alt_id=row.alt_id,
        is_admin=row.is_admin,
        active_at=active,
        joined_at=joined,
        restate=True,
    )


class ActivityService:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiting: list[tuple[Sequence[Fact], asyncio.Future[int]]] = []
        self._writing: asyncio.Task[None] | None = None

    async def apply(self, facts: Sequence[Fact]) -> int:
        """Write ``facts`` in one transaction (shared with other deliveries); how many applied."""
        if len(self._waiting) >= MAX_WAITING:
            raise QueueFull("too many deliveries waiting to be written; retry later")
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append((facts, done))
        if self._writing is None:
            # A task of its own: a delivery whose client went away must not
            # stop the writing of the others.
            self._writing = asyncio.create_task(self._write())
        return await asyncio.shield(done)

    async def _write(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[:MAX_BATCH]
                del self._waiting[:MAX_BATCH]
                try:
                    counts = await self.store.call(
                        activity.apply_facts,
                        [facts for facts, _ in batch],
                        now_ms(),
                        write=True,
                        bulk=True,
                        retry_for=2.0,
                    )
                except Exception as exc:
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                else:
                    for (_, done), count in zip(batch, counts, strict=True):
                        if not done.done():
                            done.set_result(count)
        finally:
            self._writing = None

    async def import_members(self, group_wa_id: str, body: MembersImport) -> ImportResult:
        if len(body.members) > MAX_IMPORT_ROWS:
            raise Invalid(f"at most {MAX_IMPORT_ROWS} members per request", "members")
        for i, row in enumerate(body.members):
            if not in_range(row.joined_at):
                raise Invalid("outside years 1 to 9999 in UTC", f"members[{i}].joinedAt")
            if row.last_active_at is not None and not in_range(row.last_active_at):
                raise Invalid("outside years 1 to 9999 in UTC", f"members[{i}].lastActiveAt")
        facts = [member_fact(group_wa_id, row) for row in body.members]
        await self.store.call(
            activity.import_members, group_wa_id, facts, now_ms(), write=True, bulk=True
        )
        return ImportResult(loaded=len(facts), rejected=[])

    async def import_activity(self, body: ActivitiesImport) -> ImportResult:
        if len(body.activity) > MAX_IMPORT_ROWS:
            raise Invalid(f"at most {MAX_IMPORT_ROWS} rows per request", "activity")
        for i, row in enumerate(body.activity):
            if not in_range(row.last_active_at):
                raise Invalid("outside years 1 to 9999 in UTC", f"activity[{i}].lastActiveAt")
        rows = [
            Activity(row.group_wa_id, row.whatsapp_id, to_ms(row.last_active_at))
            for row in body.activity
        ]
        outcomes = await self.store.call(activity.import_activity, rows, write=True, bulk=True)
        rejected = [
            Rejection(index=i, message=why) for i, why in enumerate(outcomes) if why is not None
        ]
        return ImportResult(loaded=len(rows) - len(rejected), rejected=rejected)
