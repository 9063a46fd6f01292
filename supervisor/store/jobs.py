"""The job table's SQL: schema, row mapping, and the queries the API needs.

Plain synchronous functions over ``workers.db.Database``; the async ``Store``
runs them off the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec

from supervisor.audit import AuditEntry
from supervisor.forensics import Resources
from supervisor.job import (
    Job,
)
from supervisor.state import HELD, LIVE, STORED_BEFORE, TERMINAL, JobStatus
from supervisor.store import chains, job_logs, outbox
from supervisor.store.access import insert_audit
from supervisor.store.outbox import NoticeOf
from supervisor.store.rows import COLUMNS, KeyTaken, row_to_job, to_json
from workers.db import Database

# Stored times: whole milliseconds, one rounding everywhere (workers.times).
from workers.times import opt_to_ms as to_ms

MIGRATIONS = [
    (
        1,
        """
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            status TEXT NOT NULL,
            config TEXT NOT NULL,
            progress TEXT NOT NULL,
            result TEXT,
            error TEXT,
            cancel TEXT,
            pid INTEGER,
            created_at BIGINT NOT NULL,
            started_at BIGINT,
            completed_at BIGINT,
            updated_at BIGINT NOT NULL,
            owner TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            exclusive_key TEXT,
            group_wa_id TEXT
        );
        CREATE UNIQUE INDEX jobs_live_key ON jobs (exclusive_key);
        CREATE INDEX jobs_created ON jobs (created_at, id);
        CREATE INDEX jobs_status_created ON jobs (status, created_at, id);
        CREATE INDEX jobs_type_created ON jobs (type, created_at, id);
        CREATE INDEX jobs_group_created ON jobs (group_wa_id, created_at, id);
        CREATE INDEX jobs_completed ON jobs (completed_at)
        """,
    ),
    (
        2,
        """
        ALTER TABLE jobs ADD COLUMN cancel_request TEXT;
        CREATE INDEX jobs_claimable ON jobs (created_at, id)
            WHERE status = 'pending' AND owner IS NULL;
        CREATE INDEX jobs_owner_live ON jobs (owner)
            WHERE status IN ('pending', 'running', 'cancelling');
        CREATE TABLE instances (
            id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            started_at BIGINT NOT NULL,
            heartbeat_at BIGINT NOT NULL
        )
        """,
    ),
    (
        3,
        # A job type names what its jobs are listed by (a label); the one
        # job-specific column there was before labels is carried over, then dropped.
        """
        ALTER TABLE jobs ADD COLUMN label TEXT;
        UPDATE jobs SET label = 'groupWaId=' || group_wa_id WHERE group_wa_id IS NOT NULL;
        DROP INDEX jobs_group_created;
        ALTER TABLE jobs DROP COLUMN group_wa_id;
        CREATE INDEX jobs_label_created ON jobs (label, created_at, id)
        """,
    ),
    (
        4,
        # A resumable job's saved place (ctx.save), and how often it resumed from one.
        """
        ALTER TABLE jobs ADD COLUMN saved_state TEXT;
        ALTER TABLE jobs ADD COLUMN saved_at BIGINT;
        ALTER TABLE jobs ADD COLUMN resumes INTEGER NOT NULL DEFAULT 0
        """,
    ),
    (
        5,
        # A rerun names the job it repeats.
        "ALTER TABLE jobs ADD COLUMN rerun_of TEXT",
    ),
    (
        6,
        # Who started the job (a token's name, role and fingerprint), as JSON.
        "ALTER TABLE jobs ADD COLUMN requested_by TEXT",
    ),
    (
        7,
        # Time in the claim: scheduled jobs (run_at), the claim order
        # (queue_rank: arrival minus priority times the aging step, see
        # queue_rank()), retry policies and failed attempts, idempotency keys.
        # A scheduled job is live: jobs_owner_live is respelled with it.
        """
        ALTER TABLE jobs ADD COLUMN run_at BIGINT;
        ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE jobs ADD COLUMN queue_rank BIGINT;
        ALTER TABLE jobs ADD COLUMN retry TEXT;
        ALTER TABLE jobs ADD COLUMN attempt_errors TEXT;
        ALTER TABLE jobs ADD COLUMN idempotency_key TEXT;
        UPDATE jobs SET queue_rank = created_at;
        DROP INDEX jobs_claimable;
        CREATE INDEX jobs_claimable ON jobs (status, queue_rank, id)
            WHERE status = 'pending' AND owner IS NULL;
        CREATE INDEX jobs_due ON jobs (run_at) WHERE status = 'scheduled';
        DROP INDEX jobs_owner_live;
        CREATE INDEX jobs_owner_live ON jobs (owner)
            WHERE status IN ('scheduled', 'pending', 'running', 'cancelling');
        CREATE UNIQUE INDEX jobs_idempotency ON jobs (idempotency_key)
        """,
    ),
    (
        11,
        # Chains and approvals (supervisor.store.chains): what a waiting job
        # runs after (after_*), its chain, its approval, when an unanswered
        # one expires, and the exclusive key it takes once released (a held
        # job holds none: it must not block its own parent on the same key).
        """
        ALTER TABLE jobs ADD COLUMN after_job_id TEXT;
        ALTER TABLE jobs ADD COLUMN after_when TEXT;
        ALTER TABLE jobs ADD COLUMN after_pass TEXT;
        ALTER TABLE jobs ADD COLUMN chain_id TEXT;
        ALTER TABLE jobs ADD COLUMN chain_index INTEGER;
        ALTER TABLE jobs ADD COLUMN approval_required INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE jobs ADD COLUMN approved_by TEXT;
        ALTER TABLE jobs ADD COLUMN approved_at BIGINT;
        ALTER TABLE jobs ADD COLUMN rejected_by TEXT;
        ALTER TABLE jobs ADD COLUMN rejected_at BIGINT;
        ALTER TABLE jobs ADD COLUMN expires_at BIGINT;
        ALTER TABLE jobs ADD COLUMN held_key TEXT;
        CREATE INDEX jobs_after ON jobs (after_job_id);
        CREATE INDEX jobs_chain ON jobs (chain_id, chain_index)
        """,
    ),
    (
        10,
        # Pause and resume: when a job paused (its paused timeout counts from
        # there, across a restart), and a pause or resume asked through
        # another instance (claims.request_pause). Pausing and paused jobs are
        # live: jobs_owner_live is respelled with them.
        """
        ALTER TABLE jobs ADD COLUMN paused_at BIGINT;
        ALTER TABLE jobs ADD COLUMN pause_request TEXT;
        DROP INDEX jobs_owner_live;
        CREATE INDEX jobs_owner_live ON jobs (owner)
            WHERE status IN ('scheduled', 'pending', 'running', 'cancelling', 'pausing', 'paused')
        """,
    ),
    (
        8,
        # What a job may use (workers.limits.Limits, as JSON), and how many
        # of its descendants were still alive at its end and killed then.
        """
        ALTER TABLE jobs ADD COLUMN limits TEXT;
        ALTER TABLE jobs ADD COLUMN leftovers_killed INTEGER
        """,
    ),
    (
        9,
        # Forensics: how the last run ended and what it used (JSON), and
        # each job's captured output (store.job_logs).
        "ALTER TABLE jobs ADD COLUMN resources TEXT;" + job_logs.SCHEMA,
    ),
]
# Claiming reads jobs_claimable in queue_rank order (arrival, moved ahead by
# priority; led by status, or SQLite's planner prefers jobs_status_created and
# sorts every pending job); the claim finds due scheduled jobs through
# jobs_due; an instance's own live jobs (cancel requests, rescue of a dead
# instance) come from jobs_owner_live. jobs_idempotency is unique over
# non-NULL keys: two starts with one key, on any instances, make one job.
# jobs_live_key is unique over non-NULL keys only (NULLs never collide in
# SQLite or PostgreSQL): a key is set while a job is live and cleared when it
# ends, so the database itself refuses two live jobs on one group.
# Held jobs (waiting, awaiting_approval) are found through jobs_status_created
# (the claim's sweep, expiry) and jobs_after (the jobs one job's end releases);
# a chain's steps through jobs_chain.

# What a state change writes: state_values(job) then the time of the write.
STATE_SET = (
    "status = ?, progress = ?, result = ?, error = ?, cancel = ?, pid = ?,"
    " started_at = ?, completed_at = ?, owner = ?, attempts = ?, resumes = ?,"
    " attempt_errors = ?, paused_at = ?, leftovers_killed = ?, updated_at = ?"
)


def state_values(job: Job) -> tuple[Any, ...]:
    """The columns a state change writes, in the order the UPDATEs list them."""
    return (
        job.status.value,
        to_json(job.progress),
        to_json(job.result),
        to_json(job.error),
        to_json(job.cancel),
        job.pid,
        to_ms(job.started_at),
        to_ms(job.completed_at),
        job.owner,
        job.attempts,
        job.resumes,
        to_json(job.attempt_errors),
        to_ms(job.paused_at),
        job.leftovers_killed,
    )


# JOBSUP_PRIORITY_AGING_S's default, for an insert given no rank (callers
# that know the setting pass the rank: JobService.prepare).
DEFAULT_AGING_MS = 60_000


def queue_rank(job: Job, aging_ms: int) -> int:
    """Where a job waits in the claim order: lower is claimed first.

    Its arrival in the queue (``run_at`` for a scheduled job, else its
    creation) moved earlier by ``aging_ms`` per point of priority. Ordering
    by it is ordering by ``priority + waited / aging_ms``, highest first, at
    any moment: a job that has waited ``aging_ms`` longer than another counts
    one point higher, so no job waits behind higher ones forever. ``now``
    drops out, so the order is a stored column and an index.
    """
    arrival = to_ms(job.run_at or job.created_at)
    assert arrival is not None
    return arrival - job.priority * aging_ms


def label_of(name: str, value: str) -> str:
    """The stored form of a job's label: one indexed column for every job type."""
    return f"{name}={value}"


