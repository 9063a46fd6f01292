"""Deploys and crashes cost no progress: resumable jobs go back to the queue and resume.

Real servers, real signals. A removal of 30 members in batches of 1, 500 ms
apart, is interrupted after its 10th batch: by SIGTERM to every process of
the server (a deploy), by SIGKILL of the front (a crash), or on one instance
of two (PostgreSQL). It must go on from its 11th batch, never sooner than its
delay after the 10th, with exactly one history row per member.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Any

import pytest

from tests.conftest import Server, wait_until
from tests.helpers import group_body, removal, rows, session_pids

MEMBERS = 30
DELAY_MS = 500
GROUP = "g-resume"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "sqlite":
        return sqlite_url
    return str(request.getfixturevalue("pg_url"))


def start_removal(server: Server) -> str:
    response = server.client.put(f"/admin/groups/{GROUP}", json=group_body(inactive=MEMBERS))
    assert response.status_code == 200, response.text
    return server.start_job(removal(GROUP, batchSize=1, delayMs=DELAY_MS))


def after_batches(server: Server, url: str, job_id: str, count: int) -> None:
    def done() -> bool:
        found = rows(url, "SELECT count(*) AS n FROM removal_history WHERE job_id = ?", job_id)
        return int(found[0]["n"]) >= count

    wait_until(done, timeout=30)


def sigterm_everyone(server: Server) -> None:
    """What a platform does at a deploy: SIGTERM to every process of the server at once."""
    for pid in session_pids(server.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    assert server.process is not None
    assert server.process.wait(30) == 0
    wait_until(lambda: not session_pids(server.pid), timeout=10)


def assert_one_continuous_run(server: Server, url: str, job_id: str, resumes: int) -> None:
    job = server.wait_status(job_id, "completed", timeout=60)
    history = rows(
        url,
        "SELECT whatsapp_id, outcome, attempt, at FROM removal_history WHERE job_id = ?"
        " ORDER BY at, id",
        job_id,
    )
    members = [r["whatsapp_id"] for r in history]
    assert len(members) == MEMBERS
    assert len(set(members)) == MEMBERS  # each exactly once
    assert {r["outcome"] for r in history} == {"SUCCESS"}
    first = [r for r in history if r["attempt"] == 1]
    later = [r for r in history if r["attempt"] != 1]
    assert len(first) >= 10, [r["attempt"] for r in history]
    assert later, [r["attempt"] for r in history]
    # WhatsApp's pacing held across the restart.
    assert later[0]["at"] - first[-1]["at"] >= DELAY_MS
    # It went on from where it stopped: numbering and result span both runs.
    assert job["progress"]["message"].startswith(f"batch {MEMBERS}/{MEMBERS}:"), job["progress"]
    assert sorted(job["result"]["removedWhatsappIds"]) == sorted(members)
    assert job["resumes"] == resumes
    assert job["savedAt"] is not None


def test_a_deploy_resumes_the_removal_where_it_stopped(url: str, make_server: Any) -> None:
    server = make_server(DATABASE_URL=url)
    job_id = start_removal(server)
    after_batches(server, url, job_id, 10)
    sigterm_everyone(server)

    (row,) = rows(url, "SELECT status, owner, saved_state FROM jobs WHERE id = ?", job_id)
    assert (row["status"], row["owner"]) == ("pending", None)  # back in the queue
    assert row["saved_state"] is not None

    server.start()
    assert_one_continuous_run(server, url, job_id, resumes=1)


def test_a_crash_of_the_front_resumes_from_the_last_saved_batch(
    sqlite_url: str, make_server: Any
) -> None:
    server = make_server(DATABASE_URL=sqlite_url)
    job_id = start_removal(server)
    after_batches(server, sqlite_url, job_id, 10)
    server.kill()
    server.start()  # rescues its own earlier life: the job is re-queued with its place
    assert_one_continuous_run(server, sqlite_url, job_id, resumes=1)


@pytest.mark.postgres
def test_another_instance_resumes_a_job_stopped_on_the_first(pg_url: str, make_server: Any) -> None:
    a = make_server(DATABASE_URL=pg_url)
    job_id = start_removal(a)
    after_batches(a, pg_url, job_id, 10)
    first_owner = a.status(job_id)["owner"]
    b = make_server(DATABASE_URL=pg_url)
    a.signal(signal.SIGTERM)  # A alone stops: B claims the job and resumes it
    assert a.process is not None
    assert a.process.wait(30) == 0

    def on_b() -> bool:
        job = b.status(job_id)
        return job["owner"] not in (None, first_owner)

    wait_until(on_b, timeout=30)
    assert_one_continuous_run(b, pg_url, job_id, resumes=1)


def test_shutdown_in_cancel_mode_cancels_as_before(sqlite_url: str, make_server: Any) -> None:
    server = make_server(DATABASE_URL=sqlite_url, JOBSUP_SHUTDOWN_MODE="cancel")
    job_id = server.start_job({"type": "counter", "to": 1000, "stepMs": 20})
    server.wait_status(job_id, "running")
    server.signal(signal.SIGTERM)
    assert server.process is not None
    assert server.process.wait(30) == 0
    (row,) = rows(sqlite_url, "SELECT status, cancel FROM jobs WHERE id = ?", job_id)
    assert row["status"] == "cancelled"
    assert '"shutdown"' in row["cancel"]


def test_a_job_interrupted_too_often_fails(sqlite_url: str, make_server: Any) -> None:
    """A job that brings its instance down at the same place each time does not loop."""
    server = make_server(DATABASE_URL=sqlite_url, JOBSUP_MAX_RESUMES="2")
    job_id = server.start_job({"type": "counter", "to": 1000, "stepMs": 20})
    saved_at = None
    for _ in range(3):  # the first run and two resumes, each ended by a crash
        # Killed once this run's own saved place is in the store.
        def saved_again(before: Any = saved_at) -> Any:
            (row,) = rows(sqlite_url, "SELECT saved_at FROM jobs WHERE id = ?", job_id)
            return row["saved_at"] if row["saved_at"] not in (None, before) else None

        saved_at = wait_until(saved_again, timeout=30)
        server.kill()
        server.start()
    job = server.wait_status(job_id, "failed", timeout=30)
    assert job["error"]["reason"] == "resume_limit"
    assert "interrupted 3 times" in job["error"]["message"]
    assert job["resumes"] == 2


def test_a_resumed_job_gets_its_saved_place(sqlite_url: str, make_server: Any) -> None:
    server = make_server(DATABASE_URL=sqlite_url)
    job_id = server.start_job({"type": "counter", "to": 60, "stepMs": 100})
    wait_until(lambda: server.status(job_id)["progress"]["processed"] >= 3, timeout=30)
    sigterm_everyone(server)
    server.start()
    job = server.wait_status(job_id, "completed", timeout=60)
    assert job["result"]["seen"] == list(range(60))  # each step once, across both runs
    assert job["result"]["resumes"] == 1


def test_a_saved_place_over_the_bound_fails_the_job_clearly(server: Server) -> None:
    job_id = server.start_job({"type": "counter", "to": 3, "saveBytes": 70_000})
    job = server.wait_status(job_id, "failed")
    assert job["error"]["type"] == "SavedStateTooLarge"
    assert "at most 65536" in job["error"]["message"]
