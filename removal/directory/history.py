"""Reading the removal history; the removal jobs write it (``queue.record_batch``)."""

from __future__ import annotations

from removal.directory.shapes import RemovalRecord, from_ms
from workers.db import Database


def removal_history(
    db: Database, group_wa_id: str, limit: int = 100, job_id: str | None = None
) -> list[RemovalRecord]:
    """The group's removals, newest first."""
    rows = db.query(
        "SELECT whatsapp_id, outcome, reason, job_id, attempt, at FROM removal_history"
        " WHERE group_wa_id = ?"
        + ("" if job_id is None else " AND job_id = ?")
        + " ORDER BY at DESC, id DESC LIMIT ?",
        (group_wa_id, limit) if job_id is None else (group_wa_id, job_id, limit),
    )
    return [
        RemovalRecord(
            group_wa_id=group_wa_id,
            whatsapp_id=wid,
            outcome=outcome,
            reason=reason,
            job_id=job,
            attempt=attempt,
            at=from_ms(at),
        )
        for wid, outcome, reason, job, attempt, at in rows
    ]


def outcomes_of_job(db: Database, job_id: str) -> list[tuple[str, str, str | None, int]]:
    """``(whatsapp id, outcome, reason, at ms)`` of every row a job wrote, oldest first."""
    rows = db.query(
        "SELECT whatsapp_id, outcome, reason, at FROM removal_history"
        " WHERE job_id = ? ORDER BY at, id",
        (job_id,),
    )
    return [(wid, outcome, reason, at) for wid, outcome, reason, at in rows]
