"""The schedules' tables: each schedule with its next tick, and what its recent ticks did.

Firing is one transaction (``fire``): the schedule's ``next_fire_at`` moves
on only if it still holds the tick this instance saw (and the schedule was
not changed meanwhile: ``version``), and the job's row is inserted in the
same transaction. Of several instances that see one tick, exactly one
moves it; a crash before the commit leaves both as they were, and after it
leaves both done.
"""

from __future__ import annotations

from typing import Any

import msgspec

from supervisor.job import Job
from supervisor.store import claims
from supervisor.store import jobs as sql
from supervisor.store.outbox import NoticeOf
from workers.db import Database

MIGRATIONS = [
    (
        1,
        """
        CREATE TABLE schedules (
            name TEXT PRIMARY KEY,
            cron TEXT NOT NULL,
            timezone TEXT NOT NULL,
            job TEXT NOT NULL,
            enabled BOOLEAN NOT NULL,
            catch_up TEXT NOT NULL,
            next_fire_at BIGINT NOT NULL,
            version INTEGER NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL
        );
        CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE enabled;
        CREATE TABLE schedule_ticks (
            id {autoid},
            schedule TEXT NOT NULL,
            tick_at BIGINT NOT NULL,
            at BIGINT NOT NULL,
            job_id TEXT,
            skipped TEXT
        );
        CREATE INDEX schedule_ticks_recent ON schedule_ticks (schedule, id)
        """,
    ),
]
# schedule_ticks keeps the last KEPT_TICKS ticks of each schedule: the job a
# tick started (job_id) or why it started none (skipped).
KEPT_TICKS = 50

COLUMNS = (
    "name, cron, timezone, job, enabled, catch_up, next_fire_at, version, created_at, updated_at"
)


class Row(msgspec.Struct, frozen=True):
    name: str
    cron: str
    timezone: str
    job: str  # the start request's JSON, as validated at the PUT
    enabled: bool
    catch_up: str
    next_fire_at: int
    version: int
    created_at: int
    updated_at: int


class TickRow(msgspec.Struct, frozen=True):
    tick_at: int
    at: int
    job_id: str | None
    skipped: str | None
    job_status: str | None


def _row(values: tuple[Any, ...]) -> Row:
    name, cron, tz, job, enabled, catch_up, next_at, version, created, updated = values
    return Row(name, cron, tz, job, bool(enabled), catch_up, next_at, version, created, updated)


def put(
    db: Database,
    name: str,
    cron: str,
    timezone: str,
    job: str,
    enabled: bool,
    catch_up: str,
    next_fire_at: int,
    now_ms: int,
) -> tuple[Row, bool]:
    """Create or replace the schedule; returns it and whether it is new.

    A replaced schedule gets a new ``version`` (a tick read before the change
    does not fire) and its next tick from its new expression.
    """
    with db.transaction():
        old = db.one("SELECT version, created_at FROM schedules WHERE name = ?", (name,))
        if old is None:
            db.execute(
                f"INSERT INTO schedules ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
                (name, cron, timezone, job, enabled, catch_up, next_fire_at, now_ms, now_ms),
            )
        else:
            db.execute(
                "UPDATE schedules SET cron = ?, timezone = ?, job = ?, enabled = ?,"
                " catch_up = ?, next_fire_at = ?, version = version + 1, updated_at = ?"
                " WHERE name = ?",
                (cron, timezone, job, enabled, catch_up, next_fire_at, now_ms, name),
            )
        row = db.one(f"SELECT {COLUMNS} FROM schedules WHERE name = ?", (name,))
    assert row is not None
    return _row(row), old is None


def get(db: Database, name: str) -> Row | None:
    row = db.one(f"SELECT {COLUMNS} FROM schedules WHERE name = ?", (name,))
    return None if row is None else _row(row)


def list_page(db: Database, after: str | None, limit: int) -> list[Row]:
    """By name, up to ``limit + 1`` (the extra one: there is more), after the cursor ``after``."""
    where, params = ("WHERE name > ?", (after,)) if after is not None else ("", ())
    rows = db.query(
        f"SELECT {COLUMNS} FROM schedules {where} ORDER BY name LIMIT ?", (*params, limit + 1)
    )
    return [_row(r) for r in rows]


def delete(db: Database, name: str) -> bool:
    with db.transaction():
        deleted = db.execute("DELETE FROM schedules WHERE name = ?", (name,))
        db.execute("DELETE FROM schedule_ticks WHERE schedule = ?", (name,))
    return deleted == 1


def due(db: Database, now_ms: int, limit: int) -> tuple[list[Row], int | None]:
    """The enabled schedules due at ``now_ms`` (earliest first), and the earliest tick after."""
    rows = db.query(
        f"SELECT {COLUMNS} FROM schedules WHERE enabled AND next_fire_at <= ?"
        " ORDER BY next_fire_at LIMIT ?",
        (now_ms, limit),
    )
    later = db.one(
        "SELECT min(next_fire_at) FROM schedules WHERE enabled AND next_fire_at > ?", (now_ms,)
    )
    return [_row(r) for r in rows], None if later is None else later[0]


