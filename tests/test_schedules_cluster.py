"""A schedule on three PostgreSQL instances: each tick starts exactly one job.

Ticks are brought forward in the database (``next_fire_at`` set to now);
every instance looks every 0.2 s and all race for each tick. One instance is
SIGKILLed right as a tick comes due, a fresh one started a few ticks later,
and another stopped with SIGTERM as a later tick comes due: still one job
per tick, and every job reaches one final state.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import psycopg
import pytest

from tests.conftest import Server, wait_until
from workers.times import now_ms

pytestmark = pytest.mark.postgres

CLUSTER = {
    "JOBSUP_HEARTBEAT_S": "0.3",
    "JOBSUP_NODE_TIMEOUT_S": "2",
    "JOBSUP_POLL_S": "0.2",
}
TICKS = 10
FINAL = ("completed", "failed", "cancelled")


def _ticks(pg_url: str) -> list[tuple[int, str | None, str | None]]:
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT tick_at, job_id, skipped FROM schedule_ticks ORDER BY id"
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def _fire_at(pg_url: str, at: int) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE schedules SET next_fire_at = %s WHERE name = 'tick'", (at,))


def test_ten_ticks_on_three_instances_with_a_kill_a_start_and_a_stop_make_exactly_ten_jobs(
    pg_url: str, make_server: Any
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE executions (job_id TEXT, pid INTEGER)")
    servers: list[Server] = [make_server(DATABASE_URL=pg_url, **CLUSTER) for _ in range(3)]
    body = {"cron": "* * * * *", "timezone": "UTC", "job": {"type": "record"}}
    # The real minute ticks are moved an hour away; only the ticks set below fire.
    assert servers[0].client.put("/admin/schedules/tick", json=body).status_code == 201
    _fire_at(pg_url, now_ms() + 3600_000)
    fired: list[int] = []
    for i in range(TICKS):
        at = now_ms()
        fired.append(at)
        _fire_at(pg_url, at)
        if i == 3:
            servers[0].kill()  # around the tick: before, during or after its transaction
        if i == 6:
            servers[0] = make_server(DATABASE_URL=pg_url, **CLUSTER)
        if i == 8:
            assert servers[2].stop() == 0  # a graceful stop (SIGTERM) as the tick comes due
        wait_until(lambda n=i + 1: len(_ticks(pg_url)) >= n, timeout=15)
    ticks = _ticks(pg_url)
    assert [t[0] for t in ticks] == fired  # each tick once, in order
    assert [t[2] for t in ticks] == [None] * TICKS  # none skipped
    job_ids = [t[1] for t in ticks]
    assert len(set(job_ids)) == TICKS

    live = servers[1]
    for job_id in job_ids:
        live.wait_status(job_id, *FINAL, timeout=30)
    with psycopg.connect(pg_url) as conn:
        stored = conn.execute("SELECT id, status FROM jobs").fetchall()
        runs = Counter(r[0] for r in conn.execute("SELECT job_id FROM executions").fetchall())
    assert sorted(r[0] for r in stored) == sorted(job_ids)  # exactly ten jobs, no more
    assert all(status in FINAL for _, status in stored)
    # A job runs at most once (a job the killed instance was running fails, not reruns).
    assert all(count == 1 for count in runs.values()), runs
