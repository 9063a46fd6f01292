"""The default gateway: the group is the directory in our own database."""

from __future__ import annotations

from collections.abc import Callable

from removal.directory import MemberIn, current_ms, mark_removed
from workers.db import Database


class LocalGateway:
    """Removes by marking members removed, in the caller's transaction on ``db``.

    It opens no transaction itself: the removal step wraps the removal, the
    dequeue and the history rows in one, so they are one fact.
    """

    transactional = True

    def __init__(self, db: Database, clock: Callable[[], int] = current_ms) -> None:
        self._db = db
        self._clock = clock

    def fetch_members(self, group_wa_id: str) -> list[MemberIn] | None:
        return None  # nothing to refresh: the directory is the group

    def remove(self, group_wa_id: str, whatsapp_ids: list[str]) -> dict[str, str | None]:
        marked = mark_removed(self._db, group_wa_id, whatsapp_ids, self._clock())
        return {wid: None if wid in marked else "not a member" for wid in whatsapp_ids}
