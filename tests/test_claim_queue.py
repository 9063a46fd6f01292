"""The claim reads only the head of the queue, and the queries run per claim or heartbeat
use an index that skips the pending jobs (a deep backlog must not slow them down)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from supervisor.job import Job, Progress, new_job_id, now
from supervisor.state import JobStatus
from supervisor.store import Store, claims
from supervisor.store import jobs as sql
from workers.db import Database, connect


def _pending(db: Database, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        job = Job(
            id=new_job_id(),
            type="quick",
            status=JobStatus.PENDING,
            config=msgspec.Raw(b'{"type":"quick"}'),
            progress=Progress(),
            created_at=now(),
        )
        sql.insert_job(db, job, None, None, 0, 1000, rank=sql.queue_rank(job, 60_000))
        ids.append(job.id)
    return ids


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'claims.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    store = Store(url)
    store.migrate()
    store.close()
    conn = connect(url)
    yield conn
    conn.close()


def test_a_cancel_request_at_the_head_cancels_instead_of_claiming(db: Database) -> None:
    first, second, third, fourth = _pending(db, 4)
    request = '{"requestedAt": "2026-01-01T00:00:00+00:00", "reason": "user", "requestedBy": null}'
    for job_id in (first, third):
        db.execute("UPDATE jobs SET cancel_request = ? WHERE id = ?", (request, job_id))
    claimed = claims.claim_jobs(db, "me", 2, 1)
    assert [job.id for job, _ in claimed] == [second, fourth]
    rows = dict(db.query("SELECT id, status FROM jobs"))
    assert rows == {first: "cancelled", second: "pending", third: "cancelled", fourth: "pending"}
    assert claims.claim_jobs(db, "me", 2, 2) == []


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    store = Store(f"sqlite:///{tmp_path / 'plans.db'}")
    store.migrate()
    store.close()
    conn = connect(f"sqlite:///{tmp_path / 'plans.db'}")
    yield conn
    conn.close()


# SQLite only: its plans follow from the schema, while PostgreSQL's planner
# chooses by its statistics (the PostgreSQL queries run in the test above).
def test_per_claim_and_heartbeat_queries_skip_the_pending_jobs(sqlite_db: Database) -> None:
    db = sqlite_db
    plans = {
        "orphans": f"SELECT id FROM jobs INDEXED BY jobs_owner_live WHERE status IN {sql.LIVE_SQL}"
        " AND owner IS NOT NULL AND owner NOT IN (SELECT id FROM instances)",
        "strays": f"SELECT id FROM jobs WHERE owner = 'me' AND status IN {sql.LIVE_SQL}"
        " AND status = 'pending' AND updated_at < 1",
        "head": "SELECT id FROM jobs WHERE status = 'pending' AND owner IS NULL"
        " ORDER BY queue_rank, id LIMIT 4",
    }
    for name, query in plans.items():
        plan = " ".join(str(row[-1]) for row in db.query("EXPLAIN QUERY PLAN " + query))
        index = "jobs_claimable" if name == "head" else "jobs_owner_live"
        assert index in plan, (name, plan)
    # The rescue query names the index only while its WHERE is LIVE_SQL: a
    # migration that changes one without the other makes it slow, so it fails here.
    assert claims._owner_index_fits(db)
    # And the functions themselves run on both dialects (the INDEXED BY only on SQLite).
    assert claims.orphaned_jobs(db) == []
    assert claims.give_back_strays(db, "me", frozenset(), 1) == []
