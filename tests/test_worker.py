"""Web and worker process types: a web instance that runs nothing, workers that run the jobs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import FAST, ROOT, Server, wait_until

WORKER = [sys.executable, "-m", "supervisor", "worker"]
CLUSTER = {
    "JOBSUP_HEARTBEAT_S": "0.3",
    "JOBSUP_NODE_TIMEOUT_S": "2",
    "JOBSUP_POLL_S": "1",
    "JOBSUP_EVENTS_FOLLOW_S": "0.2",
}


@pytest.fixture
def web(pg_url: str, make_server: Any) -> Server:
    # pg_url first: the database must outlive the servers using it.
    return make_server(DATABASE_URL=pg_url, JOBSUP_MAX_CONCURRENT_JOBS="0", **CLUSTER)


@pytest.fixture
def worker(pg_url: str, make_server: Any) -> Any:
    def start(**env: str) -> Server:
        return make_server(command=WORKER, DATABASE_URL=pg_url, **{**CLUSTER, **env})

    return start


def _instance(server: Server) -> str:
    return str(server.client.get("/healthz").json()["instance"])


def _children(pid: int) -> list[str]:
    """The command lines of a process's children."""
    lines = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            lines.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return lines


def _running_on(server: Server, job_id: str, instance: str) -> Any:
    def check() -> dict[str, Any] | None:
        job = server.status(job_id)
        return job if job["status"] == "running" and job["owner"] == instance else None

    return wait_until(check, timeout=15)


@pytest.mark.postgres
def test_web_accepts_and_a_worker_runs(web: Server, worker: Any) -> None:
    # The web instance runs nothing: no forkserver, no spare child.
    assert not any("forkserver" in line for line in _children(web.pid)), _children(web.pid)
    alone = web.start_job({"type": "quick", "value": 1})
    assert web.status(alone)["status"] == "pending"
    w = worker()
    assert w.client.get("/readyz").json() == {"status": "ready"}
    assert w.client.get("/admin/jobs").status_code == 404  # no API on a worker
    assert web.wait_status(alone, "completed")["result"] == {"value": 1}

    job_id = web.start_job({"type": "sleepy", "steps": 4, "stepMs": 300})
    with web.client.stream("GET", f"/admin/jobs/{job_id}/events") as stream:
        kinds = []
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kinds.append(line.removeprefix("event: "))
            if kinds and kinds[-1] == "finished":
                break
    # Progress and the end of a job run elsewhere reach the web's stream (follow.py).
    assert "progress" in kinds, kinds
    done = web.wait_status(job_id, "completed")
    assert done["owner"] == _instance(w)
    assert done["progress"]["processed"] == 3
    assert web.client.get("/healthz").json()["runningJobs"] == 0
    assert "worker instance" in w.log()
    assert "runs no job (JOBSUP_MAX_CONCURRENT_JOBS=0)" in web.log()


@pytest.mark.postgres
def test_cancel_through_the_web_reaches_the_worker(web: Server, worker: Any) -> None:
    w = worker()
    job_id = web.start_job({"type": "sleepy", "steps": 3, "stepMs": 60_000})
    _running_on(web, job_id, _instance(w))
    response = web.client.post(f"/admin/jobs/{job_id}/cancel")
    assert response.json() == {"jobId": job_id, "status": "cancelled"}, w.log()
    assert web.status(job_id)["cancel"]["mode"] == "cooperative"


@pytest.mark.postgres
def test_a_killed_workers_jobs_go_to_another_worker(web: Server, worker: Any) -> None:
    first = worker()
    job_id = web.start_job({"type": "counter", "to": 40, "stepMs": 250})
    _running_on(web, job_id, _instance(first))
    wait_until(lambda: web.status(job_id)["progress"]["processed"] >= 1, timeout=15)
    second = worker()
    first.kill()
    again = _running_on(web, job_id, _instance(second))
    assert again["attempts"] == 2
    web.client.post(f"/admin/jobs/{job_id}/cancel")


@pytest.mark.postgres
def test_worker_sigterm_requeues_resumable_jobs_and_exits_0(web: Server, worker: Any) -> None:
    w = worker()
    job_id = web.start_job({"type": "counter", "to": 40, "stepMs": 250})
    _running_on(web, job_id, _instance(w))
    assert w.stop() == 0
    job = web.wait_status(job_id, "pending")
    assert job["owner"] is None
    assert "shutting down" in w.log()
    # The next worker resumes it from its saved place.
    again = _running_on(web, job_id, _instance(worker()))
    assert again["attempts"] == 2
    web.client.post(f"/admin/jobs/{job_id}/cancel")


def test_worker_refuses_sqlite(sqlite_url: str) -> None:
    env = {**os.environ, **FAST, "DATABASE_URL": sqlite_url}
    done = subprocess.run(WORKER, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "jobsup worker needs PostgreSQL" in done.stderr
    assert "Traceback" not in done.stderr


def test_web_with_no_slots_refuses_sqlite(sqlite_url: str) -> None:
    env = {**os.environ, **FAST, "DATABASE_URL": sqlite_url, "JOBSUP_MAX_CONCURRENT_JOBS": "0"}
    command = [sys.executable, "-m", "supervisor", "serve"]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "JOBSUP_MAX_CONCURRENT_JOBS=0" in done.stderr


@pytest.mark.postgres
def test_worker_health_port_over_port(pg_url: str, tmp_path: Path) -> None:
    from supervisor.testing import free_port

    port = free_port()
    server = Server(
        {"DATABASE_URL": pg_url, "JOBSUP_HEALTH_PORT": str(port), **CLUSTER},
        tmp_path / "worker.log",
        WORKER,
    )
    try:
        server.spawn()

        def healthy() -> bool:
            server.check_running()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, timeout=30)
        body = httpx.get(f"http://127.0.0.1:{port}/healthz").json()
        assert body["status"] == "ok", json.dumps(body)
    finally:
        assert server.stop() == 0
        server.client.close()


@pytest.mark.postgres
def test_worker_stops_on_sigterm_before_any_job(pg_url: str, make_server: Any) -> None:
    w = make_server(command=WORKER, DATABASE_URL=pg_url, **CLUSTER)
    w.signal(signal.SIGTERM)
    assert w.process is not None
    assert w.process.wait(30) == 0


def test_worker_refuses_no_slots() -> None:
    env = {
        **os.environ,
        **FAST,
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/unused",
        "JOBSUP_MAX_CONCURRENT_JOBS": "0",
    }
    done = subprocess.run(WORKER, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "a worker with no job slot would run nothing" in done.stderr


def test_the_worker_port_answers_errors_in_the_envelope() -> None:
    # No lifespan (no runtime): only the router and its error handlers answer.
    import asyncio

    from supervisor.settings import Settings
    from supervisor.worker import create_worker_app

    async def ask(method: str, path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=create_worker_app(Settings()))
        async with httpx.AsyncClient(transport=transport, base_url="http://w") as client:
            return await client.request(method, path)

    for method, path, status, code in (
        ("POST", "/healthz", 405, "method_not_allowed"),
        ("GET", "/admin/jobs", 404, "not_found"),
    ):
        answer = asyncio.run(ask(method, path))
        assert answer.status_code == status
        assert answer.json()["error"]["code"] == code
