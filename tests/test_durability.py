"""Nothing lost: crashes, restarts, shutdowns and an unavailable database (SQLite)."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
from datetime import datetime
from typing import Any

import httpx
import pytest

from supervisor.store.jobs import to_ms
from tests.conftest import Server, wait_until
from tests.helpers import alive, group_body, removal
from workers.db import sqlite_path


def stored(url: str, job_id: str) -> dict[str, Any]:
    """The job's row as the database has it (not the server's memory)."""
    with sqlite3.connect(sqlite_path(url)) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert row is not None, f"job {job_id} is not in the database"
    return dict(row)


def test_sigkill_then_restart(make_server: Any, sqlite_url: str) -> None:
    server = make_server(JOBSUP_MAX_CONCURRENT_JOBS="2")
    server.client.put("/admin/groups/g1", json=group_body(inactive=3))
    idempotent = server.start_job(removal("g1", batchSize=1, delayMs=60_000))
    plain = server.start_job({"type": "sleepy", "steps": 2, "stepMs": 60_000})
    waiting = server.start_job({"type": "quick", "value": 1})
    pids = [server.wait_status(j, "running")["pid"] for j in (idempotent, plain)]
    wait_until(lambda: stored(sqlite_url, plain)["result"] is not None)
    wait_until(lambda: "in-000" in (stored(sqlite_url, idempotent)["result"] or ""))

    server.kill()  # SIGKILL: no shutdown code runs
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout=2.5)

    server.start()
    failed = server.status(plain)
    assert failed["status"] == "failed"
    assert failed["error"]["reason"] == "interrupted"
    assert failed["result"] == {"steps": 0}  # what it had done is kept
    again = server.wait_status(idempotent, "running")  # removal jobs are re-queued
    assert again["attempts"] == 2
    assert server.wait_status(waiting, "completed")["result"] == {"value": 1}
    removed = [r["whatsappId"] for r in server.client.get("/admin/groups/g1/removals").json()]
    assert "in-000" in removed
    assert len(removed) == len(set(removed))  # nobody removed twice
    server.client.post(f"/admin/jobs/{idempotent}/cancel")


def _sigterm_with_running_and_pending(make_server: Any, sqlite_url: str, group: bool) -> None:
    server = make_server(JOBSUP_MAX_CONCURRENT_JOBS="1")
    running = server.start_job({"type": "sleepy", "steps": 3, "stepMs": 60_000})
    pending = server.start_job({"type": "quick", "value": 2})
    pid = server.wait_status(running, "running")["pid"]
    assert server.process is not None
    if group:  # what Heroku does: the whole group, twice
        os.killpg(server.process.pid, signal.SIGTERM)
        os.killpg(server.process.pid, signal.SIGTERM)
    else:
        server.signal(signal.SIGTERM)
    assert server.process.wait(30) == 0
    assert not alive(pid)
    row = stored(sqlite_url, running)
    assert row["status"] == "cancelled"
    assert '"reason":"shutdown"' in row["cancel"]
    assert '"mode":"cooperative"' in row["cancel"]
    assert row["result"] == '{"steps":0}'
    assert stored(sqlite_url, pending)["status"] == "pending"
    server.start()
    assert server.wait_status(pending, "completed")["result"] == {"value": 2}


def test_sigterm_cancels_running_and_keeps_pending(make_server: Any, sqlite_url: str) -> None:
    _sigterm_with_running_and_pending(make_server, sqlite_url, group=False)


def test_sigterm_to_the_process_group_twice(make_server: Any, sqlite_url: str) -> None:
    _sigterm_with_running_and_pending(make_server, sqlite_url, group=True)


def test_chaos_sigkill_right_after_accepting(make_server: Any, sqlite_url: str) -> None:
    rng = random.Random(20261129)
    server = make_server()
    accepted: list[str] = []
    for _ in range(30):  # each round is a kill and a cold start (about 1.5 s)
        body = rng.choice([{"type": "quick"}, {"type": "sleepy", "steps": 2, "stepMs": 80}])
        job_id = server.start_job(body)
        accepted.append(job_id)
        if rng.random() < 0.5:  # the chaos: at once after the 202, or once its child has it
            wait_until(lambda j=job_id: server.status(j)["status"] != "pending", timeout=10)
        server.kill()
        server.start()
        instance = server.client.get("/healthz").json()["instance"]
        for job_id in accepted:
            row = stored(sqlite_url, job_id)
            live_here = row["status"] in ("running", "cancelling") and row["owner"] == instance
            assert row["status"] in ("pending", "completed", "cancelled", "failed") or live_here
    for job_id in accepted:
        assert server.wait_status(job_id, "completed", "failed")


def test_locked_database_is_reported_and_the_write_lands(server: Server, sqlite_url: str) -> None:
    job_id = server.start_job({"type": "sleepy", "steps": 1, "stepMs": 300})
    server.wait_status(job_id, "running")
    locker = sqlite3.connect(sqlite_path(sqlite_url), isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        wait_until(lambda: server.client.get("/readyz").status_code == 503, timeout=15)
        assert server.client.get("/readyz").json()["error"]["code"] == "database_unavailable"
        assert server.status(job_id)["status"] == "completed"  # from memory, meanwhile
        assert server.client.get("/admin/jobs").status_code == 200  # reads still work
        assert server.client.get("/readyz").status_code == 503  # and do not hide the outage
        refused = server.client.post("/admin/jobs/start", json={"type": "quick"})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "database_unavailable"
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    wait_until(lambda: server.client.get("/readyz").status_code == 200, timeout=15)
    wait_until(lambda: stored(sqlite_url, job_id)["status"] == "completed", timeout=15)
    assert [j["id"] for j in server.client.get("/admin/jobs").json()] == [job_id]


def test_shutdown_keeps_its_deadline_while_the_database_is_locked(
    make_server: Any, sqlite_url: str
) -> None:
    server = make_server(JOBSUP_SHUTDOWN_GRACE_S="1")
    job_id = server.start_job({"type": "sleepy", "steps": 3, "stepMs": 60_000})
    # 'running' is in the store, not only in memory, before the lock is taken.
    wait_until(lambda: stored(sqlite_url, job_id)["status"] == "running", timeout=10)
    locker = sqlite3.connect(sqlite_path(sqlite_url), isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        assert server.process is not None
        server.signal(signal.SIGTERM)
        assert server.process.wait(20) == 0  # not held until the lock goes
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert stored(sqlite_url, job_id)["status"] == "running"  # its end was not saved...
    server.start()
    assert server.status(job_id)["status"] == "failed"  # ...so the next start rescues it


@pytest.mark.postgres  # on SQLite, the second server is refused for the file already
def test_two_live_processes_cannot_share_an_instance_id(pg_url: str, make_server: Any) -> None:
    make_server(DATABASE_URL=pg_url, JOBSUP_INSTANCE_ID="web.1")
    second = make_server(start=False, DATABASE_URL=pg_url, JOBSUP_INSTANCE_ID="web.1")
    with pytest.raises(RuntimeError, match="in use by a live instance"):
        second.start()


def test_cancel_racing_completion(make_server: Any) -> None:
    rng = random.Random(7)
    server = make_server(JOBSUP_MAX_CONCURRENT_JOBS="4")
    finals: dict[str, str] = {}
    for _ in range(200):
        job_id = server.start_job({"type": "sleepy", "steps": 1, "stepMs": rng.randint(0, 15)})
        if rng.random() < 0.5:  # cancel at once, or once the job runs (or has already ended)
            wait_until(lambda j=job_id: server.status(j)["status"] != "pending", timeout=10)
        response = server.client.post(f"/admin/jobs/{job_id}/cancel")
        assert response.status_code in (200, 202, 400), response.text
        finals[job_id] = server.wait_status(job_id, "completed", "cancelled")["status"]
    assert set(finals.values()) <= {"completed", "cancelled"}
    for job_id, status in finals.items():  # and it never changes afterwards
        assert server.status(job_id)["status"] == status


def _ms(iso: str) -> int | None:
    return to_ms(datetime.fromisoformat(iso.replace("Z", "+00:00")))  # as the store keeps it


def test_list_pages_and_filters(server: Server) -> None:
    server.client.put("/admin/groups/g1", json=group_body(inactive=1))
    removal_id = server.start_job(removal("g1", dryRun=True))
    ids = [server.start_job({"type": "quick", "value": i}) for i in range(5)]
    for job_id in [removal_id, *ids]:
        server.wait_status(job_id, "completed")
    first = server.client.get("/admin/jobs?limit=2")
    assert [j["id"] for j in first.json()] == [ids[4], ids[3]]
    second = server.client.get(f"/admin/jobs?limit=2&before={first.headers['x-next-before']}")
    assert [j["id"] for j in second.json()] == [ids[2], ids[1]]
    by_group = server.client.get("/admin/jobs?groupWaId=g1").json()
    assert [j["id"] for j in by_group] == [removal_id]
    # Jobs submitted back to back can share a millisecond, and the time
    # filters compare milliseconds (what the store keeps): the expected
    # windows come from the stored times, not from the submission order.
    created_ms = {i: _ms(server.status(i)["createdAt"]) for i in [removal_id, *ids]}
    created = server.status(ids[2])["createdAt"]
    newest_first = [removal_id, *ids][::-1]
    window = httpx.QueryParams({"createdAfter": created})
    after = [j["id"] for j in server.client.get(f"/admin/jobs?{window}").json()]
    assert after == [i for i in newest_first if created_ms[i] >= created_ms[ids[2]]]
    assert ids[2] in after
    window = httpx.QueryParams({"createdBefore": created})
    before = [j["id"] for j in server.client.get(f"/admin/jobs?{window}").json()]
    assert before == [i for i in newest_first if created_ms[i] < created_ms[ids[2]]]
    assert ids[2] not in before


def test_shutdown_escalates_on_a_job_that_ignores_cancel(make_server: Any, sqlite_url: str) -> None:
    server = make_server(
        JOBSUP_SHUTDOWN_GRACE_S="1", JOBSUP_CANCEL_GRACE_S="30", JOBSUP_KILL_AFTER_S="30"
    )
    job_id = server.start_job({"type": "stubborn", "ignoreTerm": True})
    pid = server.wait_status(job_id, "running")["pid"]
    assert server.process is not None
    server.signal(signal.SIGTERM)
    assert server.process.wait(30) == 0
    assert not alive(pid)
    row = stored(sqlite_url, job_id)
    assert row["status"] == "cancelled"
    assert '"mode":"killed"' in row["cancel"]


def test_finished_jobs_are_pruned_after_the_retention(make_server: Any) -> None:
    server = make_server(
        JOBSUP_RETENTION_DAYS="0.00001", JOBSUP_JOB_TTL_S="0.1", JOBSUP_CLEANUP_INTERVAL_S="0.2"
    )
    job_id = server.start_job({"type": "quick"})
    server.wait_status(job_id, "completed")
    wait_until(lambda: server.client.get(f"/admin/jobs/{job_id}/status").status_code == 404)


def test_orphaned_job_takes_its_grandchildren_down(make_server: Any) -> None:
    server = make_server()
    job_id = server.start_job({"type": "stubborn", "spawnChild": True})
    grandchild = wait_until(lambda: server.status(job_id)["result"])["grandchildPid"]
    pid = server.status(job_id)["pid"]
    server.kill()
    wait_until(lambda: not alive(pid) and not alive(grandchild), timeout=2.5)


def test_a_fixed_instance_id_survives_a_crash(make_server: Any) -> None:
    server = make_server(JOBSUP_INSTANCE_ID="web.1")
    job_id = server.start_job({"type": "sleepy", "steps": 2, "stepMs": 60_000})
    server.wait_status(job_id, "running")
    server.kill()
    server.start()
    assert server.status(job_id)["status"] == "failed"


def test_a_claim_never_adopted_goes_back_to_the_queue(make_server: Any, sqlite_url: str) -> None:
    # As if a claim were retried after its first commit landed: the first
    # claim's job is stored as this instance's, but it never heard of it.
    server = make_server(JOBSUP_MAX_CONCURRENT_JOBS="1", JOBSUP_HEARTBEAT_S="0.2")
    instance = server.client.get("/healthz").json()["instance"]
    busy = server.start_job({"type": "sleepy", "steps": 1, "stepMs": 60_000})
    server.wait_status(busy, "running")
    stray = server.start_job({"type": "quick", "value": 5})
    with sqlite3.connect(sqlite_path(sqlite_url)) as conn:
        conn.execute(
            "UPDATE jobs SET owner = ?, attempts = 1, updated_at = 0 WHERE id = ?",
            (instance, stray),
        )
    wait_until(lambda: "gave back 1 claimed jobs this instance never started" in server.log())
    server.client.post(f"/admin/jobs/{busy}/cancel")
    done = server.wait_status(stray, "completed")
    assert (done["owner"], done["attempts"], done["result"]) == (instance, 1, {"value": 5})
