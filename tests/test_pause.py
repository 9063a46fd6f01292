"""Pause and resume with real children: cooperative holds, freeze, cancel, restarts, timeouts."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from supervisor import recovery
from supervisor.job import now
from supervisor.state import JobStatus
from tests.conftest import Server, wait_until
from tests.helpers import group_body, pending_job, removal, rows
from workers import protocol, registry
from workers.context import CancelPipe, Channel, JobCancelled, JobContext

TICKER = {"type": "ticker", "stepMs": 20}


def post(server: Server, job_id: str, action: str, body: Any = None) -> Any:
    return server.client.post(f"/admin/jobs/{job_id}/{action}", json=body)


def pause(server: Server, job_id: str, body: Any = None) -> dict[str, Any]:
    response = post(server, job_id, "pause", body)
    assert response.status_code in (200, 202), response.text
    return server.wait_status(job_id, "paused")


def ticks(server: Server, job_id: str) -> int:
    return int(server.status(job_id)["progress"]["processed"])


def proc_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]


def test_a_paused_job_holds_its_place_and_resumes_from_it(server: Server) -> None:
    job_id = server.start_job(TICKER)
    wait_until(lambda: ticks(server, job_id) >= 3)
    job = pause(server, job_id)
    assert job["pausedAt"] is not None
    held = ticks(server, job_id)
    # It holds: after other jobs came and went, the count is the same (it
    # would tick every 20 ms).
    wait_until(lambda: server.status(job_id)["status"] == "paused")
    for value in range(3):
        server.wait_status(server.start_job({"type": "quick", "value": value}), "completed")
    assert ticks(server, job_id) == held
    response = post(server, job_id, "resume")
    assert response.status_code == 200, response.text
    assert response.json() == {"jobId": job_id, "status": "running"}
    wait_until(lambda: ticks(server, job_id) > held)
    assert server.status(job_id)["pausedAt"] is None


def test_refusals_name_what_is_wrong(server: Server) -> None:
    done = server.start_job({"type": "quick"})
    server.wait_status(done, "completed")
    response = post(server, done, "pause")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "not_running"
    response = post(server, done, "resume")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "not_paused"
    for action in ("pause", "resume"):
        assert post(server, "no-such-job", action).status_code == 404
    running = server.start_job(TICKER)
    server.wait_status(running, "running")
    response = post(server, running, "resume")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "not_paused"
    response = post(server, running, "pause", {"mode": "sideways"})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "mode"
    # Not declared freezable: refused, naming the mode.
    sleepy = server.start_job({"type": "sleepy", "steps": 100, "stepMs": 50})
    server.wait_status(sleepy, "running")
    response = post(server, sleepy, "pause", {"mode": "freeze"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == "mode"
    assert server.status(sleepy)["status"] == "running"


def test_cancel_from_paused_and_from_pausing(server: Server) -> None:
    paused = server.start_job(TICKER)
    server.wait_status(paused, "running")
    pause(server, paused)
    response = post(server, paused, "cancel")
    assert response.status_code in (200, 202), response.text
    job = server.wait_status(paused, "cancelled")
    assert job["cancel"]["mode"] == "cooperative"  # the hold woke on the cancel
    # A job that never reaches a context call stays pausing; a cancel still stops it.
    stuck = server.start_job({"type": "stubborn", "seconds": 60})
    # Past its last context call (its progress line): a pause asked before it would hold there.
    wait_until(lambda: server.status(stuck)["progress"]["message"] == "stuck inside a batch")
    response = post(server, stuck, "pause")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pausing"
    assert server.status(stuck)["status"] == "pausing"
    response = post(server, stuck, "cancel")
    assert response.status_code in (200, 202), response.text
    job = server.wait_status(stuck, "cancelled")
    assert job["cancel"]["mode"] == "terminated"


def test_freeze_stops_the_process_group_and_resume_continues_it(server: Server) -> None:
    job_id = server.start_job(TICKER)
    job = server.wait_status(job_id, "running")
    pid = int(job["pid"])
    response = post(server, job_id, "pause", {"mode": "freeze"})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "paused"  # frozen: paused at once
    wait_until(lambda: proc_state(pid) == "T")
    held = ticks(server, job_id)
    assert post(server, job_id, "resume").json()["status"] == "running"
    wait_until(lambda: ticks(server, job_id) > held)
    assert proc_state(pid) != "T"
    # Frozen again, then cancelled: thawed first, so it stops at its next cancel point.
    assert post(server, job_id, "pause", {"mode": "freeze"}).status_code == 200
    wait_until(lambda: proc_state(pid) == "T")
    assert post(server, job_id, "cancel").status_code in (200, 202)
    job = server.wait_status(job_id, "cancelled")
    assert job["cancel"]["mode"] == "cooperative"


def test_a_paused_job_left_too_long_is_cancelled(make_server: Callable[..., Server]) -> None:
    server = make_server(JOBSUP_PAUSED_TIMEOUT_S="0.5")
    job_id = server.start_job(TICKER)
    server.wait_status(job_id, "running")
    assert post(server, job_id, "pause").status_code in (200, 202)
    job = server.wait_status(job_id, "cancelled")
    assert job["cancel"]["reason"] == "paused_timeout"


GROUP = "g-pause"
DELAY_S = 4.0


def batch_times(server_url: str, job_id: str) -> list[float]:
    found = rows(server_url, "SELECT at FROM removal_history WHERE job_id = ? ORDER BY at", job_id)
    return [int(r["at"]) / 1000 for r in found]


def test_a_removal_paused_mid_delay_waits_out_only_what_remained(
    server: Server, sqlite_url: str
) -> None:
    response = server.client.put(f"/admin/groups/{GROUP}", json=group_body(inactive=3))
    assert response.status_code == 200, response.text
    job_id = server.start_job(removal(GROUP, batchSize=1, delayMs=int(DELAY_S * 1000)))
    first = wait_until(lambda: batch_times(sqlite_url, job_id))[0]
    # Half-way through the delay before the second batch.
    wait_until(lambda: time.time() >= first + DELAY_S / 2, timeout=DELAY_S)
    sent = time.time()
    pause(server, job_id)
    remaining = DELAY_S - (sent - first)
    # Held past the whole delay: not a batch more meanwhile.
    wait_until(lambda: time.time() >= sent + DELAY_S + 1, timeout=DELAY_S + 5)
    assert len(batch_times(sqlite_url, job_id)) == 1
    assert server.status(job_id)["status"] == "paused"
    resumed = time.time()
    assert post(server, job_id, "resume").json()["status"] == "running"
    second = wait_until(lambda: batch_times(sqlite_url, job_id)[1:], timeout=DELAY_S + 10)[0]
    # The rest of the delay, not none (the paused time did not count) and not
    # a whole one (the sleep did not start over). Generous bounds.
    gap = second - resumed
    assert remaining - 1.0 <= gap, (gap, remaining)
    assert gap <= min(remaining + 1.5, DELAY_S - 0.3), (gap, remaining)
    assert post(server, job_id, "cancel").status_code in (200, 202)
    server.wait_status(job_id, "cancelled")


def test_a_paused_job_stays_paused_across_a_restart(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    job_id = server.start_job({"type": "counter", "to": 100000, "stepMs": 10})
    wait_until(lambda: ticks(server, job_id) >= 3)
    pause(server, job_id)
    before = ticks(server, job_id)
    assert server.stop() == 0
    assert "Traceback" not in server.log()
    assert "back in the queue" in server.log()  # re-queued by the shutdown itself
    again = make_server()
    job = again.status(job_id)
    assert job["status"] == "paused"  # re-queued paused: nobody claims it
    assert job["owner"] is None
    assert job["pausedAt"] is not None
    response = post(again, job_id, "resume")
    assert response.status_code == 200, response.text
    job = again.wait_status(job_id, "running")
    wait_until(lambda: ticks(again, job_id) > before)
    job = again.status(job_id)
    assert job["resumes"] == 1  # it went on from its saved place
    assert post(again, job_id, "cancel").status_code in (200, 202)
    again.wait_status(job_id, "cancelled")


@pytest.mark.postgres
@pytest.mark.parametrize("poll_only", [False, True], ids=["notify", "poll"])
def test_pause_and_resume_reach_the_owning_instance(
    pg_url: str, make_server: Callable[..., Server], poll_only: bool
) -> None:
    env = {"DATABASE_URL": pg_url, "JOBSUP_POLL_S": "0.5"}
    a = make_server(**env)
    b = make_server(**env)
    job_id = a.start_job(TICKER)
    job = a.wait_status(job_id, "running")
    owner, other = (a, b) if job["owner"] == instance(a) else (b, a)
    other.wait_status(job_id, "running")
    if poll_only:  # the request waits in the store for the owner's poll
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("UPDATE jobs SET pause_request = 'pause' WHERE id = %s", (job_id,))
    else:
        response = post(other, job_id, "pause")
        assert response.status_code in (200, 202), response.text
    owner.wait_status(job_id, "paused")
    other.wait_status(job_id, "paused")
    held = ticks(owner, job_id)
    response = post(other, job_id, "resume")
    assert response.status_code == 200, response.text
    wait_until(lambda: ticks(owner, job_id) > held)
    assert owner.status(job_id)["status"] == "running"
    # A pause asked through the other instance can be cancelled through it too.
    assert post(other, job_id, "pause").status_code in (200, 202)
    owner.wait_status(job_id, "paused")
    assert post(other, job_id, "cancel").status_code in (200, 202)
    owner.wait_status(job_id, "cancelled")


def instance(server: Server) -> str:
    return str(server.client.get("/healthz").json()["instance"])


def test_the_client_and_the_command_pause_and_resume(server: Server) -> None:
    from tests.test_client import client_for, jobsup

    job_id = server.start_job(TICKER)
    server.wait_status(job_id, "running")
    with client_for(server) as client:
        assert client.pause(job_id).status in ("pausing", "paused")
        server.wait_status(job_id, "paused")
        assert client.resume(job_id).status == "running"
    frozen = jobsup(server, "pause", job_id, "--freeze")
    assert frozen.returncode == 0, frozen.stderr
    assert frozen.stdout.split() == [job_id, "paused"]
    resumed = jobsup(server, "resume", job_id)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.split() == [job_id, "running"]
    again = jobsup(server, "resume", job_id)
    assert again.returncode != 0
    assert "not_paused" in again.stderr or "paused" in again.stderr


def test_a_dead_instance_paused_job_waits_paused_if_it_can_resume() -> None:
    registry.load(("tests.jobs",))
    resumable = pending_job("counter")
    resumable.status, resumable.owner, resumable.paused_at = JobStatus.PAUSED, "gone", now()
    rescued = recovery.rescued(resumable)
    assert rescued.status is JobStatus.PAUSED
    assert rescued.owner is None
    assert rescued.paused_at == resumable.paused_at
    other = pending_job("ticker")  # neither resumable nor idempotent
    other.status, other.owner = JobStatus.PAUSING, "gone"
    assert recovery.rescued(other).status is JobStatus.FAILED


def test_the_paused_gauge_counts_paused_jobs(server: Server) -> None:
    job_id = server.start_job(TICKER)
    server.wait_status(job_id, "running")
    pause(server, job_id)
    metrics = server.client.get("/metrics").text
    assert "jobsup_jobs_paused 1.0" in metrics
    assert "jobsup_jobs_running 1.0" in metrics  # it keeps its slot
    post(server, job_id, "resume")
    assert "jobsup_jobs_paused 0.0" in server.client.get("/metrics").text


@pytest.fixture
def paused_ctx() -> Iterator[tuple[JobContext, Any, int]]:
    """A context on a real cancel pipe: ctx, the progress pipe's reader, the cancel writer."""
    receive, send = multiprocessing.Pipe(duplex=False)
    read_end, write_end = os.pipe()
    flag = CancelPipe(read_end)
    yield JobContext("job-1", "sqlite:///unused.db", Channel(send, flag), flag), receive, write_end
    flag.close()
    for fd in (read_end, write_end):
        os.close(fd)
    receive.close()
    send.close()


