"""Pending jobs shared by instances: claims, cancel requests, and rescue.

The SQL of the job queue that several instances work from (claiming with
``SKIP LOCKED``, cross-instance cancel requests with ``NOTIFY``) and of the
rescue of a dead instance's jobs. ``jobs.py`` has the table and the rest.
"""

from __future__ import annotations

from typing import Any

import msgspec

from supervisor.job import Job, RequestedBy
from supervisor.state import TERMINAL
from supervisor.store.jobs import (
    COLUMNS,
    LIVE_SQL,
    STATE_SET,
    row_to_job,
    state_values,
    to_json,
    to_ms,
)
from workers.db import Database


def claim_jobs(db: Database, owner: str, limit: int, now_ms: int) -> list[tuple[Job, bytes | None]]:
    """Take up to ``limit`` unclaimed pending jobs, in claim order, for ``owner``.

    Each comes with its saved place (JSON), if a run of it saved one.

    First, in the same transaction, scheduled jobs whose time has come
    become pending (one instance moves each: the row's status decides, and
    on PostgreSQL ``SKIP LOCKED`` lets another claim pass them by). Then the
    claim takes pending jobs by ``queue_rank`` (arrival, moved ahead by
    priority: ``jobs.queue_rank``), then id.

    Each claim counts an attempt: ``(owner, attempts)`` is the run's fencing
    token, stored before any child starts. A pending job someone asked to
    cancel (while its earlier owner was stalled, say) ends cancelled instead.
    On PostgreSQL, ``SKIP LOCKED`` lets instances claim side by side without
    waiting on each other or taking the same job twice; SQLite has one writer.
    """
    lock = " FOR UPDATE SKIP LOCKED" if db.dialect == "postgresql" else ""
    with db.transaction():
        db.execute(
            "UPDATE jobs SET status = 'pending', updated_at = ? WHERE id IN ("
            f" SELECT id FROM jobs WHERE status = 'scheduled' AND run_at <= ?{lock})",
            (now_ms, now_ms),
        )
        if limit <= 0:
            return []
        ids = _claimable(db, limit, now_ms, lock)
        if not ids:
            return []
        marks = ", ".join("?" * len(ids))
        rows = db.query(
            "UPDATE jobs SET owner = ?, attempts = attempts + 1, updated_at = ?"
            f" WHERE id IN ({marks}) RETURNING {COLUMNS}, saved_state, queue_rank",
            (owner, now_ms, *ids),
        )
    rows.sort(key=lambda r: (r[-1], r[0]))  # RETURNING keeps no order: start them in claim order
    return [(row_to_job(r[:-2]), None if r[-2] is None else r[-2].encode()) for r in rows]


def _claimable(db: Database, limit: int, now_ms: int, lock: str) -> list[str]:
    """The first ``limit`` unclaimed pending jobs in claim order, locked, without cancel requests.

    A job at the head of the queue that someone asked to cancel (the request
    made while an owner held it, which then gave it back or died) ends
    cancelled here instead of being claimed. Only the head is looked at, by
    ``jobs_claimable``'s order: a claim costs the same with 100,000 jobs
    waiting as with ten.
    """
    while True:
        head = db.query(
            "SELECT id, cancel_request IS NOT NULL FROM jobs WHERE status = 'pending'"
            f" AND owner IS NULL ORDER BY queue_rank, id LIMIT ?{lock}",
            (limit,),
        )
        asked = [job_id for job_id, cancel in head if cancel]
        if not asked:
            return [job_id for job_id, _ in head]
        db.executemany(
            "UPDATE jobs SET status = 'cancelled', cancel = cancel_request, completed_at = ?,"
            " updated_at = ?, pid = NULL, exclusive_key = NULL WHERE id = ?",
            [(now_ms, now_ms, job_id) for job_id in asked],
        )


def next_due(db: Database) -> int | None:
    """When the earliest scheduled job becomes claimable (ms), if one waits."""
    row = db.one("SELECT min(run_at) FROM jobs WHERE status = 'scheduled'")
    return None if row is None or row[0] is None else int(row[0])


def claim_and_look_ahead(
    db: Database, owner: str, limit: int, now_ms: int
) -> tuple[list[tuple[Job, bytes | None]], int | None]:
    """``claim_jobs``, then when the next scheduled job is due: the scheduler's timer."""
    return claim_jobs(db, owner, limit, now_ms), next_due(db)