class QueueFull(Exception):
    pass


class IdempotentReplay(Exception):
    """A job with the same idempotency key was accepted within the key's lifetime."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


def insert_job(
    db: Database,
    job: Job,
    key: str | None,
    label: str | None,
    now_ms: int,
    max_pending: int,
    claim_for: str | None = None,
    rank: int | None = None,
    idempotency_ttl_ms: int = 0,
    audit: AuditEntry | None = None,
    notice_of: NoticeOf | None = None,
) -> bool:
    """Insert a pending (or scheduled) job, unless the queue is full or its key is taken.

    With ``claim_for``, an instance with a free slot takes a pending job at
    once when no other job is waiting (saving a claim round trip); returns
    whether it did. A job whose ``idempotency_key`` a job created within
    ``idempotency_ttl_ms`` carries is not inserted: ``IdempotentReplay``
    names that job (an older holder of the key gives it up). ``audit``: the
    start's audit entry, written in the same transaction, so that no job
    exists without its entry. ``notice_of``: the notifications of the states
    the insert writes (a job awaiting approval from the start, a follower of
    an ended parent released at once), in the same transaction.
    """
    with db.transaction():
        stored = db.one("SELECT owner, attempts FROM jobs WHERE id = ?", (job.id,))
        if stored is not None:  # a retry after a commit whose answer was lost
            job.owner, job.attempts = stored
            return claim_for is not None and stored[0] == claim_for
        if job.idempotency_key is not None:
            _check_idempotency(db, job.idempotency_key, now_ms - idempotency_ttl_ms)
        (waiting_jobs,) = db.one(
            "SELECT count(*) FROM jobs WHERE status IN ('scheduled', 'pending')"
        ) or (0,)
        if waiting_jobs >= max_pending:
            raise QueueFull
        held = job.status in HELD  # takes its key when released, not now
        if job.after is not None and not job_exists(db, job.after.job_id):
            raise UnknownParent(job.after.job_id)
        if key is not None and not held:
            holder = db.one("SELECT id FROM jobs WHERE exclusive_key = ?", (key,))
            if holder is not None:
                raise KeyTaken(key, holder[0])
        waiting = db.one("SELECT 1 FROM jobs WHERE status = 'pending' AND owner IS NULL LIMIT 1")
        claimed = claim_for is not None and waiting is None and job.status is JobStatus.PENDING
        if claimed:  # the claim is the fencing token: (owner, attempts) of this run
            job.owner = claim_for
            job.attempts += 1
        _insert(db, job, None if held else key, label, now_ms, rank, key if held else None)
        if audit is not None:
            insert_audit(db, audit)
        notice = None if notice_of is None else notice_of(job)
        if notice is not None:  # awaiting approval from the start
            outbox.enqueue(db, notice, now_ms)
        if job.after is not None:  # its parent may have ended already
            chains.release_after(db, now_ms, job.after.job_id, notice_of)
    return claimed


class UnknownParent(Exception):
    """A start's ``after.jobId`` names no job."""