def test_a_sleep_held_by_a_pause_goes_on_for_what_remained(paused_ctx: tuple) -> None:
    ctx, inbox, cancel_w = paused_ctx
    resumed_at: list[float] = []

    def resume_once_paused() -> None:
        message = protocol.decoder.decode(inbox.recv_bytes())  # blocks until it holds
        assert isinstance(message, protocol.Paused)
        resumed_at.append(time.monotonic())
        os.write(cancel_w, protocol.RESUME)

    os.write(cancel_w, protocol.PAUSE)  # asked before the sleep: it holds at once
    helper = threading.Thread(target=resume_once_paused)
    helper.start()
    ctx.sleep(0.2)
    ended = time.monotonic()
    helper.join()
    # Held until the resume, then the whole 0.2 s (none of it ran before the hold).
    assert ended - resumed_at[0] >= 0.2


def test_a_cancel_ends_a_hold(paused_ctx: tuple) -> None:
    ctx, inbox, cancel_w = paused_ctx
    os.write(cancel_w, protocol.PAUSE)
    ctx._cancel.read()  # as the child's watch thread does while the job computes
    helper = threading.Thread(
        target=lambda: (inbox.recv_bytes(), os.write(cancel_w, protocol.CANCEL))
    )
    helper.start()
    with pytest.raises(JobCancelled):
        ctx.checkpoint()
    helper.join()
    assert ctx.cancelled


