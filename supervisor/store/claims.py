"""Pending jobs shared by instances: claims, cancel requests, and rescue.

The SQL of the job queue that several instances work from (claiming with
``SKIP LOCKED``, cross-instance cancel requests with ``NOTIFY``) and of the
rescue of a dead instance's jobs. ``jobs.py`` has the table and the rest.
"""

from __future__ import annotations

from typing import Any

import msgspec

from supervisor.job import CancelInfo, Job, RequestedBy
from supervisor.state import TERMINAL
from supervisor.store import chains, outbox
from supervisor.store.jobs import (
    COLUMNS,
    LIVE_SQL,
    STATE_SET,
    row_to_job,
    state_values,
    to_json,
    to_ms,
)
from supervisor.store.outbox import NoticeOf
from workers.db import Database
from workers.times import from_ms


def claim_jobs(
    db: Database,
    owner: str,
    limit: int,
    now_ms: int,
    notice_of: NoticeOf | None = None,
) -> list[tuple[Job, bytes | None]]:
    """Take up to ``limit`` unclaimed pending jobs, in claim order, for ``owner``.

    Each comes with its saved place (JSON), if a run of it saved one.

    First, in the same transaction, scheduled jobs whose time has come
    become pending, held jobs past their expiry end, and waiting jobs whose
    parent has ended are released (``chains``); one instance moves each:
    the row's status decides, and on PostgreSQL ``SKIP LOCKED`` lets another
    claim pass them by. Then the claim takes pending jobs by ``queue_rank`` (arrival, moved ahead by
    priority: ``jobs.queue_rank``), then id.

    Each claim counts an attempt: ``(owner, attempts)`` is the run's fencing
    token, stored before any child starts. A pending job someone asked to
    cancel (while its earlier owner was stalled, say) ends cancelled instead,
    with the notifications ``notice_of`` gives for it, in the same transaction.
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
            chains.sweep(db, now_ms, notice_of)
            return []
        # Held jobs past their expiry, and chained jobs whose parent ended
        # without releasing them (a busy exclusive key, a child inserted while
        # its parent's end committed).
        chains.sweep(db, now_ms, notice_of)
        ids = _claimable(db, limit, now_ms, lock, notice_of)
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


def _claimable(
    db: Database,
    limit: int,
    now_ms: int,
    lock: str,
    notice_of: NoticeOf | None = None,
) -> list[str]:
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
        for job_id in asked:
            cancelled = db.query(
                "UPDATE jobs SET status = 'cancelled', cancel = cancel_request, completed_at = ?,"
                " updated_at = ?, pid = NULL, exclusive_key = NULL WHERE id = ?"
                f" RETURNING {COLUMNS}",
                (now_ms, now_ms, job_id),
            )
            chains.release_after(db, now_ms, job_id, notice_of)  # the jobs chained after it
            chains.notify(db, cancelled, now_ms, notice_of)


def next_due(db: Database) -> int | None:
    """When the earliest scheduled job becomes claimable, or a held one expires (ms)."""
    row = db.one("SELECT min(run_at) FROM jobs WHERE status = 'scheduled'")
    due = None if row is None or row[0] is None else int(row[0])
    expiry = chains.next_expiry(db)
    return expiry if due is None else due if expiry is None else min(due, expiry)


def claim_and_look_ahead(
    db: Database,
    owner: str,
    limit: int,
    now_ms: int,
    notice_of: NoticeOf | None = None,
) -> tuple[list[tuple[Job, bytes | None]], int | None]:
    """``claim_jobs``, then when the next scheduled job is due: the scheduler's timer."""
    return claim_jobs(db, owner, limit, now_ms, notice_of), next_due(db)


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
        " WHERE id = ? AND owner = ? AND attempts = ?"
        " AND status IN ('pending', 'running', 'pausing', 'paused')",
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


