"""Reading the removal history; the removal jobs write it (``queue.record_batch``)."""

from __future__ import annotations

import msgspec

from removal.directory.shapes import RemovalRecord, from_ms
from workers.db import Database


class UnknownCursor(LookupError):
    """A page cursor that names no row of the history."""


def known_group(db: Database, group_wa_id: str) -> bool:
    """A group in the directory, or one deleted whose history remains."""
    return (
        db.one("SELECT 1 FROM wa_groups WHERE group_wa_id = ?", (group_wa_id,)) is not None
        or db.one("SELECT 1 FROM removal_history WHERE group_wa_id = ? LIMIT 1", (group_wa_id,))
        is not None
    )


def removal_history(
    db: Database, group_wa_id: str, limit: int = 100, job_id: str | None = None
) -> list[RemovalRecord]:
    """The group's removals, newest first."""
    return history_page(db, group_wa_id, limit, job_id)[0]


def history_page(
    db: Database,
    group_wa_id: str,
    limit: int = 100,
    job_id: str | None = None,
    before: str | None = None,
) -> tuple[list[RemovalRecord], str | None]:
    """A page of the group's removals, newest first, and the cursor of the next page.

    The cursor is a row's id (opaque to clients): the next page holds the
    rows that sort after it. Raises UnknownCursor for one that names no row.
    """
    where = " WHERE group_wa_id = ?"
    params: list[object] = [group_wa_id]
    if job_id is not None:
        where += " AND job_id = ?"
        params.append(job_id)
    if before is not None:
        row = None
        if before.isdigit() and len(before) < 19:  # a BIGINT
            row = db.one(
                "SELECT at, id FROM removal_history WHERE id = ? AND group_wa_id = ?",
                (int(before), group_wa_id),
            )
        if row is None:
            raise UnknownCursor(before)
        where += " AND (at < ? OR (at = ? AND id < ?))"
        params += [row[0], row[0], row[1]]
    rows = db.query(
        "SELECT whatsapp_id, alt_id, outcome, reason, job_id, attempt, at, id"
        " FROM removal_history" + where + " ORDER BY at DESC, id DESC LIMIT ?",
        (*params, limit + 1),  # one more than asked tells whether there is a next page
    )
    records = [
        RemovalRecord(
            group_wa_id=group_wa_id,
            whatsapp_id=wid,
            alt_id=msgspec.UNSET if alt is None else alt,
            outcome=outcome,
            reason=reason,
            job_id=job,
            attempt=attempt,
            at=from_ms(at),
        )
        for wid, alt, outcome, reason, job, attempt, at, _ in rows[:limit]
    ]
    return records, str(rows[limit - 1][7]) if len(rows) > limit else None


def outcomes_of_job(db: Database, job_id: str) -> list[tuple[str, str, str | None, int]]:
    """``(whatsapp id, outcome, reason, at ms)`` of every row a job wrote, oldest first."""
    rows = db.query(
        "SELECT whatsapp_id, outcome, reason, at FROM removal_history"
        " WHERE job_id = ? ORDER BY at, id",
        (job_id,),
    )
    return [(wid, outcome, reason, at) for wid, outcome, reason, at in rows]
