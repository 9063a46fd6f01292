"""The groups the removal jobs work on, as the API sees them: upsert, read, whitelist, history.

Validation happens here (times out of range, members that cannot be stored,
a group that does not exist), in the domain's errors; the handlers only parse
and encode.
"""

from __future__ import annotations

from removal import directory
from removal.directory import GroupIn, GroupSummary, MemberView, RemovalRecord
from supervisor.errors import Invalid, NotFound
from supervisor.store import Store
from workers.times import now_ms

DEFAULT_WINDOW_MS = 30 * 24 * 3600 * 1000
MAX_WINDOW_MS = 10 * 365 * 24 * 3600 * 1000


def _no_group(group_wa_id: str) -> NotFound:
    return NotFound(f"no group {group_wa_id!r}", "groupWaId")


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

    async def members(self, group_wa_id: str, include_removed: bool) -> list[MemberView]:
        await self._require(group_wa_id)
        members: list[MemberView] = await self.store.call(
            directory.list_members, group_wa_id, include_removed
        )
        return members

    async def set_whitelist(self, group_wa_id: str, whatsapp_ids: list[str]) -> list[str]:
        try:  # checked in the write's own transaction
            ids: list[str] = await self.store.call(
                directory.set_whitelist, group_wa_id, whatsapp_ids, write=True, bulk=True
            )
        except directory.UnknownGroup:
            raise _no_group(group_wa_id) from None
        return ids

    async def removals(
        self, group_wa_id: str, limit: int, job_id: str | None
    ) -> list[RemovalRecord]:
        await self._require(group_wa_id)
        records: list[RemovalRecord] = await self.store.call(
            directory.removal_history, group_wa_id, limit, job_id
        )
        return records
