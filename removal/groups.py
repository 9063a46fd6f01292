"""The groups the removal jobs work on, as the API sees them: upsert, read, whitelist, history.

Validation happens here (times out of range, members that cannot be stored,
a group that does not exist), in the domain's errors; the handlers only parse
and encode.
"""

from __future__ import annotations

from typing import TypeVar

from removal import directory
from removal.directory import GroupIn, GroupSummary, MemberView, RemovalRecord
from supervisor.errors import Conflict, Invalid, NotFound
from supervisor.store import Store
from supervisor.store import jobs as jobs_sql
from workers.db import Database
from workers.times import now_ms

T = TypeVar("T")
# A page of a list and the cursor of the next one (None: it was the last).
Page = tuple[list[T], str | None]

DEFAULT_WINDOW_MS = 30 * 24 * 3600 * 1000
MAX_WINDOW_MS = 10 * 365 * 24 * 3600 * 1000


def _no_group(group_wa_id: str) -> NotFound:
    return NotFound(f"no group {group_wa_id!r}", "groupWaId")


def _delete(db: Database, group_wa_id: str) -> bool:
    """Delete the group unless a job on any instance is live for it: one transaction."""
    with db.transaction():
        job = jobs_sql.live_with_label(db, jobs_sql.label_of("groupWaId", group_wa_id))
        if job is not None:
            raise directory.GroupInUse(f"job {job[0]} is {job[1]} for this group")
        return directory.delete_group(db, group_wa_id)


class GroupService:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def _require(self, group_wa_id: str) -> None:
        if not await self.store.call(directory.group_exists, group_wa_id):
            raise _no_group(group_wa_id)

    async def upsert(self, group_wa_id: str, body: GroupIn) -> GroupSummary:
        field = body.time_out_of_range()
        if field is not None:
            raise Invalid(f"{field}: outside years 1 to 9999 in UTC", field)
        try:
            summary: GroupSummary = await self.store.call(
                directory.upsert_group,
                group_wa_id,
                body,
                now_ms(),
                DEFAULT_WINDOW_MS,
                write=True,
                bulk=True,
            )
        except ValueError as exc:
            raise Invalid(f"members: {exc}", "members") from None
        return summary

    async def summary(self, group_wa_id: str, window_ms: int) -> GroupSummary:
        summary = await self.store.call(directory.group_summary, group_wa_id, window_ms, now_ms())
        if summary is None:
            raise _no_group(group_wa_id)
        return summary  # type: ignore[no-any-return]

    async def list(self, after: str | None, limit: int, window_ms: int) -> Page[GroupSummary]:
        groups: list[GroupSummary] = await self.store.call(
            directory.list_groups, after, limit + 1, window_ms, now_ms()
        )
        more = len(groups) > limit
        return groups[:limit], groups[limit - 1].group_wa_id if more else None

    async def delete(self, group_wa_id: str) -> None:
        try:
            deleted = await self.store.call(_delete, group_wa_id, write=True)
        except directory.GroupInUse as exc:
            raise Conflict(f"group {group_wa_id!r} cannot be deleted: {exc}") from None
        if not deleted:
            raise _no_group(group_wa_id)

    async def whitelist(self, group_wa_id: str) -> list[str]:
        ids: list[str] | None = await self.store.call(directory.whitelist, group_wa_id)
        if ids is None:
            raise _no_group(group_wa_id)
        return ids

    async def members(
        self, group_wa_id: str, include_removed: bool, after: str | None, limit: int
    ) -> Page[MemberView]:
        await self._require(group_wa_id)
        members: list[MemberView] = await self.store.call(
            directory.list_members, group_wa_id, include_removed, after, limit + 1
        )
        more = len(members) > limit
        return members[:limit], members[limit - 1].whatsapp_id if more else None

    async def set_whitelist(self, group_wa_id: str, whatsapp_ids: list[str]) -> list[str]:
        try:  # checked in the write's own transaction
            ids: list[str] = await self.store.call(
                directory.set_whitelist, group_wa_id, whatsapp_ids, write=True, bulk=True
            )
        except directory.UnknownGroup:
            raise _no_group(group_wa_id) from None
        return ids

    async def removals(
        self, group_wa_id: str, limit: int, job_id: str | None, before: str | None
    ) -> Page[RemovalRecord]:
        """A deleted group's history stays readable: only a group never seen is unknown."""
        try:
            page: Page[RemovalRecord] = await self.store.call(
                directory.history_page, group_wa_id, limit, job_id, before
            )
        except directory.UnknownCursor:
            raise Invalid("before: no removal with that cursor", "before") from None
        if not page[0] and not await self.store.call(directory.known_group, group_wa_id):
            raise _no_group(group_wa_id)
        return page