def test_a_pause_asked_again_before_the_hold_saw_the_resume_is_reported_again(
    paused_ctx: tuple,
) -> None:
    ctx, inbox, cancel_w = paused_ctx
    os.write(cancel_w, protocol.PAUSE)
    ctx._cancel.read()  # as the child's watch thread does while the job computes
    reports: list[type] = []

    def next_paused() -> None:
        while True:
            message = protocol.decoder.decode(inbox.recv_bytes())
            reports.append(type(message))
            if isinstance(message, protocol.Paused):
                return

    def drive() -> None:
        next_paused()
        os.write(cancel_w, protocol.RESUME + protocol.PAUSE)  # resume and pause in one read
        next_paused()  # the second pause is reported too
        os.write(cancel_w, protocol.RESUME)

    helper = threading.Thread(target=drive, daemon=True)
    helper.start()
    ctx.progress(processed=1)  # a pause point too
    helper.join(30)
    assert reports == [protocol.Progress, protocol.Paused, protocol.Paused]


def test_a_job_paused_across_a_restart_times_out_unclaimed(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    job_id = server.start_job({"type": "counter", "to": 100000, "stepMs": 10})
    wait_until(lambda: ticks(server, job_id) >= 1)
    pause(server, job_id)
    assert server.stop() == 0
    again = make_server(JOBSUP_PAUSED_TIMEOUT_S="0.5", JOBSUP_CLEANUP_INTERVAL_S="0.5")
    job = again.wait_status(job_id, "cancelled")
    assert job["cancel"]["reason"] == "paused_timeout"
    assert job["pausedAt"] is None


def test_the_event_stream_says_pausing_paused_resumed(server: Server) -> None:
    from tests.test_client import client_for

    job_id = server.start_job({"type": "ticker", "to": 100000, "stepMs": 20})
    server.wait_status(job_id, "running")
    kinds: list[str] = []

    def follow() -> None:
        with client_for(server) as client:
            for event in client.events(job_id):
                kinds.append(event.kind)
                if event.kind in ("resumed", "finished"):
                    return

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    wait_until(lambda: kinds)  # the snapshot: the stream is open
    pause(server, job_id)
    assert post(server, job_id, "resume").status_code == 200
    follower.join(30)
    changes = [k for k in kinds if k not in ("snapshot", "progress", "partial")]
    assert changes == ["pausing", "paused", "resumed"], kinds
    assert post(server, job_id, "cancel").status_code in (200, 202)


def test_pause_and_resume_are_audited(server: Server) -> None:
    job_id = server.start_job(TICKER)
    server.wait_status(job_id, "running")
    pause(server, job_id)
    post(server, job_id, "resume")
    entries = server.client.get("/admin/audit").json()
    seen = {(e["action"], e["target"], e["outcome"]) for e in entries}
    assert ("job.resume", job_id, 200) in seen
    assert {("job.pause", job_id, 200), ("job.pause", job_id, 202)} & seen
