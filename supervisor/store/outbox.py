"""The notification outbox (component "notify"): one row per notification and URL.

A row is written in the same transaction as the state it announces
(``enqueue``, called from the write that moves a job to a final state or
to ``awaiting_approval``), so a crash loses no notification. The sender
(``supervisor.notify``) claims due rows with a lease: the claim moves
``next_at`` past the lease and counts an attempt, so another instance (or
this one, restarted) takes the row again only once the lease has run out.
Delivery is therefore at least once: a sender that dies after the receiver
answered but before ``delivered`` is written sends the row again, with the
same ``delivery`` id and a higher attempt.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from supervisor.events import job_data
from supervisor.job import Job
from workers.db import Database

MIGRATIONS = [
    (
        1,
        """
        CREATE TABLE outbox (
            id {autoid},
            delivery TEXT NOT NULL,
            job_id TEXT NOT NULL,
            event TEXT NOT NULL,
            url TEXT NOT NULL,
            body TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_at BIGINT NOT NULL,
            give_up_at BIGINT NOT NULL,
            last_status INTEGER,
            last_error TEXT,
            created_at BIGINT NOT NULL,
            ended_at BIGINT
        );
        CREATE INDEX outbox_due ON outbox (next_at) WHERE state = 'pending';
        CREATE INDEX outbox_job ON outbox (job_id, id);
        CREATE INDEX outbox_ended ON outbox (ended_at)
        """,
    ),
]

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
STATES = (PENDING, DELIVERED, FAILED)
# Error texts kept per row, at most.
MAX_ERROR_CHARS = 500


class Notice(msgspec.Struct, frozen=True):
    """What one state write adds to the outbox: ``body`` for each of ``urls``."""

    job_id: str
    event: str
    body: bytes
    urls: tuple[str, ...]
    retry_ms: int  # retries stop this long after the row is written


# What a store write is given to build the notices of the jobs it moves (the
# front's ``Notices.notice_of``): None when a job's state sends none.
NoticeOf = Callable[[Job], Notice | None]


def job_notice(job: Job, event: str, urls: tuple[str, ...], retry_ms: int) -> Notice:
    """``{"event": <event>, "job": <the job as GET /status shows it>}`` for each URL.

    A result over 64 KiB is left out (``"resultOmitted": true``), as in events.
    """
    body = b'{"event":"%s","job":%s}' % (event.encode(), job_data(job, with_result=True))
    return Notice(job.id, event, body, urls, retry_ms)


class Row(msgspec.Struct, frozen=True):
    id: int
    delivery: str
    job_id: str
    event: str
    url: str
    body: str
    state: str
    attempts: int
    next_at: int
    give_up_at: int
    last_status: int | None
    last_error: str | None
    created_at: int
    ended_at: int | None


_COLUMNS = (
    "id, delivery, job_id, event, url, body, state, attempts, next_at, give_up_at,"
    " last_status, last_error, created_at, ended_at"
)


def _row(r: tuple[Any, ...]) -> Row:
    return Row(int(r[0]), *r[1:7], int(r[7]), int(r[8]), int(r[9]), *r[10:12], int(r[12]), r[13])


def enqueue(db: Database, notice: Notice, now_ms: int) -> None:
    """Add one pending row per URL; call it inside the transaction of the state it announces."""
    body = notice.body.decode()
    db.executemany(
        "INSERT INTO outbox (delivery, job_id, event, url, body, state, attempts, next_at,"
        " give_up_at, created_at) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
        [
            (
                uuid.uuid4().hex,
                notice.job_id,
                notice.event,
                url,
                body,
                now_ms,
                now_ms + notice.retry_ms,
                now_ms,
            )
            for url in notice.urls
        ],
    )


def claim(db: Database, now_ms: int, lease_ms: int, limit: int) -> list[Row]:
    """Take up to ``limit`` due rows for one attempt each, leased for ``lease_ms``.

    The claim counts the attempt and moves ``next_at`` to the lease's end,
    in one statement: of two instances, one takes each row (PostgreSQL:
    ``SKIP LOCKED`` lets them pass each other's; SQLite has one writer).
    """
    lock = " FOR UPDATE SKIP LOCKED" if db.dialect == "postgresql" else ""
    with db.transaction():
        rows = db.query(
            "UPDATE outbox SET attempts = attempts + 1, next_at = ? WHERE id IN ("
            " SELECT id FROM outbox WHERE state = 'pending' AND next_at <= ?"
            f" ORDER BY next_at, id LIMIT ?{lock}) RETURNING {_COLUMNS}",
            (now_ms + lease_ms, now_ms, limit),
        )
    return sorted((_row(r) for r in rows), key=lambda r: r.id)


def delivered(db: Database, row_id: int, status: int, now_ms: int) -> bool:
    """Record a delivery; False if the row was no longer pending (recorded by another)."""
    changed = db.execute(
        "UPDATE outbox SET state = 'delivered', last_status = ?, last_error = NULL,"
        " ended_at = ? WHERE id = ? AND state = 'pending'",
        (status, now_ms, row_id),
    )
    return changed == 1


def retry(
    db: Database,
    row_id: int,
    attempt: int,
    status: int | None,
    error: str,
    next_at: int,
    now_ms: int,
) -> str:
    """Record a failed attempt: the row waits until ``next_at``, or fails past its give-up time.

    Only the attempt that holds the row (``attempts`` unchanged since its
    claim) records it: a later claim's outcome wins. Returns the row's state.
    """
    error = error[:MAX_ERROR_CHARS]
    with db.transaction():
        db.execute(
            "UPDATE outbox SET last_status = ?, last_error = ?,"
            " state = CASE WHEN ? >= give_up_at THEN 'failed' ELSE 'pending' END,"
            " ended_at = CASE WHEN ? >= give_up_at THEN ? ELSE NULL END,"
            " next_at = ? WHERE id = ? AND attempts = ? AND state = 'pending'",
            (status, error, next_at, next_at, now_ms, next_at, row_id, attempt),
        )
        row = db.one("SELECT state FROM outbox WHERE id = ?", (row_id,))
    return str(row[0]) if row else FAILED


def next_due(db: Database) -> int | None:
    """When the earliest pending row is due (ms), if any waits."""
    row = db.one("SELECT min(next_at) FROM outbox WHERE state = 'pending'")
    return None if row is None or row[0] is None else int(row[0])


class OutboxFilter(msgspec.Struct, frozen=True):
    state: str | None = None
    job_id: str | None = None
    before: int | None = None
    limit: int = 50


def list_rows(db: Database, f: OutboxFilter) -> list[Row]:
    """Newest first, up to ``f.limit + 1`` rows (the extra one: there is more)."""
    where: list[str] = []
    params: list[Any] = []
    if f.state is not None:
        where.append("state = ?")
        params.append(f.state)
    if f.job_id is not None:
        where.append("job_id = ?")
        params.append(f.job_id)
    if f.before is not None:
        where.append("id < ?")
        params.append(f.before)
    sql = f"SELECT {_COLUMNS} FROM outbox"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    return [_row(r) for r in db.query(sql, (*params, f.limit + 1))]


def prune(db: Database, cutoff_ms: int) -> int:
    """Delete delivered and failed rows that ended before ``cutoff_ms``."""
    return db.execute("DELETE FROM outbox WHERE state <> 'pending' AND ended_at < ?", (cutoff_ms,))
