"""Release attacks from outside: kill -9 and SIGTERM of fronts, forkservers and
job children around pauses, freezes, chains, logs and hostile jobs."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server, wait_until
from tests.helpers import alive, proc_stat, session_pids

FINAL = ("completed", "failed", "cancelled")


def post(server: Server, job_id: str, action: str, body: Any = None) -> Any:
    return server.client.post(f"/admin/jobs/{job_id}/{action}", json=body)


def ticks(server: Server, job_id: str) -> int:
    return int((server.status(job_id)["progress"] or {}).get("processed") or 0)


def state_of(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def job_children(server: Server) -> list[int]:
    """Every process of the server's session but the front: forkserver, children, spares."""
    return [p for p in session_pids(server.pid) if p != server.pid]


def test_a_cooperatively_paused_job_survives_a_kill_9_and_resumes(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    job_id = server.start_job({"type": "counter", "to": 100000, "stepMs": 10})
    wait_until(lambda: ticks(server, job_id) >= 3)
    assert post(server, job_id, "pause").status_code in (200, 202)
    server.wait_status(job_id, "paused")
    held = ticks(server, job_id)
    others = job_children(server)
    assert others
    server.kill()
    # The hold wakes on the pipe's end: nothing of the dead front lingers.
    wait_until(lambda: not any(alive(p) for p in others), timeout=20)
    again = make_server(DATABASE_URL=server.env["DATABASE_URL"])
    job = again.wait_status(job_id, "paused", timeout=20)
    assert job["owner"] is None
    assert post(again, job_id, "resume").status_code == 200
    # It runs again (from its last place that reached the database: a place saved
    # less than JOBSUP_PROGRESS_FLUSH_S before the kill may be run again).
    wait_until(lambda: ticks(again, job_id) > held, timeout=20)
    assert post(again, job_id, "cancel").status_code in (200, 202)
    again.wait_status(job_id, "cancelled")


def test_a_frozen_job_is_thawed_and_ends_at_a_sigterm(make_server: Callable[..., Server]) -> None:
    server = make_server()
    job_id = server.start_job({"type": "ticker", "stepMs": 20})
    wait_until(lambda: ticks(server, job_id) >= 3)
    assert post(server, job_id, "pause", {"mode": "freeze"}).status_code in (200, 202)
    server.wait_status(job_id, "paused")
    others = job_children(server)
    assert any(state_of(p) == "T" for p in others)
    assert server.stop() == 0
    wait_until(lambda: not [(p, state_of(p)) for p in others if alive(p)], timeout=20)
    again = make_server(DATABASE_URL=server.env["DATABASE_URL"])
    job = again.status(job_id)
    assert job["status"] == "cancelled", job


def test_a_job_in_pausing_at_a_sigterm_is_stopped(make_server: Callable[..., Server]) -> None:
    server = make_server()
    job_id = server.start_job({"type": "stubborn", "seconds": 600})
    server.wait_status(job_id, "running")
    # Past its last context call (its progress line): a pause asked before it would hold there.
    wait_until(lambda: server.status(job_id)["progress"]["message"] == "stuck inside a batch")
    assert post(server, job_id, "pause").status_code in (200, 202)
    server.wait_status(job_id, "pausing")
    others = job_children(server)
    assert server.stop() == 0
    wait_until(lambda: not [(p, state_of(p)) for p in others if alive(p)], timeout=20)
    again = make_server(DATABASE_URL=server.env["DATABASE_URL"])
    assert again.status(job_id)["status"] == "cancelled"


def test_a_killed_forkserver_loses_no_running_job_and_stops_no_next_one(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    job_id = server.start_job({"type": "ticker", "to": 100, "stepMs": 20})
    endless = server.start_job({"type": "ticker"})
    wait_until(lambda: ticks(server, job_id) >= 3 and ticks(server, endless) >= 3)
    child = server.status(job_id)["pid"]
    forkserver = proc_stat(child)[0]
    assert forkserver != server.pid
    os.kill(forkserver, signal.SIGKILL)
    cancelled = server.client.post(f"/admin/jobs/{endless}/cancel")  # it hears its cancel
    assert cancelled.json()["status"] == "cancelled", cancelled.text
    # Its child runs on, reparented: the job ends as it says, its end seen on
    # its pidfd (no exit status comes: its reaper is gone). The spare made by
    # the dead forkserver is seen gone at once, and the next jobs run.
    for _ in range(3):
        quick = server.start_job({"type": "quick"})
        assert server.wait_status(quick, *FINAL, timeout=30)["status"] == "completed"
    job = server.wait_status(job_id, *FINAL, timeout=30)
    assert (job["status"], job["result"]) == ("completed", {"ticks": 100}), job
    assert job["attempts"] == 1
    wait_until(lambda: not alive(child))
    resources = wait_until(lambda: server.status(job_id)["resources"])
    assert resources["ended"] == "exited"
    assert resources["exitCode"] == 0


def test_a_killed_forkserver_leaves_a_frozen_job_frozen_and_a_killed_one_killed(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    frozen = server.start_job({"type": "ticker", "to": 60, "stepMs": 20})
    stubborn = server.start_job({"type": "stubborn", "seconds": 60, "ignoreTerm": True})
    wait_until(lambda: ticks(server, frozen) >= 3)
    wait_until(lambda: server.status(stubborn)["progress"]["message"] == "stuck inside a batch")
    assert post(server, frozen, "pause", {"mode": "freeze"}).status_code == 200
    child = server.status(frozen)["pid"]
    wait_until(lambda: state_of(child) == "T")
    os.kill(proc_stat(child)[0], signal.SIGKILL)  # the forkserver
    # Orphaned while stopped, its group got SIGHUP and SIGCONT from the kernel:
    # it lives on, and is frozen again.
    wait_until(lambda: "the forkserver is gone" in server.log())
    wait_until(lambda: state_of(child) == "T")
    assert server.status(frozen)["status"] == "paused"
    # A child past its forkserver that must be SIGKILLed ends killed, as any other.
    post(server, stubborn, "cancel")
    job = server.wait_status(stubborn, *FINAL, timeout=30)
    assert (job["status"], job["cancel"]["mode"]) == ("cancelled", "killed"), job
    assert post(server, frozen, "resume").status_code == 200
    job = server.wait_status(frozen, *FINAL, timeout=30)
    assert (job["status"], job["result"]) == ("completed", {"ticks": 60}), job


def test_a_job_that_closes_its_output_ends_normally(server: Server) -> None:
    job_id = server.start_job({"type": "rogue", "closeOutput": True})
    job = server.wait_status(job_id, *FINAL)
    assert job["status"] == "completed", job
    wait_until(lambda: server.status(job_id)["resources"])


def test_a_stderr_flood_without_newlines_is_bounded(make_server: Callable[..., Server]) -> None:
    server = make_server(JOBSUP_JOB_LOG_BYTES="200000")
    job_id = server.start_job({"type": "rogue", "floodBytes": 30_000_000})
    job = server.wait_status(job_id, *FINAL, timeout=60)
    assert job["status"] == "completed", job
    resources = wait_until(lambda: server.status(job_id)["resources"])
    assert len(resources["stderrTail"]) <= 8192 + 100
    logs = server.client.get(f"/admin/jobs/{job_id}/logs", params={"limit": 1000}).json()
    total = sum(len(line["text"]) for line in logs["lines"])
    assert total <= 300_000, total


def test_daemons_of_daemons_do_not_outlive_a_crashed_job(server: Server) -> None:
    job_id = server.start_job({"type": "rogue", "daemons": True, "how": "wait"})
    daemons = wait_until(lambda: (server.status(job_id)["result"] or {}).get("daemons"))
    child = server.status(job_id)["pid"]
    os.kill(child, signal.SIGKILL)
    server.wait_status(job_id, *FINAL)
    wait_until(lambda: not any(alive(p) for p in daemons), timeout=20)


def test_daemons_of_daemons_do_not_outlive_a_completed_job(server: Server) -> None:
    job_id = server.start_job({"type": "rogue", "daemons": True})
    job = server.wait_status(job_id, *FINAL)
    daemons = job["result"]["daemons"]
    wait_until(lambda: not any(alive(p) for p in daemons), timeout=20)
    assert job["leftoversKilled"] >= 2


def test_a_grandchild_past_the_memory_limit_fails_alone(server: Server) -> None:
    job_id = server.start_job({"type": "rogue", "grandchildMib": 400, "limits": {"memoryMiB": 200}})
    job = server.wait_status(job_id, *FINAL)
    assert job["status"] == "completed", job
    assert job["result"]["grandchildExit"] != 0


def log_lines(server: Server, job_id: str) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if after is not None:
            params["after"] = after
        response = server.client.get(f"/admin/jobs/{job_id}/logs", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        lines += page["lines"]
        if not page["lines"]:
            return lines
        after = page["nextAfter"]


def test_a_printing_job_resumed_after_a_kill_9_keeps_one_numbered_log(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    job_id = server.start_job({"type": "printer", "to": 100000, "stepMs": 5})
    wait_until(lambda: len(log_lines(server, job_id)) >= 20, timeout=20)
    server.kill()
    again = make_server(DATABASE_URL=server.env["DATABASE_URL"])
    wait_until(lambda: again.status(job_id)["resumes"] >= 1 and ticks(again, job_id) > 0, 30)
    before = len(log_lines(again, job_id))
    wait_until(lambda: len(log_lines(again, job_id)) > before + 20, timeout=20)
    assert post(again, job_id, "cancel").status_code in (200, 202)
    again.wait_status(job_id, "cancelled")
    lines = log_lines(again, job_id)
    numbers = [line["line"] for line in lines]
    assert numbers == sorted(set(numbers)), "numbers repeat or go back"
    assert "Traceback" not in again.log()


WORKER = ["python", "-m", "supervisor", "worker"]
CLUSTER = {
    "JOBSUP_HEARTBEAT_S": "0.3",
    "JOBSUP_NODE_TIMEOUT_S": "2",
    "JOBSUP_POLL_S": "0.5",
    "JOBSUP_EVENTS_FOLLOW_S": "0.2",
}


@pytest.mark.postgres
def test_a_worker_killed_while_its_job_is_paused_leaves_it_paused_and_resumable(
    pg_url: str, make_server: Callable[..., Server]
) -> None:
    import sys

    web = make_server(DATABASE_URL=pg_url, JOBSUP_MAX_CONCURRENT_JOBS="0", **CLUSTER)
    worker = make_server(command=[sys.executable, *WORKER[1:]], DATABASE_URL=pg_url, **CLUSTER)
    job_id = web.start_job({"type": "counter", "to": 100000, "stepMs": 10})
    wait_until(lambda: ticks(web, job_id) >= 3, timeout=20)
    assert post(web, job_id, "pause").status_code in (200, 202)
    web.wait_status(job_id, "paused", timeout=20)
    held = ticks(web, job_id)
    others = job_children(worker)
    worker.kill()
    wait_until(lambda: not any(alive(p) for p in others), timeout=20)
    job = wait_until(
        lambda: (j := web.status(job_id))["owner"] is None and j["status"] == "paused" and j,
        timeout=20,
    )
    assert job["pausedAt"] is not None
    again = make_server(command=[sys.executable, *WORKER[1:]], DATABASE_URL=pg_url, **CLUSTER)
    assert post(web, job_id, "resume").status_code == 200
    wait_until(lambda: ticks(web, job_id) > held, timeout=20)
    assert web.status(job_id)["resumes"] >= 1
    assert post(web, job_id, "cancel").status_code in (200, 202)
    web.wait_status(job_id, "cancelled", timeout=20)
    assert again.process is not None


@pytest.mark.postgres
def test_two_instances_racing_one_approval_move_it_once(
    pg_url: str, make_server: Callable[..., Server]
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    a = make_server(DATABASE_URL=pg_url, **CLUSTER)
    b = make_server(DATABASE_URL=pg_url, **CLUSTER)
    for _ in range(5):
        step = a.start_job({"type": "quick", "approval": True})
        b.wait_status(step, "awaiting_approval")
        calls = [(s, step, action) for action in ("approve", "reject") for s in (a, b)]
        with ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(lambda c: post(*c).status_code, calls))
        assert codes.count(200) == 1, codes
        assert all(code == 409 for code in codes if code != 200), codes
        a.wait_status(step, "completed", "cancelled")


def test_a_plan_whose_dry_run_is_stopped_by_sigterm_goes_on_after_the_restart(
    make_server: Callable[..., Server],
) -> None:
    from tests.helpers import WINDOW_MS, group_body

    server = make_server()
    body = group_body(inactive=30, active=1, admins_inactive=1)
    assert server.client.put("/admin/groups/g-plan", json=body).status_code == 200
    plan = server.client.post(
        "/admin/groups/g-plan/removal-plans",
        json={"batchSize": 1, "delayMs": 300, "inactivityWindowMs": WINDOW_MS},
    )
    assert plan.status_code == 202, plan.text
    dry_id, real_id = plan.json()["dryRunJobId"], plan.json()["removalJobId"]
    # Stopped during the dry run, or (on a fast machine) just after it.
    server.wait_status(dry_id, "running", "completed")
    assert server.stop() == 0
    again = make_server(DATABASE_URL=server.env["DATABASE_URL"])
    dry = again.wait_status(dry_id, *FINAL, timeout=60)
    real = again.status(real_id)
    if dry["status"] == "completed":
        real = again.wait_status(real_id, "awaiting_approval")
        assert len(real["config"]["onlyWhatsappIds"]) == 30
    else:
        assert real["status"] == "cancelled", (dry, real)


@pytest.mark.postgres
def test_an_approval_that_loses_its_row_to_a_rival_is_refused(pg_url: str) -> None:
    """Approve reads the step awaiting, then its UPDATE waits on a rival's lock; the
    rival (a reject, an expiry) ends the step: the approval changed nothing and must
    say so, not answer 200 for a job that is cancelled."""
    import threading

    import psycopg

    from supervisor.store import chains
    from tests.test_chain_store import BY, _held, _insert
    from workers.db import connect
    from workers.times import now_ms

    db = connect(pg_url)
    try:
        step = _insert(db, _held(None, approval=True))
        with psycopg.connect(pg_url) as rival:
            rival.execute("SELECT 1 FROM jobs WHERE id = %s FOR UPDATE", (step.id,))
            raised: list[BaseException] = []

            def approve() -> None:
                try:
                    chains.approve(db, step.id, BY, now_ms())
                except BaseException as exc:
                    raised.append(exc)

            thread = threading.Thread(target=approve)
            thread.start()
            name = pg_url.rsplit("/", 1)[1]
            with psycopg.connect(pg_url, autocommit=True) as watch:
                wait_until(
                    lambda: watch.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                        " AND wait_event_type = 'Lock'",
                        (name,),
                    ).fetchone()[0]
                )
            rival.execute("UPDATE jobs SET status = 'cancelled' WHERE id = %s", (step.id,))
            rival.commit()
            thread.join(10)
        assert len(raised) == 1, raised
        assert isinstance(raised[0], chains.NotAwaiting), raised
        assert raised[0].status == "cancelled"
        row = db.one("SELECT status, approved_by FROM jobs WHERE id = ?", (step.id,))
        assert row == ("cancelled", None)
    finally:
        db.close()


@pytest.mark.postgres
def test_chains_and_notifications_survive_dropped_connections_and_a_killed_worker(
    pg_url: str, make_server: Callable[..., Server]
) -> None:
    """Web (no slots) + two workers; every backend of the database terminated again
    and again, one worker kill -9'd and restarted, while chains run. Then every step
    ends, a step ends only as its parent allows, and each end is notified under one
    delivery id (sent again only with the same id)."""
    import itertools
    import json
    import sys
    import threading
    from collections import defaultdict

    import psycopg

    from tests.test_notify import Receiver, _env

    receiver = Receiver()
    try:
        notify = {**CLUSTER, **_env(receiver.url)}
        web = make_server(DATABASE_URL=pg_url, JOBSUP_MAX_CONCURRENT_JOBS="0", **notify)
        command = [sys.executable, *WORKER[1:]]
        workers = [make_server(command=command, DATABASE_URL=pg_url, **notify) for _ in range(2)]
        chains = []
        for i in range(6):
            steps = [
                {"type": "sleepy", "steps": 3, "stepMs": 100},
                {"type": "quick", "value": i},
                {"type": "sleepy", "steps": 2, "stepMs": 50},
            ]
            response = web.client.post("/admin/chains", json={"steps": steps})
            assert response.status_code == 202, response.text
            chains.append(response.json()["jobIds"])
        name = pg_url.rsplit("/", 1)[1]
        stop = threading.Event()
        errors: list[str] = []

        outages: list[int] = []  # one entry per round of terminated connections

        def terminate() -> None:
            with psycopg.connect(pg_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as c:
                while not stop.wait(0.4):
                    c.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = %s AND pid <> pg_backend_pid()",
                        (name,),
                    )
                    outages.append(1)

        def poll() -> None:
            while not stop.is_set():
                for ids in chains:
                    try:
                        status = web.client.get(f"/admin/jobs/{ids[0]}/status").status_code
                    except Exception:
                        continue
                    if status >= 500 and status != 503:
                        errors.append(str(status))

        threads = [threading.Thread(target=terminate), threading.Thread(target=poll)]
        for thread in threads:
            thread.start()
        # A worker killed a few outages in, then as many outages again.
        wait_until(lambda: len(outages) >= 4, timeout=30)
        workers[0].kill()
        wait_until(lambda: len(outages) >= 11, timeout=30)
        stop.set()
        for thread in threads:
            thread.join()
        assert not errors, errors
        # A start during the outage would exit (code 4): the platform restarts it later.
        workers.append(make_server(command=command, DATABASE_URL=pg_url, **notify))
        every = [job_id for ids in chains for job_id in ids]
        for job_id in every:
            web.wait_status(job_id, *FINAL, timeout=60)
        for ids in chains:
            statuses = [web.status(job_id)["status"] for job_id in ids]
            for before, after in itertools.pairwise(statuses):
                if before != "completed":
                    assert after == "cancelled", statuses
        with psycopg.connect(pg_url, autocommit=True) as c:
            undelivered = c.execute(
                "SELECT count(*) FROM outbox WHERE state <> 'delivered'"
            ).fetchone()[0]
        wait_until(
            lambda: len({json.loads(b)["job"]["id"] for _, b in receiver.accepted()}) == len(every),
            timeout=90,
        )
        deliveries: dict[str, set[str]] = defaultdict(set)
        for headers, body in receiver.accepted():
            deliveries[json.loads(body)["job"]["id"]].add(headers["X-Jobsup-Delivery"])
        assert all(len(d) == 1 for d in deliveries.values()), (deliveries, undelivered)
    finally:
        receiver.close()


@pytest.mark.parametrize("mode", ["cooperative", "freeze"])
def test_a_resumed_job_past_its_timeout_fails_timeout_and_leaves_nothing(
    server: Server, mode: str
) -> None:
    # Paused, its timeout is held (tests/test_job_limits.py); resumed, it runs
    # out, and a job that was frozen is stopped like any other.
    job_id = server.start_job({"type": "ticker", "stepMs": 20, "limits": {"timeoutS": 3}})
    wait_until(lambda: ticks(server, job_id) >= 3)
    child = server.status(job_id)["pid"]
    assert post(server, job_id, "pause", {"mode": mode}).status_code in (200, 202)
    server.wait_status(job_id, "paused")
    assert post(server, job_id, "resume").status_code == 200
    job = server.wait_status(job_id, *FINAL, timeout=20)
    assert job["status"] == "failed", job
    assert job["error"]["reason"] == "timeout", job
    assert job["pausedAt"] is None
    wait_until(lambda: not alive(child))


def test_a_notification_in_flight_at_a_kill_9_is_sent_again_with_its_delivery_id(
    make_server: Callable[..., Server],
) -> None:
    """The receiver holds the first POST; the front dies meanwhile. The row stays
    leased; after the lease (60 s) the restarted front sends it again, same id."""
    import json
    import threading

    from tests.test_notify import Receiver, _env

    receiver = Receiver()
    held = threading.Event()
    first = receiver._server.RequestHandlerClass.do_POST

    def hold_first(handler: Any) -> None:
        if not held.is_set():
            held.set()
            handler.rfile.read(int(handler.headers["Content-Length"]))
            threading.Event().wait(120)  # never answered: the sender dies first
            return
        first(handler)

    receiver._server.RequestHandlerClass.do_POST = hold_first
    try:
        server = make_server(**_env(receiver.url))
        job_id = server.start_job({"type": "quick"})
        server.wait_status(job_id, "completed")
        wait_until(held.is_set, timeout=20)
        server.kill()
        again = make_server(DATABASE_URL=server.env["DATABASE_URL"], **_env(receiver.url))
        wait_until(lambda: receiver.accepted(), timeout=120)
        (headers, body), *more = receiver.accepted()
        assert not more
        assert json.loads(body)["job"]["id"] == job_id
        assert headers["X-Jobsup-Attempt"] == "2"
        rows = wait_until(
            lambda: [
                r
                for r in again.client.get("/admin/notifications").json()
                if r["state"] == "delivered"
            ],
            timeout=20,
        )
        assert [r["delivery"] for r in rows] == [headers["X-Jobsup-Delivery"]]
    finally:
        receiver.close()


def test_daemons_of_daemons_do_not_outlive_a_kill_9_of_the_front(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    job_id = server.start_job({"type": "rogue", "daemons": True, "how": "wait"})
    daemons = wait_until(lambda: (server.status(job_id)["result"] or {}).get("daemons"))
    child = server.status(job_id)["pid"]
    server.kill()
    wait_until(lambda: not alive(child), timeout=20)
    try:
        wait_until(lambda: not any(alive(p) for p in daemons), timeout=10)
    finally:
        for pid in daemons:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_frozen_job_does_not_stay_stopped_after_a_kill_9_of_the_front(
    make_server: Callable[..., Server],
) -> None:
    """Its forkserver outlives the front by an instant: it thaws the frozen group,
    whose child then sees its pipe's end and stops as any orphaned child does."""
    server = make_server()
    job_id = server.start_job({"type": "ticker", "stepMs": 20})
    wait_until(lambda: ticks(server, job_id) >= 3)
    child = server.status(job_id)["pid"]
    assert post(server, job_id, "pause", {"mode": "freeze"}).status_code in (200, 202)
    server.wait_status(job_id, "paused")
    assert state_of(child) == "T"
    server.kill()
    try:
        wait_until(lambda: not alive(child), timeout=15)
    finally:
        if alive(child):
            os.killpg(os.getpgid(child), signal.SIGKILL)


def test_the_last_lines_of_a_job_stopped_by_a_shutdown_are_kept(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    job_id = server.start_job({"type": "print", "lines": 3000, "wait": True})
    server.wait_status(job_id, "running")
    wait_until(lambda: len(log_lines(server, job_id)) >= 1, timeout=20)
    assert server.stop() == 0
    again = make_server(DATABASE_URL=server.env["DATABASE_URL"])
    assert again.status(job_id)["status"] == "cancelled"
    texts = [line["text"] for line in log_lines(again, job_id)]
    assert sum(text.startswith("line ") for text in texts) == 3000, texts[-3:]
