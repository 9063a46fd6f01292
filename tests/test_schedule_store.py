"""The schedules' store in process, on SQLite and PostgreSQL: one tick, one move, one job."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from supervisor.job import Job, Progress, new_job_id, now
from supervisor.state import JobStatus
from supervisor.store import Store
from supervisor.store import jobs as job_sql
from supervisor.store import schedules as sql
from workers.db import Database, connect

T0 = 1_800_000_000_000
MINUTE = 60_000


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[Database]:
    url = sqlite_url if request.param == "sqlite" else request.getfixturevalue("pg_url")
    Store(url).migrate()
    database = connect(url)
    yield database
    database.close()


def _job(key: str | None = None) -> tuple[Job, str | None]:
    job = Job(
        id=new_job_id(),
        type="sleepy",
        status=JobStatus.PENDING,
        config=msgspec.Raw(b'{"type":"sleepy"}'),
        progress=Progress(),
        created_at=now(),
    )
    return job, key


def _put(db: Database, name: str = "s", next_at: int = T0) -> sql.Row:
    row, _ = sql.put(db, name, "* * * * *", "UTC", '{"type":"sleepy"}', True, "one", next_at, T0)
    return row


def _fire(db: Database, row: sql.Row, key: str | None = None, **kw: Any) -> sql.Fired:
    job, key = _job(key)
    return sql.fire(db, row, row.next_fire_at + MINUTE, job, key, None, None, T0, 100, **kw)


def _count(db: Database, table: str) -> int:
    (n,) = db.one(f"SELECT count(*) FROM {table}") or (0,)
    return int(n)


def test_a_tick_moves_once_and_starts_one_job(db: Database) -> None:
    row = _put(db)
    first = _fire(db, row)
    assert first.mine
    assert first.job_id is not None
    # Another instance that read the same tick finds it moved: nothing more.
    assert _fire(db, row) == sql.Fired(False)
    assert _count(db, "jobs") == 1
    stored = sql.get(db, "s")
    assert stored is not None
    assert stored.next_fire_at == T0 + MINUTE
    (tick,) = sql.ticks(db, "s", 10)
    assert (tick.tick_at, tick.job_id, tick.skipped, tick.job_status) == (
        T0,
        first.job_id,
        None,
        "pending",
    )


def test_a_retry_after_a_lost_answer_finds_its_job(db: Database) -> None:
    row = _put(db)
    job, _ = _job()
    args = (row, T0 + MINUTE, job, None, None, None, T0, 100)
    assert sql.fire(db, *args) == sql.Fired(True, job_id=job.id)
    assert sql.fire(db, *args) == sql.Fired(True, job_id=job.id)
    assert _count(db, "jobs") == 1
    assert _count(db, "schedule_ticks") == 1


def test_a_tick_read_before_a_change_does_not_fire(db: Database) -> None:
    row = _put(db)
    _put(db)  # replaced with the same next tick: a new version
    assert _fire(db, row) == sql.Fired(False)
    assert _count(db, "jobs") == 0


def test_a_held_key_is_a_skip_and_the_tick_still_moves(db: Database) -> None:
    holder, key = _job("k1")
    job_sql.insert_job(db, holder, key, None, T0, 100)
    row = _put(db)
    fired = _fire(db, row, key="k1")
    assert fired.mine
    assert fired.job_id is None
    assert fired.skipped == f"job {holder.id} still holds k1"
    assert _count(db, "jobs") == 1  # the holder only
    stored = sql.get(db, "s")
    assert stored is not None
    assert stored.next_fire_at == T0 + MINUTE
    (tick,) = sql.ticks(db, "s", 10)
    assert (tick.job_id, tick.skipped) == (None, fired.skipped)


def test_a_full_queue_is_a_skip(db: Database) -> None:
    row = _put(db)
    job, _ = _job()
    fired = sql.fire(db, row, T0 + MINUTE, job, None, None, None, T0, 0)
    assert (fired.mine, fired.job_id, fired.skipped) == (True, None, "too many pending jobs")
    assert _count(db, "jobs") == 0


def test_a_disabled_schedule_is_neither_due_nor_fired(db: Database) -> None:
    row = _put(db)
    sql.put(db, "s", "* * * * *", "UTC", "{}", False, "one", T0, T0)
    assert sql.due(db, T0 + 1, 10) == ([], None)
    assert not _fire(db, sql.get(db, "s") or row).mine


def test_due_lists_the_due_and_the_next_tick_after(db: Database) -> None:
    _put(db, "a", T0)
    _put(db, "b", T0 + 5 * MINUTE)
    rows, later = sql.due(db, T0, 10)
    assert [r.name for r in rows] == ["a"]
    assert later == T0 + 5 * MINUTE


def test_only_the_latest_ticks_are_kept(db: Database) -> None:
    _put(db)
    for _ in range(sql.KEPT_TICKS + 5):
        row = sql.get(db, "s")
        assert row is not None
        sql.fire(db, row, row.next_fire_at + MINUTE, None, None, None, "missed", T0, 100)
    assert _count(db, "schedule_ticks") == sql.KEPT_TICKS
    newest = sql.ticks(db, "s", 1)[0]
    assert newest.tick_at == T0 + (sql.KEPT_TICKS + 4) * MINUTE


def test_delete_removes_the_schedule_and_its_ticks_not_its_jobs(db: Database) -> None:
    _fire(db, _put(db))
    assert sql.delete(db, "s")
    assert not sql.delete(db, "s")
    assert (_count(db, "schedules"), _count(db, "schedule_ticks"), _count(db, "jobs")) == (0, 0, 1)


def test_a_rival_insert_of_the_key_is_a_skip_and_the_transaction_goes_on(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The key check passed, then another instance's insert took the key: the
    # unique index refuses ours, and only our insert is undone.
    holder, key = _job("k1")
    job_sql.insert_job(db, holder, key, None, T0, 100)

    def unchecked(db: Database, job: Job, key: str | None, label: str | None, *rest: Any) -> bool:
        with db.transaction():
            job_sql._insert(db, job, key, label, T0)
        return False

    monkeypatch.setattr(job_sql, "insert_job", unchecked)
    fired = _fire(db, _put(db), key="k1")
    assert (fired.mine, fired.job_id, fired.skipped) == (True, None, "another job still holds k1")
    stored = sql.get(db, "s")
    assert stored is not None
    assert stored.next_fire_at == T0 + MINUTE
    assert _count(db, "jobs") == 1
    assert len(sql.ticks(db, "s", 10)) == 1
