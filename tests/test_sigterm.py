"""The platform's SIGTERM: to every process of the server at once, or to one of them.

After a SIGTERM reaches any process of the server, no new job starts,
pending jobs stay pending (unowned) for the next start, and the spare child
never takes a job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server, wait_until
from tests.helpers import group_body, proc_stat, removal, rows, session_pids

# Every running removal job removes one member, then sleeps a minute (cancellable).
SLOW = {"batchSize": 1, "delayMs": 60_000}


def forkserver_pid(server: Server) -> int:
    for pid in session_pids(server.pid):
        if "forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
            return pid
    raise AssertionError("no forkserver in the server's session")


def forked(server: Server) -> list[int]:
    """The forkserver's children: job children and the spare."""
    parent = forkserver_pid(server)
    return [p for p in session_pids(server.pid) if (proc_stat(p) or (0, 0))[0] == parent]


def _removed(url: str, group: str) -> int:
    found = rows(url, "SELECT count(*) AS n FROM removal_history WHERE group_wa_id = ?", group)
    return int(found[0]["n"])


def _six_removals(server: Server, url: str) -> tuple[list[str], list[str]]:
    """6 groups, 6 removal jobs, 4 slots: 4 running (each past its first removal), 2 pending."""
    jobs = []
    for i in range(6):
        server.client.put(f"/admin/groups/g{i}", json=group_body(inactive=3))
        jobs.append(server.start_job(removal(f"g{i}", **SLOW)))
    running, pending = jobs[:4], jobs[4:]
    for i, job_id in enumerate(running):
        server.wait_status(job_id, "running")
        wait_until(lambda i=i: _removed(url, f"g{i}") == 1)
    assert [server.status(j)["status"] for j in pending] == ["pending", "pending"]
    wait_until(lambda: len(forked(server)) == 5)  # 4 job children and the spare
    return running, pending


def _assert_pending_untouched(url: str, pending: list[str]) -> None:
    for job_id in pending:
        (row,) = rows(url, "SELECT * FROM jobs WHERE id = ?", job_id)
        assert row["status"] == "pending", row
        assert row["owner"] is None, row
        assert row["started_at"] is None, row
        assert row["attempts"] == 0, row
    for group in ("g4", "g5"):
        assert _removed(url, group) == 0


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "sqlite":
        return sqlite_url
    return str(request.getfixturevalue("pg_url"))  # set up first: it outlives the server


def test_sigterm_to_every_process_keeps_pending_jobs(url: str, make_server: Any) -> None:
    # Cancel mode: the running removals end here (their resume is tests/test_resume.py).
    server = make_server(
        JOBSUP_MAX_CONCURRENT_JOBS="4", DATABASE_URL=url, JOBSUP_SHUTDOWN_MODE="cancel"
    )
    running, pending = _six_removals(server, url)
    everyone = session_pids(server.pid)
    signalled_at = int(time.time() * 1000)
    for pid in everyone:  # as a platform does: every process of the dyno at once
        with contextlib.suppress(ProcessLookupError):  # one that ended since the look
            os.kill(pid, signal.SIGTERM)
    assert server.process is not None
    assert server.process.wait(30) == 0
    wait_until(lambda: not session_pids(server.pid), timeout=5)

    _assert_pending_untouched(url, pending)
    for i, job_id in enumerate(running):
        (row,) = rows(url, "SELECT * FROM jobs WHERE id = ?", job_id)
        assert row["status"] == "cancelled", row
        assert row["started_at"] < signalled_at
        assert _removed(url, f"g{i}") == 1  # nothing removed after the signal
    started = rows(url, "SELECT id FROM jobs WHERE started_at >= ?", signalled_at)
    assert started == []
    assert "before it started" not in server.log()  # no child was even handed a job

    server.start()  # the next start runs what was pending
    for i, job_id in zip((4, 5), pending, strict=True):
        assert server.wait_status(job_id, "running")["attempts"] == 1
        wait_until(lambda i=i: _removed(url, f"g{i}") == 1)


def test_sigterm_to_the_forkserver_stops_the_server(make_server: Any, sqlite_url: str) -> None:
    server = make_server(JOBSUP_MAX_CONCURRENT_JOBS="4")
    running, pending = _six_removals(server, sqlite_url)
    os.kill(forkserver_pid(server), signal.SIGTERM)
    assert server.process is not None
    assert server.process.wait(30) == 0  # passed on to the front: a graceful stop
    _assert_pending_untouched(sqlite_url, pending)
    for job_id in running:  # removals are resumable: back in the queue with their place
        (row,) = rows(sqlite_url, "SELECT * FROM jobs WHERE id = ?", job_id)
        assert (row["status"], row["owner"], row["cancel"]) == ("pending", None, None), row
        assert row["saved_state"] is not None


def test_sigterm_to_one_child_pauses_admissions(make_server: Any, sqlite_url: str) -> None:
    server = make_server(JOBSUP_MAX_CONCURRENT_JOBS="1", JOBSUP_SIGTERM_HOLD_S="5")
    first = server.start_job({"type": "sleepy", "steps": 1000, "stepMs": 50})  # not resumable
    waiting = server.start_job({"type": "quick", "value": 7})
    pid = server.wait_status(first, "running")["pid"]
    os.kill(pid, signal.SIGTERM)  # by hand, to one job's child
    ended = server.wait_status(first, "cancelled")
    assert ended["cancel"]["reason"] == "signal"
    # Its slot is free, but a SIGTERM may mean the platform is stopping us:
    # the waiting job is not started at once.
    wait_until(lambda: "child got SIGTERM: starting no job" in server.log())
    assert server.status(waiting)["status"] == "pending"
    assert server.client.get("/readyz").status_code == 200  # still serving
    # No stop followed: admissions resume by themselves.
    assert server.wait_status(waiting, "completed")["result"] == {"value": 7}


def _sigterm_left_to_kill(pid: int) -> bool:
    """Whether the process no longer catches SIGTERM: a spare in child_main, waiting for
    its job (before, it still has the forkserver's handler, which passes nothing on)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            caught = next(line for line in status if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return not int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1))


def test_sigterm_to_the_spare_pauses_admissions(make_server: Any, sqlite_url: str) -> None:
    server = make_server(JOBSUP_SIGTERM_HOLD_S="3")
    (spare,) = wait_until(lambda: forked(server))
    wait_until(lambda: _sigterm_left_to_kill(spare))
    os.kill(spare, signal.SIGTERM)
    wait_until(lambda: "the spare child got SIGTERM: starting no job" in server.log())
    job_id = server.start_job({"type": "quick", "value": 1})
    assert server.status(job_id)["status"] == "pending"
    assert server.wait_status(job_id, "completed")["result"] == {"value": 1}
    (row,) = rows(sqlite_url, "SELECT attempts FROM jobs WHERE id = ?", job_id)
    assert row["attempts"] == 1
