"""Fencing: an instance that stalls past the node timeout loses its jobs for good.

Its jobs are rescued by another instance; when it wakes, its writes match
nothing (they are conditional on the run's owner and attempt), so it kills
its children and forgets those jobs instead of writing over the rescue.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import psycopg
import pytest

from tests.chaos_invariants import Seen, install_audit, violations
from tests.conftest import Server, wait_until
from tests.fence_jobs import TICKS_TABLE
from tests.helpers import alive

pytestmark = pytest.mark.postgres

FENCE = {
    "JOBSUP_HEARTBEAT_S": "0.3",
    "JOBSUP_NODE_TIMEOUT_S": "2",
    "JOBSUP_POLL_S": "0.5",
    "JOBSUP_JOB_MODULES": "tests.jobs,tests.fence_jobs",
}


@pytest.fixture
def fenced_db(pg_url: str) -> str:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(TICKS_TABLE)
    return pg_url


def _instance(server: Server) -> str:
    return str(server.client.get("/healthz").json()["instance"])


def _stop(server: Server) -> None:
    os.kill(server.pid, signal.SIGSTOP)


def _resume(server: Server) -> None:
    os.kill(server.pid, signal.SIGCONT)


def test_a_stalled_owner_wakes_fenced_off(fenced_db: str, make_server: Any) -> None:
    a = make_server(DATABASE_URL=fenced_db, **FENCE)
    install_audit(fenced_db)
    seen = Seen()
    # On A: a job B will finish, one B will re-run and cancel, one cancelled
    # while A is stalled, and one that is not idempotent (B fails it).
    finished = a.start_job({"type": "ticker", "key": "k1", "firstMs": 60_000, "againMs": 300})
    recancelled = a.start_job({"type": "ticker", "key": "k2", "firstMs": 60_000, "againMs": 60_000})
    stalled_cancel = a.start_job({"type": "ticker", "key": "k3", "firstMs": 60_000})
    plain = a.start_job({"type": "stubborn", "seconds": 120})
    jobs = [finished, recancelled, stalled_cancel, plain]
    pids = [a.wait_status(j, "running")["pid"] for j in jobs]
    wait_until(lambda: all(a.status(j)["progress"]["processed"] for j in jobs[:3]))
    b = make_server(DATABASE_URL=fenced_db, **FENCE)
    b_id = _instance(b)

    _stop(a)
    try:
        # Asked of B while A is stalled: B stores the request; the rescue's
        # claim honours it rather than running the job again.
        answer = b.client.post(f"/admin/jobs/{stalled_cancel}/cancel")
        assert answer.status_code in (200, 202), answer.text
        seen.cancel_answer(stalled_cancel, answer.status_code, answer.json()["status"])
        done = b.wait_status(finished, "completed", timeout=20)
        assert (done["owner"], done["attempts"], done["result"]["attempt"]) == (b_id, 2, 2)
        seen.status(finished, "completed")
        assert b.wait_status(plain, "failed")["error"]["reason"] == "interrupted"
        seen.status(plain, "failed")
        again = b.wait_status(recancelled, "running")
        assert (again["owner"], again["attempts"]) == (b_id, 2)
        answer = b.client.post(f"/admin/jobs/{recancelled}/cancel")
        assert answer.json()["status"] == "cancelled", answer.text
        seen.cancel_answer(recancelled, answer.status_code, "cancelled")
        gone = b.wait_status(stalled_cancel, "cancelled")
        assert gone["attempts"] == 1  # never run again
        seen.status(stalled_cancel, "cancelled")
        # The tickers' children stopped at their next tick (the row is no
        # longer their run's); the stubborn one runs on while A is stalled.
        assert alive(pids[3])
    finally:
        _resume(a)

    # A wakes: its writes match nothing, its heartbeat finds its row gone.
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout=10)
    wait_until(lambda: "letting its jobs go" in a.log(), timeout=10)
    # It serves on, and whatever it is asked about these jobs comes from the store.
    for job_id in jobs:
        assert a.status(job_id)["status"] == b.status(job_id)["status"]
    assert a.wait_status(a.start_job({"type": "quick", "value": 3}), "completed")
    keys = {finished: "k1", recancelled: "k2", stalled_cancel: "k3"}
    assert violations(fenced_db, seen, keys) == []
