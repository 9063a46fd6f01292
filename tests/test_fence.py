"""A stale run removes nobody: the removal's fence, in process, on SQLite and PostgreSQL.

The job's row is changed under a running removal, as a rescue by another
instance would change it, and the stale run must stop at its next batch
without removing or recording anyone.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg
import pytest

from tests.removal_world import (
    INACTIVE,
    OWNER,
    current_ids,
    db,
    garden,
    history,
    make_job,
    module_pg_url,
    queued_ids,
    url,
    workflow,
)
from workers.db import Database, connect
from workers.fence import Fence, StaleRun
from workers.gateways.local import LocalGateway
from workers.removal import removal_workflow, run_workflow

__all__ = ["db", "make_job", "module_pg_url", "url"]  # fixtures, used by name

RESCUES = {
    # another instance re-claimed the job after a rescue
    "attempt": "UPDATE jobs SET attempts = attempts + 1, owner = 'other' WHERE id = ?",
    # the rescue put it back in the queue, unclaimed
    "owner": "UPDATE jobs SET owner = NULL, status = 'pending' WHERE id = ?",
    # the rescue ended it (a cancelling job becomes cancelled)
    "final": "UPDATE jobs SET status = 'cancelled' WHERE id = ?",
}


def rescue(url: str, job_id: str, how: str) -> None:
    other = connect(url)
    try:
        other.execute(RESCUES[how], (job_id,))
    finally:
        other.close()


@pytest.mark.parametrize("how", sorted(RESCUES))
def test_a_stale_run_stops_before_its_next_batch(
    db: Database, make_job: Any, url: str, how: str
) -> None:
    garden(db)
    job = make_job("job-s")
    job.ctx.between_batches = lambda: rescue(url, "job-s", how)
    with pytest.raises(StaleRun, match="job-s is no longer this run's"):
        removal_workflow(job.ctx, workflow(batch_size=2, delay_ms=1_000))

    first = INACTIVE[:2]
    assert history(db) == [(wid, "SUCCESS", "inactive for 100 days", "job-s") for wid in first]
    assert queued_ids(db) == INACTIVE[2:]
    assert current_ids(db) == ["admin", "friend", *INACTIVE[2:], "talker"]
    assert job.ctx.last_partial["removedWhatsappIds"] == first


def test_a_run_rescued_before_it_starts_removes_nobody(
    db: Database, make_job: Any, url: str
) -> None:
    garden(db)
    job = make_job("job-s")
    rescue(url, "job-s", "attempt")
    with pytest.raises(StaleRun):
        removal_workflow(job.ctx, workflow(batch_size=10))
    assert history(db) == []
    assert queued_ids(db) == []  # not even queued: the sync is fenced too
    assert len(current_ids(db)) == 8


class RescuedMidBatch(LocalGateway):
    """Removes, then lets another instance try to rescue the job before the batch commits."""

    def __init__(self, db: Database, url: str) -> None:
        super().__init__(db)
        self._url = url
        self.rescued: bool | None = None

    def remove(self, group_wa_id: str, whatsapp_ids: list[str]) -> dict[str, str | None]:
        answers = super().remove(group_wa_id, whatsapp_ids)
        rescuer = impatient(self._url)
        try:
            rescuer.execute(RESCUES["attempt"], ("job-m",))
            self.rescued = True
        except sqlite3.OperationalError:  # locked: the batch holds SQLite's write lock
            self.rescued = False
        finally:
            rescuer.close()
        return answers


def impatient(url: str) -> Database:
    """A connection that gives up on a lock after 100 ms instead of waiting."""
    conn = connect(url, busy_timeout_ms=100)
    if conn.dialect == "postgresql":
        conn.execute("SET lock_timeout = '100ms'")
    return conn


def test_a_rescue_inside_a_batch_never_overlaps_its_removals(
    db: Database, make_job: Any, url: str
) -> None:
    garden(db)
    job = make_job("job-m")
    gateway = RescuedMidBatch(db, url)
    if db.dialect == "postgresql":
        # The batch locks the job row only at its end: the rescue commits
        # first, and the batch's fence then rolls the whole batch back.
        with pytest.raises(StaleRun):
            run_workflow(job.ctx, db, gateway, workflow(batch_size=10))
        assert gateway.rescued is True
        assert history(db) == []
        assert queued_ids(db) == INACTIVE  # the sync committed; the batch did not
        assert len(current_ids(db)) == 8
    else:
        # The batch holds the write lock from its first statement: the rescue
        # cannot land inside it, and the batch commits as the run's own.
        result = run_workflow(job.ctx, db, gateway, workflow(batch_size=10))
        assert gateway.rescued is False
        assert result["removedWhatsappIds"] == INACTIVE
        assert [row[0] for row in history(db)] == INACTIVE


def test_a_held_fence_makes_a_rescue_wait(db: Database, make_job: Any, url: str) -> None:
    make_job("job-w")
    fence = Fence("job-w", OWNER, 1)
    rescuer = impatient(url)
    try:
        with db.transaction():
            fence.hold(db)
            with pytest.raises((psycopg.errors.LockNotAvailable, sqlite3.OperationalError)):
                rescuer.execute(RESCUES["attempt"], ("job-w",))
        rescuer.execute(RESCUES["attempt"], ("job-w",))  # once the batch committed
        with db.transaction(), pytest.raises(StaleRun):
            fence.hold(db)
    finally:
        rescuer.close()
