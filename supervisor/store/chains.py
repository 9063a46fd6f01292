"""Chains and approvals in the store: held jobs, and the writes that release them.

A job started ``after`` another waits as ``waiting``; an approval step waits
as ``awaiting_approval``. Neither is claimable: they are rows the claim
query does not pick, with no owner, no child and no exclusive key (the key
they will need is kept in ``held_key`` and taken when they become pending,
so a step never blocks its own parent on the same group).

Time lives in the claim and in the parent's end, not in a watcher: the
write that ends a job (``jobs.update_job``, ``claims.cancel_unclaimed``,
a rescue, a rejection, an expiry) calls ``release`` for it in the same
transaction, and every claim sweeps (``release`` with no parent named) for
what a lost write or a busy key left behind. So a chain goes on whichever
instance ends the parent, across restarts.

Every move here to a final state or to ``awaiting_approval`` adds its
notifications to the outbox in its own transaction: the writes take
``notice_of`` (the front's ``Notices.notice_of``; None: no URL configured)
and build each notice from the row the move returns.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from supervisor.job import CancelInfo, RequestedBy
from supervisor.state import HELD, TERMINAL, JobStatus, job_error
from supervisor.store import outbox
from supervisor.store.outbox import NoticeOf
from supervisor.store.rows import COLUMNS, KeyTaken, row_to_job, to_json
from workers.db import Database
from workers.times import from_ms

log = logging.getLogger("jobsup.chains")

_TERMINAL_SQL = "(" + ", ".join(f"'{s.value}'" for s in sorted(TERMINAL)) + ")"
_HELD_SQL = "('waiting', 'awaiting_approval')"
assert frozenset({JobStatus.WAITING, JobStatus.AWAITING_APPROVAL}) == HELD

# A released job's place in the claim order: its arrival is its release, not
# its creation (a chain's tenth step must not jump the queue), keeping the
# priority offset its rank was given.
_RANK_FROM_NOW = "queue_rank = queue_rank + (? - created_at)"


def notify(
    db: Database, rows: list[tuple[Any, ...]], now_ms: int, notice_of: NoticeOf | None
) -> None:
    """Add the notifications of the moved rows (``RETURNING COLUMNS``) to the outbox."""
    for row in rows if notice_of is not None else ():
        notice = notice_of(row_to_job(row))
        if notice is not None:
            outbox.enqueue(db, notice, now_ms)


def release(
    db: Database, now_ms: int, parents: list[str] | None = None, notice_of: NoticeOf | None = None
) -> list[str]:
    """Move the waiting jobs whose parent (one of ``parents``; None: any) has ended.

    Each becomes pending (or awaiting_approval, an approval step) if its
    parent ended as its ``after.when`` asks, else cancelled with reason
    ``dependency``, which releases its own children in turn. A job whose
    exclusive key a live job holds stays waiting: the next claim tries
    again. In the caller's transaction. Returns the ids moved.
    """
    moved: list[str] = []
    while parents is None or parents:
        ended: list[str] = []
        for row in _released(db, parents):
            status = _release_one(db, row, now_ms, notice_of)
            if status is not None:
                moved.append(row[0])
            if status is JobStatus.CANCELLED:
                ended.append(row[0])
        parents = ended  # a cancelled step ends its own children's wait
    return moved


def release_after(
    db: Database, now_ms: int, parent_id: str, notice_of: NoticeOf | None = None
) -> None:
    """``release`` for one parent's end, inside that end's write: never its undoing."""
    what = f"releasing the jobs after {parent_id}"
    _guarded(db, what, release, db, now_ms, [parent_id], notice_of)


def sweep(db: Database, now_ms: int, notice_of: NoticeOf | None = None) -> None:
    """A claim's look at the held jobs: expire the overdue, release what a write left."""
    _guarded(db, "expiring held jobs", expire, db, now_ms, notice_of)
    _guarded(db, "releasing waiting jobs", release, db, now_ms, None, notice_of)


def _guarded(db: Database, what: str, fn: Any, *args: Any) -> None:
    """Run ``fn`` in a savepoint: a failure (a bug, a row it cannot decode) undoes it alone.

    The write around it (a parent's end, a claim) goes on, and the next
    claim's sweep tries again; a database outage still fails the whole write.
    """
    try:
        with db.transaction():
            fn(*args)
    except Exception as exc:
        from supervisor.store import _is_unavailable

        if _is_unavailable(exc):
            raise
        log.exception("%s failed; the next claim tries again", what)


