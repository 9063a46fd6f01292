"""The front's job writes, fenced on (owner, attempt): the SQL alone, in process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from supervisor.job import CancelInfo, Job, Progress, new_job_id, now
from supervisor.state import LIVE, STORED_BEFORE, TERMINAL, TRANSITIONS, JobStatus
from supervisor.store import claims
from supervisor.store import jobs as sql
from supervisor.store.migrations import migrate
from workers.db import Database, connect

S = JobStatus


def test_the_storage_twin_follows_the_transitions_and_never_leaves_a_final_state() -> None:
    for old, news in TRANSITIONS.items():
        for new in news:
            if old in LIVE:
                assert old in STORED_BEFORE[new], (old, new)
    for before in STORED_BEFORE.values():
        assert not before & TERMINAL
    # A job's start never overwrites a cancel already stored.
    assert S.CANCELLING not in STORED_BEFORE[S.RUNNING]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = connect(f"sqlite:///{tmp_path / 'jobs.db'}")
    migrate(database, {"jobs": sql.MIGRATIONS})
    yield database
    database.close()


def _pending(db: Database) -> Job:
    job = Job(
        id=new_job_id(),
        type="quick",
        status=S.PENDING,
        config=msgspec.Raw(b"{}"),
        progress=Progress(),
        created_at=now(),
    )
    sql.insert_job(db, job, "k", None, 0, 100)
    return job


def _claim(db: Database, owner: str) -> Job:
    ((job, _key),) = claims.claim_jobs(db, owner, 1, 0)
    return job


def test_the_claim_stores_the_token_and_only_its_run_may_write(db: Database) -> None:
    _pending(db)
    mine = _claim(db, "a")
    assert (mine.owner, mine.attempts) == ("a", 1)
    running = msgspec.structs.replace(mine, status=S.RUNNING, pid=1, started_at=now())
    assert sql.update_job(db, running, 1)
    # Rescued elsewhere: re-queued, then claimed by b as attempt 2.
    requeued = msgspec.structs.replace(running, status=S.PENDING, owner=None, pid=None)
    assert claims.rescue_job(db, running, requeued, 2)
    theirs = _claim(db, "b")
    assert (theirs.owner, theirs.attempts) == ("b", 2)
    stale = msgspec.structs.replace(running, status=S.COMPLETED, completed_at=now())
    assert not sql.update_job(db, stale, 3)
    assert sql.update_progress(db, [running], 3) == [running.id]
    assert sql.update_job(db, msgspec.structs.replace(theirs, status=S.RUNNING), 4)


def test_no_write_leaves_a_final_state(db: Database) -> None:
    _pending(db)
    job = _claim(db, "a")
    done = msgspec.structs.replace(job, status=S.COMPLETED, completed_at=now(), result={"x": 1})
    assert sql.update_job(db, done, 1)
    assert sql.update_job(db, done, 2)  # a retry that finds its own write has landed
    again = msgspec.structs.replace(done, status=S.FAILED, completed_at=now())
    assert not sql.update_job(db, again, 3)
    assert sql.update_progress(db, [done], 4) == [done.id]
    stored = sql.get_job(db, job.id)
    assert stored is not None
    assert (stored.status, stored.result) == (S.COMPLETED, {"x": 1})


def test_a_claim_ends_a_job_with_a_stored_cancel_request(db: Database) -> None:
    job = _pending(db)
    request = {"requestedAt": now().isoformat(), "reason": "user"}
    assert claims.request_cancel(db, job.id, request, 1)
    assert claims.claim_jobs(db, "a", 4, 2) == []
    stored = sql.get_job(db, job.id)
    assert stored is not None
    assert (stored.status, stored.attempts, stored.owner) == (S.CANCELLED, 0, None)
    assert isinstance(stored.cancel, CancelInfo)
    assert stored.cancel.reason == "user"
    assert _pending(db)  # its key is free again


def test_unclaim_returns_the_attempt_once(db: Database) -> None:
    _pending(db)
    job = _claim(db, "a")
    claims.unclaim(db, [job])
    claims.unclaim(db, [job])  # a retry changes nothing more
    stored = sql.get_job(db, job.id)
    assert stored is not None
    assert (stored.owner, stored.attempts) == (None, 0)


def test_a_run_whose_running_write_never_went_out_still_goes_back_to_the_queue(
    db: Database,
) -> None:
    """Its child's start and its stop came in one read: the stop's write carries both.

    A requeue is such a write (a shutdown, or the platform's SIGTERM, at the
    job's first instant): the row still says pending, claimed by this run.
    """
    _pending(db)
    mine = _claim(db, "a")  # stored: pending, owner a, attempt 1
    ran = msgspec.structs.replace(mine, status=S.RUNNING, pid=1, started_at=now())
    other = msgspec.structs.replace(ran, owner="b")
    assert not claims.requeue_job(db, other, None, 2)  # not b's run
    assert claims.requeue_job(db, ran, b'{"next": 1}', 3)
    ((status, owner, attempts, saved),) = db.query(
        "SELECT status, owner, attempts, saved_state FROM jobs WHERE id = ?", (mine.id,)
    )
    assert (status, owner, attempts, saved) == ("pending", None, 1, '{"next": 1}')
