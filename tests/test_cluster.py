"""Several instances on one PostgreSQL database."""

from __future__ import annotations

import os
import signal
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from tests.conftest import Server, wait_until
from tests.helpers import group_body, removal

pytestmark = pytest.mark.postgres

CLUSTER = {
    "JOBSUP_HEARTBEAT_S": "0.3",
    "JOBSUP_NODE_TIMEOUT_S": "2",
    "JOBSUP_POLL_S": "1",
}


@pytest.fixture
def cluster(pg_url: str, make_server: Any) -> Any:
    # pg_url first: the database must outlive the servers using it.
    def start(count: int, **env: str) -> list[Server]:
        return [make_server(DATABASE_URL=pg_url, **{**CLUSTER, **env}) for _ in range(count)]

    return start


def _instance(server: Server) -> str:
    return str(server.client.get("/healthz").json()["instance"])


def test_any_instance_serves_any_job_and_cancels_across(cluster: Any) -> None:
    a, b = cluster(2)
    job_id = a.start_job({"type": "sleepy", "steps": 3, "stepMs": 60_000})
    job = a.wait_status(job_id, "running")
    owner, other = (a, b) if job["owner"] == _instance(a) else (b, a)
    # The other instance reads the store, which the owner writes a moment later.
    other.wait_status(job_id, "running")
    assert [j["id"] for j in other.client.get("/admin/jobs").json()] == [job_id]
    sent = datetime.now(UTC)
    response = other.client.post(f"/admin/jobs/{job_id}/cancel")
    assert response.json() == {"jobId": job_id, "status": "cancelled"}, owner.log()
    cancelled = owner.status(job_id)
    assert cancelled["cancel"]["mode"] == "cooperative"
    # The owner heard of it (NOTIFY) and the child stopped well within 1 s.
    reached = datetime.fromisoformat(cancelled["cancel"]["requestedAt"])
    exited = datetime.fromisoformat(cancelled["cancel"]["exitedAt"])
    assert (reached - sent).total_seconds() < 1.0, cancelled
    assert (exited - sent).total_seconds() < 1.0, cancelled


def test_group_lock_holds_across_instances(cluster: Any) -> None:
    a, b = cluster(2)
    a.client.put("/admin/groups/g1", json=group_body(inactive=2))
    first = a.start_job(removal("g1", batchSize=1, delayMs=60_000))
    response = b.client.post("/admin/jobs/start", json=removal("g1"))
    assert response.status_code == 409
    assert first in response.json()["error"]["message"]
    b.client.post(f"/admin/jobs/{first}/cancel")


def test_claim_race_runs_each_job_exactly_once(cluster: Any, pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE executions (job_id TEXT, pid INTEGER)")
    servers = cluster(3, JOBSUP_MAX_CONCURRENT_JOBS="1")
    ids = [servers[i % 3].start_job({"type": "record"}) for i in range(50)]
    finished = [servers[0].wait_status(job_id, "completed", timeout=60) for job_id in ids]
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT job_id FROM executions").fetchall()
    runs = Counter(r[0] for r in rows)
    assert runs == Counter(ids)  # every job once, none twice
    assert len({job["owner"] for job in finished}) >= 2  # and the work was shared


def test_killed_instance_jobs_are_rescued(pg_url: str, make_server: Any) -> None:
    a = make_server(DATABASE_URL=pg_url, **CLUSTER)
    a.client.put("/admin/groups/g1", json=group_body(inactive=3))
    plain = a.start_job({"type": "sleepy", "steps": 2, "stepMs": 60_000})
    idempotent = a.start_job(removal("g1", batchSize=1, delayMs=60_000))
    a.wait_status(plain, "running")
    a.wait_status(idempotent, "running")
    b = make_server(DATABASE_URL=pg_url, **CLUSTER)
    a.kill()
    failed = b.wait_status(plain, "failed", timeout=10)
    assert failed["error"]["reason"] == "interrupted"
    b_id = _instance(b)

    def running_on_b() -> dict[str, Any] | None:
        job = b.status(idempotent)
        return job if job["status"] == "running" and job["owner"] == b_id else None

    again = wait_until(running_on_b, timeout=10)
    assert again["attempts"] == 2
    b.client.post(f"/admin/jobs/{idempotent}/cancel")


def test_silent_instance_is_declared_dead_after_the_timeout(pg_url: str, make_server: Any) -> None:
    a = make_server(DATABASE_URL=pg_url, **CLUSTER)
    job_id = a.start_job({"type": "sleepy", "steps": 2, "stepMs": 60_000})
    a.wait_status(job_id, "running")
    b = make_server(DATABASE_URL=pg_url, **CLUSTER)
    assert a.process is not None
    os.kill(a.process.pid, signal.SIGSTOP)  # alive, but no more heartbeats
    try:
        failed = b.wait_status(job_id, "failed", timeout=15)
        assert failed["error"]["reason"] == "interrupted"
    finally:
        a.kill()


def test_backend_terminated_during_a_state_write(server_pg: Server, pg_url: str) -> None:
    job_id = server_pg.start_job({"type": "sleepy", "steps": 1, "stepMs": 300})
    server_pg.wait_status(job_id, "running")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert killed is not None
    assert killed[0] > 0
    server_pg.wait_status(job_id, "completed")

    def stored_completed() -> bool:
        with psycopg.connect(pg_url) as conn:
            row = conn.execute("SELECT status FROM jobs WHERE id = %s", (job_id,)).fetchone()
        return row is not None and row[0] == "completed"

    wait_until(stored_completed, timeout=15)
    assert server_pg.client.get("/readyz").status_code == 200
    assert server_pg.wait_status(server_pg.start_job({"type": "quick"}), "completed")


@pytest.fixture
def server_pg(pg_url: str, make_server: Any) -> Server:
    return make_server(DATABASE_URL=pg_url, **CLUSTER)