def _check_idempotency(db: Database, idempotency_key: str, since_ms: int) -> None:
    row = db.one("SELECT id, created_at FROM jobs WHERE idempotency_key = ?", (idempotency_key,))
    if row is None:
        return
    if row[1] >= since_ms:
        raise IdempotentReplay(row[0])
    # Expired: the old job keeps its record but lets the key go.
    db.execute("UPDATE jobs SET idempotency_key = NULL WHERE id = ?", (row[0],))


def holder_of_idempotency_key(db: Database, idempotency_key: str) -> str | None:
    """The job holding the key (the winner of a race two inserts ran), if any."""
    row = db.one("SELECT id FROM jobs WHERE idempotency_key = ?", (idempotency_key,))
    return None if row is None else str(row[0])


def _insert(
    db: Database,
    job: Job,
    key: str | None,
    label: str | None,
    now_ms: int,
    rank: int | None = None,
    held_key: str | None = None,
) -> None:
    db.execute(
        "INSERT INTO jobs (status, progress, result, error, cancel, pid, started_at,"
        " completed_at, owner, attempts, resumes, attempt_errors, paused_at, leftovers_killed, id,"
        " type, config, created_at, updated_at, exclusive_key, label, rerun_of, run_at, priority,"
        " queue_rank, retry, idempotency_key, requested_by, after_job_id, after_when, after_pass,"
        " chain_id, chain_index, approval_required, expires_at, held_key, limits)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
        " ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            *state_values(job),
            job.id,
            job.type,
            bytes(job.config).decode(),
            to_ms(job.created_at),
            now_ms,
            key,
            label,
            job.rerun_of,
            to_ms(job.run_at),
            job.priority,
            queue_rank(job, DEFAULT_AGING_MS) if rank is None else rank,
            to_json(job.retry),
            job.idempotency_key,
            to_json(job.requested_by),
            None if job.after is None else job.after.job_id,
            None if job.after is None else job.after.when,
            None if job.after is None else to_json(job.after.result_to_config),
            job.chain_id,
            job.chain_index,
            1 if job.approval is not None else 0,
            None if job.approval is None else to_ms(job.approval.expires_at),
            held_key,
            to_json(job.limits),
        ),
    )