def requeue_job(
    db: Database, job: Job, saved: bytes | None, now_ms: int, paused: bool = False
) -> bool:
    """Put a running job back in the queue with its saved place, for any instance.

    Fenced like every write of a run: False if the run no longer holds it.
    The row may still say ``pending`` (claimed by this run): when the child's
    start and its stop arrive in one read, 'running' is never written alone.
    ``paused``: a paused job waits unclaimed as ``paused`` (keeping its
    ``paused_at``) until someone resumes it (``resume_unclaimed``).
    """
    status = "paused" if paused else "pending"
    changed = db.execute(
        f"UPDATE jobs SET status = '{status}', paused_at = ?, progress = ?, result = ?,"
        " pid = NULL, started_at = NULL, owner = NULL, pause_request = NULL,"
        " saved_state = COALESCE(?, saved_state),"
        " saved_at = COALESCE(?, saved_at), updated_at = ?"
        " WHERE id = ? AND owner = ? AND attempts = ?"
        " AND status IN ('pending', 'running', 'pausing', 'paused')",
        (
            (to_ms(job.paused_at) or now_ms) if paused else None,
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
    if changed and not paused:
        notify_pending(db)
    return changed == 1


def cancel_unclaimed(
    db: Database, job: Job, now_ms: int, notice_of: NoticeOf | None = None
) -> bool:
    """Cancel a job no instance holds (scheduled, pending, paused or held); False if one does.

    The jobs chained after it are released (cancelled, most often) in the same
    write; ``notice_of``: their notifications and its own, added to the outbox
    in it too.
    """
    cancel = to_json(job.cancel)
    with db.transaction():
        changed = db.execute(
            "UPDATE jobs SET status = ?, cancel = ?, completed_at = ?, updated_at = ?,"
            " exclusive_key = NULL, held_key = NULL WHERE id = ?"
            " AND status IN ('scheduled', 'pending', 'paused', 'waiting', 'awaiting_approval')"
            " AND owner IS NULL",
            (job.status.value, cancel, to_ms(job.completed_at), now_ms, job.id),
        )
        notice = None if notice_of is None or not changed else notice_of(job)
        if changed:
            chains.release_after(db, now_ms, job.id, notice_of)
            if notice is not None:
                outbox.enqueue(db, notice, now_ms)
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


def request_pause(db: Database, job_id: str, action: str, now_ms: int) -> bool:
    """Leave a pause request (``pause``, ``freeze`` or ``resume``) for the job's owner; wake it.

    The latest request replaces an earlier one not yet taken; the owner acts
    on it if it fits the job's state, and clears it (``take_pause_request``).
    """
    changed = db.execute(
        f"UPDATE jobs SET pause_request = ?, updated_at = ? WHERE id = ? AND status IN {LIVE_SQL}"
        " AND owner IS NOT NULL",
        (action, now_ms, job_id),
    )
    if changed and db.dialect == "postgresql":
        db.execute("SELECT pg_notify('jobsup_pause', ?)", (f"{job_id} {action}",))
    return changed == 1


def pause_requests(db: Database, owner: str) -> list[tuple[str, str]]:
    """(job id, action) of this owner's live jobs another instance asked to pause or resume."""
    rows = db.query(
        f"SELECT id, pause_request FROM jobs WHERE owner = ? AND status IN {LIVE_SQL}"
        " AND pause_request IS NOT NULL",
        (owner,),
    )
    return [(job_id, action) for job_id, action in rows]


def take_pause_request(db: Database, job_id: str, action: str) -> None:
    """Clear a pause request once acted on (unless a newer one replaced it)."""
    db.execute(
        "UPDATE jobs SET pause_request = NULL WHERE id = ? AND pause_request = ?", (job_id, action)
    )


def resume_unclaimed(db: Database, job_id: str, now_ms: int) -> bool:
    """A paused job no instance holds (paused across a restart) goes back to the queue."""
    changed = db.execute(
        "UPDATE jobs SET status = 'pending', paused_at = NULL, pause_request = NULL,"
        " updated_at = ? WHERE id = ? AND status = 'paused' AND owner IS NULL",
        (now_ms, job_id),
    )
    if changed:
        notify_pending(db)
    return changed == 1


def cancel_paused_too_long(
    db: Database, paused_before_ms: int, now_ms: int, notice_of: NoticeOf | None = None
) -> list[Job]:
    """Cancel unclaimed paused jobs paused before ``paused_before_ms`` (reason paused_timeout).

    Each end releases the jobs chained after it and adds its notifications
    (``notice_of``) in its own transaction.
    """
    rows = db.query(
        "SELECT id FROM jobs WHERE status = 'paused' AND owner IS NULL AND paused_at < ?",
        (paused_before_ms,),
    )
    at = from_ms(now_ms)
    cancel = to_json(CancelInfo(requested_at=at, reason="paused_timeout", exited_at=at))
    ended: list[Job] = []
    for (job_id,) in rows:
        with db.transaction():
            cancelled = db.query(
                "UPDATE jobs SET status = 'cancelled', cancel = ?, completed_at = ?,"
                " updated_at = ?, paused_at = NULL, exclusive_key = NULL"
                f" WHERE id = ? AND status = 'paused' AND owner IS NULL RETURNING {COLUMNS}",
                (cancel, now_ms, now_ms, job_id),
            )
            if cancelled:
                chains.release_after(db, now_ms, job_id, notice_of)
                chains.notify(db, cancelled, now_ms, notice_of)
        ended.extend(row_to_job(row) for row in cancelled)
    return ended


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


def rescue_job(
    db: Database,
    old: Job,
    new: Job,
    now_ms: int,
    rank: int | None = None,
    notice_of: NoticeOf | None = None,
) -> bool:
    """Write ``new`` over a dead instance's job, unless another rescuer did first.

    ``rank``: the claim order of a job rescued as ``scheduled`` (a retry).
    ``notice_of``: the notifications of a final ``new`` (and of the jobs its
    end releases), in the same transaction.
    """
    release = ", exclusive_key = NULL" if new.status in TERMINAL else ""
    release += ", pause_request = NULL"  # asked of the dead run; not of the next one
    if rank is not None:
        release += f", run_at = {int(to_ms(new.run_at) or 0)}, queue_rank = {int(rank)}"
    with db.transaction():
        changed = db.execute(
            f"UPDATE jobs SET {STATE_SET}{release} WHERE id = ? AND owner = ? AND status = ?",
            (*state_values(new), now_ms, new.id, old.owner, old.status.value),
        )
        if changed == 1 and new.status in TERMINAL:
            chains.release_after(db, now_ms, new.id, notice_of)
        notice = None if notice_of is None or changed != 1 else notice_of(new)
        if notice is not None:
            outbox.enqueue(db, notice, now_ms)
    return changed == 1
