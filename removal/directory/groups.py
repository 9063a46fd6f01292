"""The directory's groups as a list, a group's whitelist, and deleting a group.

Deleting a group removes its members, whitelist and queue; its removal
history stays, as a record of what was done.
"""

from __future__ import annotations

from removal.directory.members import by_code_point, group_exists, group_summary
from removal.directory.shapes import GroupSummary
from workers.db import Database


class GroupInUse(Exception):
    """What keeps a group from being deleted."""


def list_groups(
    db: Database, after: str | None, limit: int, window_ms: int, now_ms: int
) -> list[GroupSummary]:
    """Up to ``limit`` groups by groupWaId, from the first after ``after``, with their counts."""
    collate = by_code_point(db)
    rows = db.query(
        "SELECT group_wa_id FROM wa_groups"
        + ("" if after is None else f" WHERE group_wa_id{collate} > ?")
        + f" ORDER BY group_wa_id{collate} LIMIT ?",
        (limit,) if after is None else (after, limit),
    )
    found = (group_summary(db, group_wa_id, window_ms, now_ms) for (group_wa_id,) in rows)
    return [summary for summary in found if summary is not None]


def whitelist(db: Database, group_wa_id: str) -> list[str] | None:
    """The group's whitelisted ids, members or not, sorted; None for an unknown group."""
    if not group_exists(db, group_wa_id):
        return None
    rows = db.query("SELECT whatsapp_id FROM wa_whitelist WHERE group_wa_id = ?", (group_wa_id,))
    return sorted(wid for (wid,) in rows)


def delete_group(db: Database, group_wa_id: str) -> bool:
    """Delete the group, in the caller's transaction; False if there was none.

    Raises GroupInUse while removals asked of a remote gateway are unsettled
    (their outcome would have nowhere to go). Whether a job is on the group
    is the caller's to check, in the same transaction.
    """
    # On PostgreSQL the row lock queues two deletes, and a put, behind each other. A
    # group absent now is absent for this delete: one a concurrent put commits between
    # the statements below must not be deleted from under the members it wrote.
    lock = " FOR UPDATE" if db.dialect == "postgresql" else ""
    if db.one(f"SELECT 1 FROM wa_groups WHERE group_wa_id = ?{lock}", (group_wa_id,)) is None:
        return False
    if db.one("SELECT 1 FROM removal_intents WHERE group_wa_id = ? LIMIT 1", (group_wa_id,)):
        raise GroupInUse("removals asked of the gateway are not settled yet")
    for table in ("removal_intents", "removal_queue", "wa_whitelist", "wa_members"):
        db.execute(f"DELETE FROM {table} WHERE group_wa_id = ?", (group_wa_id,))
    return db.execute("DELETE FROM wa_groups WHERE group_wa_id = ?", (group_wa_id,)) == 1
