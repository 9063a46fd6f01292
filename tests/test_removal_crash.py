"""A removal hurt in the middle of a large batch loses nothing (real server, real signals).

A group of several thousand inactive members, removed in one batch; the
front process or the job's child is SIGKILLed, or (PostgreSQL) the child's
database backend is terminated, while the batch runs. The batch is one
transaction, so it commits whole or not at all: after the crash and after
the next run, the database must satisfy the removal invariants
(``tests.invariants``), and the group ends with every inactive member
removed exactly once.

The kill lands inside the batch deterministically. The SIGKILL tests load
``tests.pause_gateway``: the first batch pauses right after marking its
members removed, before it dequeues them and writes their history (where a
removal used to be committed alone). The backend test (PostgreSQL) has
another session lock ``removal_history``, so the batch waits at its history
rows, after it has marked every member removed.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import Server, wait_until
from tests.helpers import alive, group_body, removal
from tests.invariants import assert_removal_invariants

INACTIVE = 3000
KEPT = 3  # two active members and an inactive admin
GROUP = "g-large"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "sqlite":
        return sqlite_url
    return str(request.getfixturevalue("pg_url"))


def start_large_removal(server: Server) -> tuple[str, int]:
    """Put the group and start one removal of all of it in one batch; (job id, child pid)."""
    response = server.client.put(f"/admin/groups/{GROUP}", json=group_body(inactive=INACTIVE))
    assert response.status_code == 200, response.text
    job_id = server.start_job(removal(GROUP, batchSize=INACTIVE + KEPT))

    def removing() -> int | None:
        job = server.status(job_id)
        assert job["status"] in ("pending", "running"), job
        return job["pid"] if job["progress"]["phase"] == "removal" else None

    return job_id, int(wait_until(removing, timeout=30))


@contextmanager
def history_locked(url: str) -> Iterator[psycopg.Connection[Any]]:
    """Another session holds a lock that makes inserts into removal_history wait."""
    with psycopg.connect(url) as conn:
        conn.execute("LOCK TABLE removal_history IN SHARE MODE")
        yield conn
        conn.rollback()


def batch_waiting_backend(url: str) -> int:
    """The backend of the batch, once it waits at its history rows."""

    def waiting() -> int | None:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO removal_history%'"
            ).fetchone()
        return None if row is None else int(row[0])

    return int(wait_until(waiting, timeout=30))


def finish_and_check(server: Server, url: str, job_id: str | None = None) -> None:
    """Let the job (or a new removal of the queue) end, then check what the group holds."""
    if job_id is None:
        body = removal(GROUP, type="removal_queue", batchSize=INACTIVE)
        del body["inactivityWindowMs"]
        job_id = server.start_job(body)
    server.wait_status(job_id, "completed", timeout=60)
    counts = assert_removal_invariants(url, [GROUP])
    assert (counts.present, counts.removed, counts.queued) == (KEPT, INACTIVE, 0)
    assert counts.success_rows == INACTIVE
    summary = server.client.get(f"/admin/groups/{GROUP}").json()
    assert (summary["memberCount"], summary["removedCount"]) == (KEPT, INACTIVE)


@pytest.fixture
def paused(tmp_path: Path) -> Path:
    """The directory of the pause in the first batch (``tests.pause_gateway``)."""
    pause = tmp_path / "pause"
    pause.mkdir()
    os.mkfifo(pause / "go")
    return pause


def paused_server(make_server: Any, database_url: str, pause: Path) -> Server:
    return make_server(
        DATABASE_URL=database_url,
        JOBSUP_JOB_MODULES="tests.jobs,tests.pause_gateway",
        JOBSUP_TEST_PAUSE_DIR=str(pause),
    )


def in_batch(pause: Path) -> int:
    """The pid of the child once it is paused inside its batch."""
    marker = pause / "in-batch"
    return int(wait_until(lambda: marker.exists() and marker.read_text(), timeout=30))


def test_front_sigkilled_during_a_large_batch(
    database_url: str, make_server: Any, paused: Path
) -> None:
    server = paused_server(make_server, database_url, paused)
    job_id, child = start_large_removal(server)
    assert in_batch(paused) == child
    server.kill()
    # The orphaned child cannot finish its step (it is SIGKILLed inside
    # it), so it abandons it: the transaction rolls back.
    wait_until(lambda: not alive(child), timeout=10)
    counts = assert_removal_invariants(database_url, [GROUP])
    assert (counts.removed, counts.queued) == (0, INACTIVE)

    server.start()  # the job is rescued and runs again from the start
    finish_and_check(server, database_url, job_id)
    assert server.status(job_id)["attempts"] == 2


def test_child_sigkilled_during_a_large_batch(
    database_url: str, make_server: Any, paused: Path
) -> None:
    server = paused_server(make_server, database_url, paused)
    job_id, child = start_large_removal(server)
    assert in_batch(paused) == child
    os.kill(child, signal.SIGKILL)
    assert server.wait_status(job_id, "failed")["error"]["reason"] == "crashed"
    counts = assert_removal_invariants(database_url, [GROUP])
    assert (counts.removed, counts.queued) == (0, INACTIVE)
    finish_and_check(server, database_url)


@pytest.mark.postgres
def test_backend_terminated_between_the_steps_of_a_batch(pg_url: str, make_server: Any) -> None:
    server = make_server(DATABASE_URL=pg_url)
    job_id, _ = start_large_removal(server)
    with history_locked(pg_url) as conn:
        backend = batch_waiting_backend(pg_url)
        conn.execute("SELECT pg_terminate_backend(%s)", (backend,))
    failed = server.wait_status(job_id, "failed")
    assert failed["error"]["reason"] == "exception"
    counts = assert_removal_invariants(pg_url, [GROUP])
    assert (counts.removed, counts.success_rows) == (0, 0)  # the batch rolled back whole
    finish_and_check(server, pg_url)


def test_a_rescued_removal_reports_what_its_earlier_run_removed(
    sqlite_url: str, make_server: Any
) -> None:
    """The result of a job run twice lists every member it removed, in both runs."""
    server = make_server(DATABASE_URL=sqlite_url)
    group = "g-rescued"
    response = server.client.put(f"/admin/groups/{group}", json=group_body(inactive=6))
    assert response.status_code == 200, response.text
    # Batches of 2, 1.5 s apart: the front dies during the wait after the first.
    job_id = server.start_job(removal(group, batchSize=2, delayMs=1500))
    wait_until(lambda: server.status(job_id)["progress"]["processed"] >= 2, timeout=30)
    server.kill()
    server.start()  # the job is rescued and runs the rest

    job = server.wait_status(job_id, "completed", timeout=60)
    assert job["attempts"] == 2
    everyone = [f"in-{i:03d}" for i in range(6)]
    assert sorted(job["result"]["removedWhatsappIds"]) == everyone
    assert job["result"]["failed"] == []
    removals = server.client.get(f"/admin/groups/{group}/removals").json()
    rows = removals["removals"] if isinstance(removals, dict) else removals
    assert sorted(r["whatsappId"] for r in rows if r["jobId"] == job_id) == everyone