def _in(statuses: frozenset[JobStatus]) -> str:
    return "(" + ", ".join(f"'{s.value}'" for s in sorted(statuses)) + ")"


# Each status's write condition: the stored state it may replace (never a final one).
_MAY_REPLACE = {status: _in(before) for status, before in STORED_BEFORE.items()}
# state.LIVE, spelled as the partial index jobs_owner_live spells it: SQLite
# uses a partial index only for a query that repeats its WHERE term as written.
_LIVE_ORDER = (
    JobStatus.SCHEDULED,
    JobStatus.PENDING,
    JobStatus.RUNNING,
    JobStatus.CANCELLING,
    JobStatus.PAUSING,
    JobStatus.PAUSED,
)
assert frozenset(_LIVE_ORDER) == LIVE
LIVE_SQL = "(" + ", ".join(f"'{s.value}'" for s in _LIVE_ORDER) + ")"


def update_job(
    db: Database,
    job: Job,
    now_ms: int,
    notice_of: NoticeOf | None = None,
) -> bool:
    """Write the job's state if this run still holds it; a terminal job releases its key.

    Fenced: the row must still carry this run's ``owner`` and ``attempts``
    and a state the new one can follow. False means it does not: another
    instance rescued the job (or it ended) and this instance must let go.
    ``notice_of``: the notifications this state sends, and those of the
    jobs its end releases (``chains``), added to the outbox in the same
    transaction (only by the write that changes the row).
    """
    final = job.status in TERMINAL
    release = " , exclusive_key = NULL" if final else ""
    sql = (
        f"UPDATE jobs SET {STATE_SET}{release} WHERE id = ? AND owner = ? AND attempts = ?"
        f" AND status IN {_MAY_REPLACE[job.status]}"
    )
    values = (*state_values(job), now_ms, job.id, job.owner, job.attempts)
    notice = None if notice_of is None else notice_of(job)
    # One statement needs no transaction of its own; an end releasing the jobs
    # chained after it, or a notice for the outbox, makes two.
    if not final and notice is None:
        changed = db.execute(sql, values)
    else:
        with db.transaction():
            changed = db.execute(sql, values)
            if changed == 1 and final:  # its end releases the jobs chained after it
                chains.release_after(db, now_ms, job.id, notice_of)
            if changed == 1 and notice is not None:
                outbox.enqueue(db, notice, now_ms)
    return changed == 1 or _already_written(db, job)