def ticks(db: Database, name: str, limit: int) -> list[TickRow]:
    """The schedule's latest ticks, newest first, with the status of the job each started."""
    rows = db.query(
        "SELECT t.tick_at, t.at, t.job_id, t.skipped, j.status FROM schedule_ticks t"
        " LEFT JOIN jobs j ON j.id = t.job_id WHERE t.schedule = ? ORDER BY t.id DESC LIMIT ?",
        (name, limit),
    )
    return [TickRow(*r) for r in rows]


def _record(
    db: Database, name: str, tick_at: int, now_ms: int, job_id: str | None, skipped: str | None
) -> None:
    db.execute(
        "INSERT INTO schedule_ticks (schedule, tick_at, at, job_id, skipped)"
        " VALUES (?, ?, ?, ?, ?)",
        (name, tick_at, now_ms, job_id, skipped),
    )
    db.execute(
        "DELETE FROM schedule_ticks WHERE schedule = ? AND id <= (SELECT id FROM schedule_ticks"
        " WHERE schedule = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
        (name, name, KEPT_TICKS),
    )


class Fired(msgspec.Struct, frozen=True):
    """What ``fire`` did: ``mine`` is False when another instance (or a change) had the tick."""

    mine: bool
    job_id: str | None = None
    skipped: str | None = None


def fire(
    db: Database,
    schedule: Row,
    next_fire_at: int,
    job: Job | None,
    key: str | None,
    label: str | None,
    skipped: str | None,
    now_ms: int,
    max_pending: int,
    rank: int | None = None,
    idempotency_ttl_ms: int = 0,
    notice_of: NoticeOf | None = None,
) -> Fired:
    """Move the schedule past its tick and insert its job, in one transaction, or do neither.

    ``job`` None (with ``skipped``, the reason) only moves the tick on and
    records the skip. A job whose exclusive key a live job holds, or a full
    queue, is a skip too: recorded, the tick moved on, nothing piled up.
    ``notice_of``: the insert's notifications (a job awaiting approval).
    """
    with db.transaction():
        if job is not None and sql.job_exists(db, job.id):
            return Fired(True, job_id=job.id)  # a retry of a commit whose answer was lost
        moved = db.execute(
            "UPDATE schedules SET next_fire_at = ? WHERE name = ? AND next_fire_at = ?"
            " AND version = ? AND enabled",
            (next_fire_at, schedule.name, schedule.next_fire_at, schedule.version),
        )
        if moved != 1:
            return Fired(False)
        if job is not None:
            skipped = _insert(
                db, job, key, label, now_ms, max_pending, rank, idempotency_ttl_ms, notice_of
            )
        job_id = None if skipped is not None or job is None else job.id
        _record(db, schedule.name, schedule.next_fire_at, now_ms, job_id, skipped)
    return Fired(True, job_id=job_id, skipped=skipped)


def _insert(
    db: Database,
    job: Job,
    key: str | None,
    label: str | None,
    now_ms: int,
    max_pending: int,
    rank: int | None = None,
    idempotency_ttl_ms: int = 0,
    notice_of: NoticeOf | None = None,
) -> str | None:
    """Insert the job unclaimed (any instance's claim starts it); the reason if it cannot be."""
    # insert_job's transaction nests as a savepoint: a refusal, or a rival's
    # insert of the same key (PostgreSQL's unique index), undoes the insert
    # alone, and the tick is still moved and the skip recorded.
    try:
        # Positional: unclaimed (claim_for None), its rank, the key's lifetime, no audit entry.
        sql.insert_job(
            db,
            job,
            key,
            label,
            now_ms,
            max_pending,
            None,
            rank,
            idempotency_ttl_ms,
            None,
            notice_of,
        )
    except sql.IdempotentReplay as exc:
        return f"job {exc.job_id} already holds its idempotencyKey"
    except sql.KeyTaken as exc:
        holder = f"job {exc.holder}" if exc.holder else "another job"
        return f"{holder} still holds {exc.key}"
    except sql.QueueFull:
        return "too many pending jobs"
    except sql.UnknownParent as exc:
        return f"the job it runs after, {exc.args[0]}, is gone"
    except Exception as exc:
        if not _unique_violation(exc):
            raise
        if job.idempotency_key is not None:
            holder = sql.holder_of_idempotency_key(db, job.idempotency_key)
            if holder is not None:
                return f"job {holder} already holds its idempotencyKey"
        return f"another job still holds {key}"
    claims.notify_pending(db)  # PostgreSQL: the other instances hear of it at the commit
    return None


def _unique_violation(exc: BaseException) -> bool:
    from supervisor.store import is_unique_violation  # the package imports this module

    return is_unique_violation(exc)