def retry_job(db: Database, job: Job, rank: int, saved: bytes | None, now_ms: int) -> bool:
    """Put a job whose attempt failed back as ``scheduled`` until ``job.run_at``.

    Fenced like every write of a run: False if the run no longer holds it.
    Its saved place stays (``saved``: a later one not yet written): a
    resumable job's next attempt resumes from there, as after a re-queue.
    """
    changed = db.execute(
        "UPDATE jobs SET status = 'scheduled', run_at = ?, queue_rank = ?, error = ?,"
        " attempt_errors = ?, progress = ?, result = ?, pid = NULL, started_at = NULL,"
        " owner = NULL, saved_state = COALESCE(?, saved_state),"
        " saved_at = COALESCE(?, saved_at), updated_at = ?"
        " WHERE id = ? AND owner = ? AND attempts = ? AND status IN ('pending', 'running')",
        (
            to_ms(job.run_at),
            rank,
            to_json(job.error),
            to_json(job.attempt_errors),
            to_json(job.progress),
            to_json(job.result),
            None if saved is None else saved.decode(),
            to_ms(job.saved_at) if saved is not None else None,
            now_ms,
            job.id,
            job.owner,
            job.attempts,
        ),
    )
    return changed == 1


def unclaim(db: Database, jobs: list[Job]) -> None:
    """Give claimed jobs that never started back to the queue, and their attempt."""
    db.executemany(
        "UPDATE jobs SET owner = NULL, attempts = attempts - 1"
        " WHERE id = ? AND owner = ? AND attempts = ? AND status = 'pending'",
        [(job.id, job.owner, job.attempts) for job in jobs],
    )


def give_back_strays(db: Database, owner: str, held: frozenset[str], before_ms: int) -> list[str]:
    """Unclaim ``owner``'s pending jobs that it does not hold, claimed before ``before_ms``.

    A claim retried after its first commit landed (the answer lost with the
    connection) claims a second set; the first is owned here but was never
    adopted. Nothing runs it, so it goes back to the queue. Returns their ids.
    """
    # The live-status term lets SQLite use jobs_owner_live (its WHERE), not
    # every pending row of jobs_status_created.
    rows = db.query(
        f"SELECT id, attempts FROM jobs WHERE owner = ? AND status IN {LIVE_SQL}"
        " AND status = 'pending' AND updated_at < ?",
        (owner, before_ms),
    )
    strays = [(job_id, attempts) for job_id, attempts in rows if job_id not in held]
    db.executemany(
        "UPDATE jobs SET owner = NULL, attempts = attempts - 1"
        " WHERE id = ? AND owner = ? AND attempts = ? AND status = 'pending'",
        [(job_id, owner, attempts) for job_id, attempts in strays],
    )
    return [job_id for job_id, _ in strays]


def requeue_job(db: Database, job: Job, saved: bytes | None, now_ms: int) -> bool:
    """Put a running job back in the queue with its saved place, for any instance.

    Fenced like every write of a run: False if the run no longer holds it.
    The row may still say ``pending`` (claimed by this run): when the child's
    start and its stop arrive in one read, 'running' is never written alone.
    """
    changed = db.execute(
        "UPDATE jobs SET status = 'pending', progress = ?, result = ?, pid = NULL,"
        " started_at = NULL, owner = NULL, saved_state = COALESCE(?, saved_state),"
        " saved_at = COALESCE(?, saved_at), updated_at = ?"
        " WHERE id = ? AND owner = ? AND attempts = ? AND status IN ('pending', 'running')",
        (
            to_json(job.progress),
            to_json(job.result),
            None if saved is None else saved.decode(),
            to_ms(job.saved_at) if saved is not None else None,
            now_ms,
            job.id,
            job.owner,
            job.attempts,
        ),
    )
    if changed:
        notify_pending(db)
    return changed == 1


def cancel_unclaimed(db: Database, job: Job, now_ms: int) -> bool:
    """Cancel a pending or scheduled job no instance has claimed; False if one has meanwhile."""
    cancel = to_json(job.cancel)
    changed = db.execute(
        "UPDATE jobs SET status = ?, cancel = ?, completed_at = ?, updated_at = ?,"
        " exclusive_key = NULL WHERE id = ? AND status IN ('scheduled', 'pending')"
        " AND owner IS NULL",
        (job.status.value, cancel, to_ms(job.completed_at), now_ms, job.id),
    )
    if changed:
        return True
    # A retry after a commit whose answer was lost finds its own cancel.
    row = db.one("SELECT status, cancel FROM jobs WHERE id = ?", (job.id,))
    return row == (job.status.value, cancel)