def _already_written(db: Database, job: Job) -> bool:
    """A retry of a write whose commit landed finds its own final state, not a rival's."""
    row = db.one("SELECT status, owner, attempts, completed_at FROM jobs WHERE id = ?", (job.id,))
    mine = (job.status.value, job.owner, job.attempts, to_ms(job.completed_at))
    return row is not None and row == mine


def update_progress(
    db: Database, jobs: list[Job], now_ms: int, saved: Mapping[str, bytes] | None = None
) -> list[str]:
    """Write live jobs' progress and results, and the places in ``saved`` (job id -> JSON).

    Returns the ids this instance no longer holds.
    """
    saved = saved or {}
    lost: list[str] = []
    for j in jobs:  # one statement each: a front stalled between them holds no lock
        place = saved.get(j.id)
        save_set = "" if place is None else ", saved_state = ?, saved_at = ?"
        save_values = () if place is None else (place.decode(), to_ms(j.saved_at))
        changed = db.execute(
            f"UPDATE jobs SET progress = ?, result = ?, updated_at = ?{save_set} WHERE id = ?"
            f" AND owner = ? AND attempts = ? AND status IN {LIVE_SQL}",
            (
                to_json(j.progress),
                to_json(j.result),
                now_ms,
                *save_values,
                j.id,
                j.owner,
                j.attempts,
            ),
        )
        if not changed:
            lost.append(j.id)
    return lost


def set_resources(db: Database, ends: list[tuple[str, tuple[int, Resources]]]) -> None:
    """Record how runs ended and what they used: (job id, (attempt, resources)) each.

    Fenced by the run's attempt: a later run's are never overwritten.
    """
    with db.transaction():  # one commit for the lot
        db.executemany(
            "UPDATE jobs SET resources = ? WHERE id = ? AND attempts = ?",
            [(to_json(resources), job_id, attempt) for job_id, (attempt, resources) in ends],
        )


def get_job(db: Database, job_id: str) -> Job | None:
    row = db.one(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,))
    return None if row is None else row_to_job(row)


def job_exists(db: Database, job_id: str) -> bool:
    return db.one("SELECT 1 FROM jobs WHERE id = ?", (job_id,)) is not None


def delete_finished(db: Database, job_id: str) -> tuple[bool, JobStatus | None]:
    """Delete the job if it has finished: (whether it was deleted, its status; None: no job).

    The DELETE itself decides: a job still live on any instance is not deleted.
    """
    with db.transaction():
        deleted = db.query(
            f"DELETE FROM jobs WHERE id = ? AND status IN {_in(TERMINAL)} RETURNING status",
            (job_id,),
        )
        if deleted:
            job_logs.delete(db, [job_id])
            return True, JobStatus(deleted[0][0])
    row = db.one("SELECT status FROM jobs WHERE id = ?", (job_id,))
    return False, None if row is None else JobStatus(row[0])


