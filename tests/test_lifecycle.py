"""Children, cancellation and admission, with real processes and signals."""

from __future__ import annotations

import itertools
from datetime import datetime
from functools import partial
from typing import Any

import pytest

from tests.conftest import Server, wait_until
from tests.helpers import alive, group_body, removal


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def test_cancel_between_batches_is_immediate(server: Server) -> None:
    server.client.put("/admin/groups/g1", json=group_body(inactive=3))
    job_id = server.start_job(removal("g1", batchSize=1, delayMs=60_000))

    def removed_one() -> bool:
        result = server.status(job_id)["result"]
        return bool(result and result["removedWhatsappIds"])

    wait_until(removed_one)
    response = server.client.post(f"/admin/jobs/{job_id}/cancel")
    assert response.status_code == 200
    assert response.json() == {"jobId": job_id, "status": "cancelled"}
    job = server.status(job_id)
    assert job["cancel"]["mode"] == "cooperative"
    assert job["cancel"]["reason"] == "user"
    # Stopped while waiting out a 60 s delay: well under a second.
    assert _seconds(job["cancel"]["requestedAt"], job["cancel"]["exitedAt"]) < 1.0
    # What it did before the cancel is kept, in the result and in the history.
    assert job["result"]["removedWhatsappIds"] == ["in-000"]
    history = server.client.get("/admin/groups/g1/removals").json()
    assert [r["whatsappId"] for r in history] == ["in-000"]
    assert server.client.get("/admin/groups/g1").json()["queuedCount"] == 2


def _pid(server: Server, job_id: str) -> int | None:
    pid: int | None = server.status(job_id)["pid"]
    return pid


def test_a_cancel_is_answered_once_the_child_has_exited(server: Server) -> None:
    # Cancels land a few milliseconds into a sleep, over and over: the child's
    # main thread and its watch thread both wake on the cancel pipe, and each
    # answer must still be "cancelled" with the child already gone.
    for _ in range(40):
        job_id = server.start_job({"type": "sleepy", "steps": 1, "stepMs": 60_000})
        pid = wait_until(partial(_pid, server, job_id), timeout=10, interval=0.002)
        response = server.client.post(f"/admin/jobs/{job_id}/cancel")
        assert response.json() == {"jobId": job_id, "status": "cancelled"}
        assert not alive(pid)


def test_cancel_pending_never_starts_a_child(make_server: Any) -> None:
    server = make_server(JOBSUP_MAX_CONCURRENT_JOBS="1")
    blocker = server.start_job({"type": "sleepy", "steps": 1, "stepMs": 60_000})
    server.wait_status(blocker, "running")
    waiting = server.start_job({"type": "quick"})
    assert server.status(waiting)["status"] == "pending"
    response = server.client.post(f"/admin/jobs/{waiting}/cancel")
    assert response.json() == {"jobId": waiting, "status": "cancelled"}
    server.client.post(f"/admin/jobs/{blocker}/cancel")
    job = server.status(waiting)
    assert job["startedAt"] is None
    assert job["pid"] is None
    assert job["cancel"]["mode"] is None
    listed = server.client.get("/admin/jobs?status=running").json()
    assert listed == []


def test_stuck_job_is_terminated_and_keeps_its_partial(server: Server) -> None:
    job_id = server.start_job({"type": "stubborn"})
    wait_until(lambda: server.status(job_id)["result"])
    response = server.client.post(f"/admin/jobs/{job_id}/cancel")
    assert response.status_code in (200, 202)
    job = server.wait_status(job_id, "cancelled")
    assert job["cancel"]["mode"] == "terminated"
    assert job["result"] == {"started": True}


def test_job_ignoring_sigterm_is_killed_with_its_grandchild(server: Server) -> None:
    job_id = server.start_job({"type": "stubborn", "ignoreTerm": True, "spawnChild": True})
    result = wait_until(lambda: server.status(job_id)["result"])
    grandchild = result["grandchildPid"]
    pid = server.status(job_id)["pid"]
    assert alive(grandchild)
    server.client.post(f"/admin/jobs/{job_id}/cancel")
    job = server.wait_status(job_id, "cancelled")
    assert job["cancel"]["mode"] == "killed"
    wait_until(lambda: not alive(grandchild) and not alive(pid), timeout=5)


def test_a_child_that_hangs_after_its_end_frees_its_slot_and_is_killed(
    make_server: Any,
) -> None:
    server = make_server(JOBSUP_MAX_CONCURRENT_JOBS="1", JOBSUP_KILL_AFTER_S="1")
    job_id = server.start_job({"type": "linger"})
    pid = server.wait_status(job_id, "completed")["result"]["pid"]  # its end is known
    assert alive(pid)
    # The hanging child does not hold the only slot...
    server.wait_status(server.start_job({"type": "quick", "value": 1}), "completed")
    # ...and is killed once kill_after_s has passed.
    wait_until(lambda: not alive(pid), timeout=10)
    assert "child is still there after its end: SIGKILL" in server.log()