def request_cancel(db: Database, job_id: str, request: dict[str, Any], now_ms: int) -> bool:
    """Leave a cancel request for the instance that owns the job, and wake it."""
    changed = db.execute(
        f"UPDATE jobs SET cancel_request = ?, updated_at = ? WHERE id = ? AND status IN {LIVE_SQL}",
        (to_json(request), now_ms, job_id),
    )
    if changed and db.dialect == "postgresql":
        # "<job id> <reason> <requestedBy as JSON>": none of them holds a space.
        by = to_json(request.get("requestedBy")) or "null"
        payload = f"{job_id} {request.get('reason', 'user')} {by}"
        db.execute("SELECT pg_notify('jobsup_cancel', ?)", (payload,))
    return changed == 1


def cancel_requests(db: Database, owner: str) -> list[tuple[str, str, RequestedBy | None]]:
    """(job id, reason, who) of this owner's live jobs another instance asked to cancel."""
    rows = db.query(
        "SELECT id, cancel_request FROM jobs WHERE owner = ?"
        f" AND status IN {LIVE_SQL} AND cancel_request IS NOT NULL",
        (owner,),
    )
    requests = [(r[0], _request_decoder.decode(r[1])) for r in rows]
    return [(job_id, r.reason, r.requested_by) for job_id, r in requests]


class _CancelRequest(msgspec.Struct, rename="camel"):
    reason: str = "user"
    requested_by: RequestedBy | None = None


_request_decoder = msgspec.json.Decoder(_CancelRequest)
_by_decoder = msgspec.json.Decoder(RequestedBy | None)


def parse_cancel_note(payload: str) -> tuple[str, str, RequestedBy | None]:
    """The NOTIFY payload ``request_cancel`` sends: job id, reason, who."""
    job_id, _, rest = payload.partition(" ")
    reason, _, by = rest.partition(" ")
    try:
        requested_by = _by_decoder.decode(by) if by else None
    except msgspec.DecodeError:
        requested_by = None
    return job_id, reason or "user", requested_by


def notify_pending(db: Database) -> None:
    if db.dialect == "postgresql":
        db.execute("SELECT pg_notify('jobsup_pending', '')")


def orphaned_jobs(db: Database, earlier_self: str | None = None) -> list[Job]:
    """Live jobs owned by an instance that is no longer registered.

    ``earlier_self``: an instance id just taken over from a dead process; its
    jobs are that process's, not the new one's.
    """
    # Owned live jobs are few (running, or claimed a moment ago) however long
    # the queue: read them by jobs_owner_live. SQLite's planner would take
    # jobs_status_created and walk every pending job, so it is told, when
    # the index covers exactly LIVE_SQL (else INDEXED BY would be an error).
    index = " INDEXED BY jobs_owner_live" if _owner_index_fits(db) else ""
    rows = db.query(
        f"SELECT {COLUMNS} FROM jobs{index} WHERE status IN {LIVE_SQL}"
        " AND owner IS NOT NULL AND (owner NOT IN (SELECT id FROM instances) OR owner = ?)"
        " ORDER BY created_at, id",
        (earlier_self,),
    )
    return [row_to_job(r) for r in rows]


def _owner_index_fits(db: Database) -> bool:
    """SQLite: jobs_owner_live's WHERE is ``status IN LIVE_SQL``, so a query with it may name it."""
    if db.dialect != "sqlite":
        return False
    row = db.one("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'jobs_owner_live'")
    return row is not None and f"status IN {LIVE_SQL}" in " ".join(str(row[0]).split())


def rescue_job(db: Database, old: Job, new: Job, now_ms: int, rank: int | None = None) -> bool:
    """Write ``new`` over a dead instance's job, unless another rescuer did first.

    ``rank``: the claim order of a job rescued as ``scheduled`` (a retry).
    """
    release = ", exclusive_key = NULL" if new.status in TERMINAL else ""
    if rank is not None:
        release += f", run_at = {int(to_ms(new.run_at) or 0)}, queue_rank = {int(rank)}"
    changed = db.execute(
        f"UPDATE jobs SET {STATE_SET}{release} WHERE id = ? AND owner = ? AND status = ?",
        (*state_values(new), now_ms, new.id, old.owner, old.status.value),
    )
    return changed == 1