def _released(db: Database, parents: list[str] | None) -> list[tuple[Any, ...]]:
    where = ""
    if parents is not None:
        where = f" AND c.after_job_id IN ({', '.join('?' * len(parents))})"
    return db.query(
        "SELECT c.id, c.after_job_id, c.after_when, c.after_pass, c.held_key,"
        " c.approval_required, c.config, p.status,"
        " CASE WHEN c.after_pass IS NULL THEN NULL ELSE p.result END"
        " FROM jobs c LEFT JOIN jobs p ON p.id = c.after_job_id"
        f" WHERE c.status = 'waiting' AND (p.id IS NULL OR p.status IN {_TERMINAL_SQL}){where}"
        " ORDER BY c.created_at, c.id",
        tuple(parents or ()),
    )


def _release_one(
    db: Database, row: tuple[Any, ...], now_ms: int, notice_of: NoticeOf | None
) -> JobStatus | None:
    job_id, parent, when, passed, held_key, approval, config, parent_status, result = row
    message = None
    if parent_status is None:
        message = f"the job it runs after, {parent}, is gone"
    elif when == "completed" and parent_status != "completed":
        message = f"the job it runs after, {parent}, ended {parent_status}"
    elif passed is not None:
        config, missing = _passed_config(config, result, msgspec.json.decode(passed))
        if missing is not None:
            message = f"the result of {parent} has no {missing!r} for its config"
    if message is not None:
        return _end(db, job_id, now_ms, "dependency", message, notice_of)
    if approval:
        moved = db.query(
            "UPDATE jobs SET status = 'awaiting_approval', config = ?, updated_at = ?"
            f" WHERE id = ? AND status = 'waiting' RETURNING {COLUMNS}",
            (config, now_ms, job_id),
        )
        notify(db, moved, now_ms, notice_of)  # job.awaiting_approval
        return JobStatus.AWAITING_APPROVAL if moved else None
    try:
        changed = _to_pending(db, job_id, held_key, now_ms, "waiting", config=config)
    except KeyTaken:
        return None  # waits on: the next claim tries again
    return JobStatus.PENDING if changed else None  # None: a rival moved it first


def _passed_config(config: str, result: str | None, fields: dict[str, str]) -> tuple[str, Any]:
    """The config with the parent's result fields copied in; or the first missing field."""
    found = None if result is None else msgspec.json.decode(result)
    patched = msgspec.json.decode(config)
    for config_field, result_field in fields.items():
        if not isinstance(found, dict) or result_field not in found:
            return config, result_field
        patched[config_field] = found[result_field]
    return msgspec.json.encode(patched).decode(), None


def _to_pending(
    db: Database,
    job_id: str,
    held_key: str | None,
    now_ms: int,
    before: str,
    config: str | None = None,
    approved_by: RequestedBy | None = None,
) -> bool:
    """Make a held job claimable, with the exclusive key it waited to take; KeyTaken if held.

    False: the row was no longer ``before`` (a rival moved it first).
    """
    if held_key is not None:
        holder = db.one("SELECT id FROM jobs WHERE exclusive_key = ?", (held_key,))
        if holder is not None:
            raise KeyTaken(held_key, holder[0])
    approved = ""
    values: tuple[Any, ...] = ()
    if approved_by is not None:
        approved = ", approved_by = ?, approved_at = ?"
        values = (to_json(approved_by), now_ms)
    try:
        with db.transaction():  # a savepoint: a rival's key, taken meanwhile, undoes this only
            changed = db.execute(
                f"UPDATE jobs SET status = 'pending', exclusive_key = held_key, held_key = NULL,"
                f" config = COALESCE(?, config), updated_at = ?, {_RANK_FROM_NOW}{approved}"
                " WHERE id = ? AND status = ?",
                (config, now_ms, now_ms, *values, job_id, before),
            )
    except Exception as exc:
        from supervisor.store import is_unique_violation

        if held_key is None or not is_unique_violation(exc):
            raise
        raise KeyTaken(held_key, None) from None
    return changed == 1