def live_with_label(db: Database, label: str) -> tuple[str, str] | None:
    """``(id, status)`` of a live job carrying the label, on any instance, if there is one."""
    row = db.one(
        f"SELECT id, status FROM jobs WHERE label = ? AND status IN {LIVE_SQL} LIMIT 1", (label,)
    )
    return None if row is None else (row[0], row[1])


class JobFilter(msgspec.Struct, kw_only=True):
    status: JobStatus | None = None
    type: str | None = None
    label: str | None = None  # "name=value", as label_of makes it
    chain_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    before: str | None = None  # cursor: a job id; only older jobs are listed
    limit: int = 50
    with_result: bool = True  # False: the result column is not read (lists leave it out)


class UnknownCursor(Exception):
    pass


def list_jobs(db: Database, f: JobFilter) -> list[Job]:
    """Newest first, up to ``f.limit + 1`` jobs (the extra one: there is more).

    Each filter maps onto an index led by that column.
    """
    where: list[str] = []
    params: list[Any] = []
    filters = (("status", f.status), ("type", f.type), ("label", f.label), ("chain_id", f.chain_id))
    for column, value in filters:
        if value is not None:
            where.append(f"{column} = ?")
            params.append(str(value))
    if f.created_after is not None:
        where.append("created_at >= ?")
        params.append(to_ms(f.created_after))
    if f.created_before is not None:
        where.append("created_at < ?")
        params.append(to_ms(f.created_before))
    if f.before is not None:
        cursor = db.one("SELECT created_at FROM jobs WHERE id = ?", (f.before,))
        if cursor is None:
            raise UnknownCursor(f.before)
        where.append("(created_at < ? OR (created_at = ? AND id < ?))")
        params += [cursor[0], cursor[0], f.before]
    columns = COLUMNS if f.with_result else COLUMNS.replace(" result,", " NULL,")
    sql = f"SELECT {columns} FROM jobs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
    # One row more than asked tells whether there is a next page.
    return [row_to_job(r) for r in db.query(sql, (*params, f.limit + 1))]


def prune(db: Database, cutoff_ms: int) -> int:
    """Delete jobs finished before the cutoff, and their logs."""
    pruned = db.execute(
        "DELETE FROM jobs WHERE completed_at IS NOT NULL AND completed_at < ?", (cutoff_ms,)
    )
    if pruned:
        job_logs.prune_orphans(db)
    return pruned


def get_jobs(db: Database, ids: list[str], with_result: bool) -> list[Job]:
    """The jobs with these ids (those that exist), for following them."""
    if not ids:
        return []
    columns = COLUMNS if with_result else COLUMNS.replace(" result,", " NULL,")
    marks = ", ".join("?" * len(ids))
    return [
        row_to_job(r) for r in db.query(f"SELECT {columns} FROM jobs WHERE id IN ({marks})", ids)
    ]


def foreign_live_jobs(db: Database, me: str, limit: int) -> list[Job]:
    """Live jobs not held by instance ``me`` (others', or still unclaimed), without results.

    Scheduled jobs are left out: nothing happens to them until they are due,
    and a year of them must not crowd out the jobs that run.
    """
    columns = COLUMNS.replace(" result,", " NULL,")
    return [
        row_to_job(r)
        for r in db.query(
            f"SELECT {columns} FROM jobs WHERE status IN ('pending', 'running', 'cancelling',"
            " 'pausing', 'paused')"
            " AND (owner IS NULL OR owner <> ?) ORDER BY created_at, id LIMIT ?",
            (me, limit),
        )
    ]


def insert_chain(
    db: Database,
    steps: list[tuple[Any, str | None, str | None, int, Any]],
    now_ms: int,
    max_pending: int,
    idempotency_ttl_ms: int,
    notice_of: NoticeOf | None = None,
) -> None:
    """Insert a chain's steps (job, key, label, rank, audit entry) in one transaction."""
    with db.transaction():
        for job, key, label, rank, audit in steps:
            insert_job(
                db,
                job,
                key,
                label,
                now_ms,
                max_pending,
                None,
                rank,
                idempotency_ttl_ms,
                audit,
                notice_of,
            )
