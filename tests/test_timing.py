"""Delayed, prioritised, retried and idempotent starts, against real servers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from supervisor.state import STORED_BEFORE, TERMINAL, TRANSITIONS, JobStatus, check_transition
from supervisor.store import Store
from tests.conftest import Server, wait_until
from tests.fake_evolution import FakeEvolution, Fault, running
from tests.helpers import removal, rows
from tests.test_durability import stored
from tests.test_evolution import (
    GROUP,
    IDLE,
    evolution_env,
    history,
    key_of,
    participants,
    prepared,
    sent_id,
)
from workers.db import connect
from workers.times import now_ms

S = JobStatus


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _start(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    response = server.client.post("/admin/jobs/start", json=body)
    assert response.status_code == 202, response.text
    return dict(response.json())


def _refused(server: Server, body: dict[str, Any], field: str) -> str:
    response = server.client.post("/admin/jobs/start", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["field"] == field, error
    return str(error["message"])


# -- the state table -------------------------------------------------------------


def test_scheduled_waits_before_pending_and_can_be_cancelled() -> None:
    assert TRANSITIONS[S.SCHEDULED] == {S.PENDING, S.CANCELLED}
    check_transition(S.RUNNING, S.SCHEDULED)  # a failed attempt waits for its retry
    check_transition(S.PENDING, S.SCHEDULED)  # its child died before it began
    with pytest.raises(Exception, match="scheduled -> running"):
        check_transition(S.SCHEDULED, S.RUNNING)  # only a claim, through pending
    # The storage twin: a claim's pending may replace a stored scheduled, never a final state.
    assert S.SCHEDULED in STORED_BEFORE[S.PENDING]
    assert S.RUNNING in STORED_BEFORE[S.SCHEDULED]
    assert not STORED_BEFORE[S.SCHEDULED] & TERMINAL


# -- delayed ----------------------------------------------------------------------


def test_a_delayed_job_waits_scheduled_then_runs_at_its_time(server: Server) -> None:
    answer = _start(server, {"type": "quick", "value": 7, "delayS": 1.0})
    job_id = answer["jobId"]
    assert answer["status"] == "scheduled"
    run_at = _at(answer["runAt"])
    listed = server.client.get("/admin/jobs", params={"status": "scheduled"}).json()
    assert [j["id"] for j in listed] == [job_id]
    job = server.wait_status(job_id, "completed", timeout=10)
    assert _at(job["startedAt"]) >= run_at  # never early
    assert job["result"] == {"value": 7}
    assert job["runAt"] == answer["runAt"]
    assert server.client.get("/admin/jobs", params={"status": "scheduled"}).json() == []


def test_run_at_is_a_time_and_a_scheduled_job_can_be_cancelled(server: Server) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    fires = _start(server, {"type": "quick", "runAt": soon})["jobId"]
    waits = _start(server, {"type": "quick", "runAt": later})["jobId"]
    server.wait_status(fires, "completed", timeout=10)
    response = server.client.post(f"/admin/jobs/{waits}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    job = server.status(waits)
    assert job["status"] == "cancelled"
    assert job["startedAt"] is None


def test_bad_timing_fields_are_refused_naming_them(server: Server) -> None:
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    far = (datetime.now(UTC) + timedelta(days=400)).isoformat()
    _refused(server, {"type": "quick", "runAt": past}, "runAt")
    _refused(server, {"type": "quick", "runAt": far}, "runAt")
    _refused(server, {"type": "quick", "runAt": "2030-01-01T00:00:00"}, "runAt")  # no zone
    _refused(server, {"type": "quick", "runAt": "tomorrow"}, "runAt")
    _refused(server, {"type": "quick", "delayS": -1}, "delayS")
    _refused(server, {"type": "quick", "delayS": 1, "runAt": far}, "delayS")
    _refused(server, {"type": "quick", "priority": 101}, "priority")
    _refused(server, {"type": "quick", "priority": "high"}, "priority")
    _refused(server, {"type": "quick", "retry": {"maxAttempts": 11}}, "retry.maxAttempts")
    _refused(server, {"type": "quick", "retry": {"maxAttempts": 0}}, "retry.maxAttempts")
    _refused(server, {"type": "quick", "idempotencyKey": ""}, "idempotencyKey")
    _refused(server, {"type": "quick", "nope": 1}, "nope")  # the config stays strict
    assert server.client.get("/admin/jobs").json() == []  # nothing half-written


# -- priority ---------------------------------------------------------------------


def _blocker(server: Server) -> str:
    job_id = server.start_job({"type": "sleepy", "steps": 1, "stepMs": 60_000})
    server.wait_status(job_id, "running")
    return job_id


def _started_order(server: Server, ids: list[str]) -> list[str]:
    jobs = [server.wait_status(i, "completed", timeout=30) for i in ids]
    return [j["id"] for j in sorted(jobs, key=lambda j: (j["startedAt"], j["id"]))]


def test_a_backlog_starts_by_priority_then_arrival(make_server: Callable[..., Server]) -> None:
    server = make_server(JOBSUP_MAX_CONCURRENT_JOBS="1")
    blocker = _blocker(server)
    priorities = [0, 5, -5, 10, 0]
    ids = [server.start_job({"type": "quick", "priority": p}) for p in priorities]
    assert server.client.post(f"/admin/jobs/{blocker}/cancel").status_code in (200, 202)
    expected = [ids[3], ids[1], ids[0], ids[4], ids[2]]
    assert _started_order(server, ids) == expected
    assert [server.status(i)["priority"] for i in expected] == [10, 5, 0, 0, -5]


def test_aging_lets_a_low_priority_job_through_a_stream_of_high_ones(
    make_server: Callable[..., Server],
) -> None:
    # One point per 0.1 s waited: the low job (0) outranks a high one (10)
    # created more than a second after it.
    server = make_server(JOBSUP_MAX_CONCURRENT_JOBS="1", JOBSUP_PRIORITY_AGING_S="0.1")
    high = {"type": "sleepy", "steps": 1, "stepMs": 150, "priority": 10}
    blocker = _blocker(server)
    low = server.start_job({"type": "quick", "priority": 0})
    early = [server.start_job(high) for _ in range(3)]
    server.client.post(f"/admin/jobs/{blocker}/cancel")
    stream: list[str] = []

    def low_ran() -> bool:  # keep high ones waiting all along until it does
        if server.status(low)["status"] == "completed":
            return True
        waiting = server.client.get("/admin/jobs", params={"status": "pending"}).json()
        if len(waiting) < 3:
            stream.append(server.start_job(high))
        return False

    wait_until(low_ran, timeout=30, interval=0.05)
    low_job = server.status(low)
    created = {i: _at(server.status(i)["createdAt"]) for i in early}
    assert all(c - _at(low_job["createdAt"]) < timedelta(seconds=1) for c in created.values())
    for job_id in early:  # priority: these outranked the older low job
        assert server.wait_status(job_id, "completed")["startedAt"] < low_job["startedAt"]
    # Aging: high jobs created before the low one started still waited behind it.
    passed = [
        i
        for i in stream
        if server.status(i)["createdAt"] < low_job["startedAt"]
        and (server.status(i)["startedAt"] or "9") > low_job["startedAt"]
    ]
    assert passed, "no high-priority job was waiting when the low one ran"


# -- retries ----------------------------------------------------------------------


def test_a_job_that_crashes_twice_then_succeeds(server: Server, tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    body = {"type": "flaky", "path": str(counter), "crashes": 2}
    job_id = server.start_job(body | {"retry": {"maxAttempts": 3, "backoffS": 0.5}})
    waiting = server.wait_status(job_id, "scheduled")  # between attempts
    assert waiting["error"]["reason"] == "crashed"
    job = server.wait_status(job_id, "completed", timeout=20)
    assert job["attempts"] == 3
    assert job["result"] == {"runs": 3}
    assert job["error"] is None
    errors = job["attemptErrors"]
    assert [e["attempt"] for e in errors] == [1, 2]
    assert all(e["error"]["reason"] == "crashed" for e in errors)
    assert job["retry"]["maxAttempts"] == 3
    assert counter.read_text() == "3"


def test_retries_stop_at_max_attempts_and_exceptions_are_not_retried(
    server: Server, tmp_path: Path
) -> None:
    crashing = {"type": "flaky", "path": str(tmp_path / "a"), "crashes": 9}
    limited = server.start_job(crashing | {"retry": {"maxAttempts": 2, "backoffS": 0}})
    job = server.wait_status(limited, "failed", timeout=20)
    assert job["attempts"] == 2
    assert len(job["attemptErrors"]) == 2  # the final failure is listed too
    assert job["error"]["reason"] == "crashed"
    # The type's own policy (3 attempts) when the start says nothing.
    by_type = server.start_job({"type": "flaky", "path": str(tmp_path / "b"), "crashes": 9})
    assert server.wait_status(by_type, "failed", timeout=20)["attempts"] == 3
    raising = server.start_job({"type": "flaky", "path": str(tmp_path / "c"), "raises": True})
    job = server.wait_status(raising, "failed", timeout=20)
    assert job["attempts"] == 1
    assert job["error"]["type"] == "ValueError"
    # A type without a policy runs once.
    assert server.wait_status(server.start_job({"type": "quick"}), "completed")["retry"] is None


def test_a_job_interrupted_by_its_instance_dying_is_retried(server: Server, tmp_path: Path) -> None:
    body = {"type": "flaky", "path": str(tmp_path / "runs"), "crashes": 1, "hangs": True}
    job_id = server.start_job(body | {"retry": {"maxAttempts": 2, "backoffS": 0}})
    server.wait_status(job_id, "running")
    # Killed once its start is stored: a job stored pending (its running
    # write still on its way) never began, and is handed back untried.
    url = server.env["DATABASE_URL"]
    wait_until(lambda: stored(url, job_id)["status"] == "running")
    server.kill()  # SIGKILL: the next start rescues the job
    server.start()
    job = server.wait_status(job_id, "completed", timeout=20)
    assert job["attempts"] == 2
    assert [e["error"]["reason"] for e in job["attemptErrors"]] == ["interrupted"]


# -- idempotency keys -------------------------------------------------------------


def test_an_idempotency_key_returns_the_first_job(server: Server) -> None:
    body = {"type": "quick", "value": 1, "idempotencyKey": "weekly-2026-49"}
    first = _start(server, body)
    again = server.client.post("/admin/jobs/start", json=body)
    assert again.status_code == 200, again.text
    assert again.json()["jobId"] == first["jobId"]
    assert again.json()["replayed"] is True
    other = _start(server, body | {"idempotencyKey": "weekly-2026-50"})
    assert other["jobId"] != first["jobId"]
    assert len(server.client.get("/admin/jobs").json()) == 2


def test_an_idempotency_key_holds_across_instances_and_a_delayed_job_runs_on_any(
    pg_url: str, make_server: Callable[..., Server]
) -> None:  # pg_url first: its database outlives the servers
    servers = [make_server(DATABASE_URL=pg_url) for _ in range(2)]
    for round_ in range(3):  # both instances at once, each time: one job
        body = {"type": "quick", "idempotencyKey": f"race-{round_}"}
        answers: list[Any] = [None, None]

        def post(i: int, body: dict[str, Any] = body, answers: list[Any] = answers) -> None:
            answers[i] = servers[i].client.post("/admin/jobs/start", json=body)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(a.status_code for a in answers) == [200, 202], [a.text for a in answers]
        assert answers[0].json()["jobId"] == answers[1].json()["jobId"]
    stored = rows(pg_url, "SELECT idempotency_key FROM jobs")
    assert sorted(r["idempotency_key"] for r in stored) == [f"race-{i}" for i in range(3)]
    wait_until(
        lambda: all(r["status"] == "completed" for r in rows(pg_url, "SELECT status FROM jobs"))
    )
    # A job scheduled through one instance runs when it is due on whichever is up.
    delayed = _start(servers[0], {"type": "quick", "value": 3, "delayS": 1})["jobId"]
    servers[0].stop()
    assert servers[1].wait_status(delayed, "completed", timeout=15)["result"] == {"value": 3}


def test_the_claim_reads_its_order_from_an_index(sqlite_url: str) -> None:
    """No sort of every pending job at each claim: 100k waiting jobs cost what 10 do."""
    Store(sqlite_url).migrate()
    db = connect(sqlite_url)
    try:
        claim = (
            "SELECT id FROM jobs WHERE status = 'pending' AND owner IS NULL"
            " ORDER BY queue_rank, id LIMIT 4"
        )
        plan = " ".join(str(r[-1]) for r in db.query(f"EXPLAIN QUERY PLAN {claim}"))
    finally:
        db.close()
    assert "jobs_claimable" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


def test_a_schedule_starts_its_job_with_the_start_fields(
    make_server: Callable[..., Server], sqlite_url: str
) -> None:
    server = make_server(JOBSUP_POLL_S="0.2")
    job = {"type": "quick", "value": 5, "priority": 7, "delayS": 0.5, "retry": {"maxAttempts": 2}}
    schedule = {"cron": "0 3 * * 1", "timezone": "UTC", "job": job}
    response = server.client.put("/admin/schedules/weekly", json=schedule)
    assert response.status_code in (200, 201), response.text
    refused = server.client.put(
        "/admin/schedules/bad", json=schedule | {"job": {**job, "priority": 500}}
    )
    assert refused.status_code == 400, refused.text
    db = connect(sqlite_url)
    try:  # its tick is due now
        db.execute("UPDATE schedules SET next_fire_at = ? WHERE name = 'weekly'", (now_ms(),))
    finally:
        db.close()
    started = wait_until(lambda: server.client.get("/admin/jobs").json(), timeout=15)[0]
    assert started["status"] in ("scheduled", "pending", "running", "completed")
    done = server.wait_status(started["id"], "completed")
    assert (done["priority"], done["retry"]["maxAttempts"]) == (7, 2)
    assert done["runAt"] is not None
    assert done["startedAt"] >= done["runAt"]
    assert done["result"] == {"value": 5}


def test_a_retry_is_streamed_as_requeued(server: Server, tmp_path: Path) -> None:
    body = {"type": "flaky", "path": str(tmp_path / "runs"), "crashes": 1, "delayS": 0.5}
    job_id = server.start_job(body | {"retry": {"maxAttempts": 2, "backoffS": 0.2}})
    seen: list[str] = []
    with server.client.stream("GET", f"/admin/jobs/{job_id}/events") as response:
        for line in response.iter_lines():
            if line.startswith("event: "):
                seen.append(line[7:])
                if line == "event: finished":
                    break
    assert [k for k in seen if k in ("started", "requeued", "finished")] == [
        "started",
        "requeued",
        "started",
        "finished",
    ], seen


@pytest.fixture
def evolution() -> Iterator[tuple[FakeEvolution, str]]:
    """A fake Evolution API with the group, and its URL."""
    fake = FakeEvolution()
    fake.add_group(GROUP, participants())
    with running(fake) as url:
        yield fake, url


def test_a_removal_retries_a_gateway_outage_and_removes_no_one_twice(
    make_server: Callable[..., Server], evolution: tuple[FakeEvolution, str]
) -> None:
    fake, url = evolution
    env = evolution_env(url, JOBSUP_GATEWAY_RETRIES="1")
    server = prepared(make_server(**env))
    # The first batch: refused twice as over the rate limit (nothing done), so
    # its gateway gives up: an outage. A 5xx would leave the batch unsure.
    fake.fail_next("update", Fault(429), Fault(429))
    body = removal(GROUP) | {"retry": {"maxAttempts": 3, "backoffS": 0.2}}
    job = server.wait_status(server.start_job(body), "completed", "failed", timeout=60)
    assert job["status"] == "completed", job
    assert job["attempts"] == 2
    (outage,) = job["attemptErrors"]
    assert outage["error"]["type"] == "GatewayOutage"
    assert sorted(fake.removed) == sorted(sent_id(n) for n in IDLE)  # each once
    succeeded = [r["whatsappId"] for r in history(server) if r["outcome"] == "SUCCESS"]
    assert sorted(succeeded) == sorted(key_of(n) for n in IDLE)


def test_a_removal_refused_by_its_gateway_is_not_retried(
    make_server: Callable[..., Server], evolution: tuple[FakeEvolution, str]
) -> None:
    fake, url = evolution
    server = prepared(make_server(**evolution_env(url)))
    refusal = Fault(400, ["Error updating participants", "Error: not-authorized"])
    fake.fail_next("update", refusal)
    body = removal(GROUP) | {"retry": {"maxAttempts": 3, "backoffS": 0}}
    job = server.wait_status(server.start_job(body), "completed", "failed", timeout=60)
    assert job["status"] == "failed", job
    assert job["attempts"] == 1
    assert job["error"]["type"] == "GatewayError"