def _end(
    db: Database,
    job_id: str,
    now_ms: int,
    reason: str,
    message: str,
    notice_of: NoticeOf | None,
    by: RequestedBy | None = None,
    before: str = _HELD_SQL,
    extra: str = "",
    extra_values: tuple[Any, ...] = (),
) -> JobStatus | None:
    """End a held job cancelled, saying why (``reason``: dependency, expired, rejected, user),
    with its notifications (job.finished)."""
    at = from_ms(now_ms)
    cancel = CancelInfo(requested_at=at, reason=reason, requested_by=by)
    error = job_error(reason, "NotRun", message) if reason in ("dependency", "expired") else None
    ended = db.query(
        "UPDATE jobs SET status = 'cancelled', cancel = ?, error = ?, completed_at = ?,"
        f" updated_at = ?, held_key = NULL{extra} WHERE id = ? AND status IN {before}"
        f" RETURNING {COLUMNS}",
        (to_json(cancel), to_json(error), now_ms, now_ms, *extra_values, job_id),
    )
    notify(db, ended, now_ms, notice_of)
    return JobStatus.CANCELLED if ended else None


def expire(db: Database, now_ms: int, notice_of: NoticeOf | None = None) -> list[str]:
    """End the held jobs whose approval came too late (reason ``expired``); ids ended."""
    rows = db.query(
        f"SELECT id FROM jobs WHERE status IN {_HELD_SQL} AND expires_at <= ?", (now_ms,)
    )
    ended = [
        job_id
        for (job_id,) in rows
        if _end(
            db, job_id, now_ms, "expired", "not approved in time (JOBSUP_PLAN_TTL_S)", notice_of
        )
    ]
    if ended:
        release(db, now_ms, ended, notice_of)
    return ended


def next_expiry(db: Database) -> int | None:
    row = db.one(f"SELECT min(expires_at) FROM jobs WHERE status IN {_HELD_SQL}")
    return None if row is None or row[0] is None else int(row[0])


class NotAwaiting(Exception):
    """The job is not awaiting approval (``status``: what it is; None: no such job)."""

    def __init__(self, status: JobStatus | None) -> None:
        super().__init__(status)
        self.status = status


def approve(db: Database, job_id: str, by: RequestedBy | None, now_ms: int) -> None:
    """An approval step becomes pending; KeyTaken if a live job holds its key (it waits on).

    The row is locked as it is read (SQLite's write transaction holds it
    already): read unlocked on PostgreSQL, a rival's reject, expiry or
    approval committed before our UPDATE would leave it matching nothing,
    and the caller would be told "approved" for a job that is not.
    """
    lock = " FOR UPDATE" if db.dialect == "postgresql" else ""
    with db.transaction():
        row = db.one(f"SELECT status, held_key FROM jobs WHERE id = ?{lock}", (job_id,))
        if row is None or row[0] != JobStatus.AWAITING_APPROVAL:
            raise NotAwaiting(None if row is None else JobStatus(row[0]))
        if not _to_pending(db, job_id, row[1], now_ms, "awaiting_approval", approved_by=by):
            # Not with the row locked (SQLite's writer holds it too); said, never assumed.
            now = db.one("SELECT status FROM jobs WHERE id = ?", (job_id,))
            raise NotAwaiting(None if now is None else JobStatus(now[0]))


def reject(
    db: Database,
    job_id: str,
    by: RequestedBy | None,
    now_ms: int,
    notice_of: NoticeOf | None = None,
) -> None:
    """An approval step ends cancelled (reason ``rejected``), and so do the steps after it."""
    with db.transaction():
        ended = _end(
            db,
            job_id,
            now_ms,
            "rejected",
            "rejected",
            notice_of,
            by,
            before="('awaiting_approval')",
            extra=", rejected_by = ?, rejected_at = ?",
            extra_values=(to_json(by), now_ms),
        )
        if ended is None:
            row = db.one("SELECT status FROM jobs WHERE id = ?", (job_id,))
            raise NotAwaiting(None if row is None else JobStatus(row[0]))
        release(db, now_ms, [job_id], notice_of)


# How many generations of followers an end's announcement reads (a chain's length).
MAX_ANNOUNCED_DEPTH = 100


def followers(db: Database, parents: list[str]) -> list[Any]:
    """The jobs waiting (or that waited) for these, without results."""
    columns = COLUMNS.replace(" result,", " NULL,")
    marks = ", ".join("?" * len(parents))
    rows = db.query(f"SELECT {columns} FROM jobs WHERE after_job_id IN ({marks})", parents)
    return [row_to_job(r) for r in rows if r[2] != JobStatus.WAITING]


def chain_jobs(db: Database, chain_id: str) -> list[Any]:
    """A chain's steps in order (without results)."""
    columns = COLUMNS.replace(" result,", " NULL,")
    rows = db.query(
        f"SELECT {columns} FROM jobs WHERE chain_id = ? ORDER BY chain_index", (chain_id,)
    )
    return [row_to_job(r) for r in rows]