def test_a_cancelled_child_that_hangs_is_killed_after_kill_after_s(make_server: Any) -> None:
    # Its cancel's escalation (SIGTERM after the 30 s grace) would no longer
    # reach it: the job has ended, so only the straggler kill applies.
    server = make_server(JOBSUP_CANCEL_GRACE_S="30", JOBSUP_KILL_AFTER_S="1")
    job_id = server.start_job({"type": "linger", "waitMs": 60_000})
    pid = wait_until(partial(_pid, server, job_id), timeout=10)
    # Cancelled once its partial result is in: a cancel before the job's
    # first context call ends it there, with no result to keep.
    wait_until(lambda: server.status(job_id)["result"] == {"pid": pid}, timeout=10)
    server.client.post(f"/admin/jobs/{job_id}/cancel")
    assert server.wait_status(job_id, "cancelled")["result"] == {"pid": pid}
    wait_until(lambda: not alive(pid), timeout=10)


def test_cancel_a_finished_job_is_400(server: Server) -> None:
    job_id = server.start_job({"type": "quick"})
    server.wait_status(job_id, "completed")
    response = server.client.post(f"/admin/jobs/{job_id}/cancel")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "not_cancellable"


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("exception", "RuntimeError"),
        ("exit", "exited with code 7"),
        ("segfault", "SIGSEGV"),
        ("sigkill", "SIGKILL"),
    ],
)
def test_crashing_child_fails_the_job_and_not_the_server(
    server: Server, how: str, expected: str
) -> None:
    job_id = server.start_job({"type": "crash", "how": how})
    job = server.wait_status(job_id, "failed")
    error = job["error"]
    assert expected in (error["type"] + " " + error["message"])
    assert job["result"] == {"before": "crash"}
    if how == "exception":
        assert "the job broke" in error["traceback"]
    # The server carries on.
    assert server.wait_status(server.start_job({"type": "quick"}), "completed")


def test_concurrency_limit_and_arrival_order(make_server: Any) -> None:
    server = make_server(JOBSUP_MAX_CONCURRENT_JOBS="2")
    ids = [server.start_job({"type": "sleepy", "steps": 2, "stepMs": 150}) for _ in range(5)]
    seen_running = 0

    def all_done() -> bool:
        nonlocal seen_running
        running = server.client.get("/admin/jobs?status=running").json()
        seen_running = max(seen_running, len(running))
        assert len(running) <= 2
        return all(server.status(i)["status"] == "completed" for i in ids)

    wait_until(all_done, timeout=30)
    assert seen_running == 2


def test_pending_jobs_start_in_arrival_order(make_server: Any) -> None:
    server = make_server(JOBSUP_MAX_CONCURRENT_JOBS="1")
    ids = [server.start_job({"type": "sleepy", "steps": 1, "stepMs": 20}) for _ in range(5)]
    jobs = [server.wait_status(i, "completed") for i in ids]
    for earlier, later in itertools.pairwise(jobs):
        assert earlier["completedAt"] <= later["startedAt"]


def test_finished_jobs_leave_memory_after_the_ttl(make_server: Any) -> None:
    server = make_server(JOBSUP_JOB_TTL_S="0.3", JOBSUP_CLEANUP_INTERVAL_S="0.1")
    job_id = server.start_job({"type": "quick", "value": 5})
    server.wait_status(job_id, "completed")
    wait_until(lambda: server.client.get("/healthz").json()["jobsInMemory"] == 0)
    job = server.status(job_id)  # still readable, from the database
    assert job["status"] == "completed"
    assert job["result"] == {"value": 5}


def test_dry_run_changes_nothing_and_names_each_member_once(server: Server) -> None:
    server.client.put("/admin/groups/g1", json=group_body(inactive=5))
    before = server.client.get("/admin/groups/g1/members?includeRemoved=true").json()
    job_id = server.start_job(removal("g1", dryRun=True, batchSize=2, delayMs=60_000))
    job = server.wait_status(job_id, "completed")
    result = job["result"]
    assert result["wouldRemoveWhatsappIds"] == [f"in-{i:03d}" for i in range(5)]
    assert result["removedWhatsappIds"] == []
    after = server.client.get("/admin/groups/g1/members?includeRemoved=true").json()
    assert after == before
    assert server.client.get("/admin/groups/g1/removals").json() == []
    assert server.client.get("/admin/groups/g1").json()["queuedCount"] == 0
