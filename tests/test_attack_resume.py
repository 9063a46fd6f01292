"""Resumable removals attacked from outside: a deploy or a crash at the worst moment.

Real servers, real signals, a real (fake) Evolution API over HTTP. Each test
interrupts a removal where a remote gateway leaves work in flight, resumes
it, and checks that the world (who Evolution removed), the history and the
job's result tell one story.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import Server, wait_until
from tests.fake_evolution import FakeEvolution, Fault, running
from tests.helpers import alive, group_body, removal, rows
from tests.invariants import assert_removal_invariants
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
from tests.test_resume import sigterm_everyone


@pytest.fixture
def fake() -> FakeEvolution:
    fake = FakeEvolution()
    fake.add_group(GROUP, participants())
    return fake


@pytest.fixture
def evolution_url(fake: FakeEvolution) -> Iterator[str]:
    with running(fake) as url:
        yield url


def test_a_deploy_during_an_evolution_call_resumes_without_losing_the_batch(
    make_server: Callable[..., Server], evolution_url: str, fake: FakeEvolution, sqlite_url: str
) -> None:
    """SIGTERM to every process while a batch's call is in flight, then a fresh start.

    The call took effect in WhatsApp, but its answer never came: the batch's
    intents are left in the journal. The resumed job (which skips its sync)
    must settle them from the participants list before it goes on, so its
    result and history include that batch, and the journal is left empty.
    """
    server = prepared(make_server(**evolution_env(evolution_url)))
    fake.hold_removals = True  # the first batch takes effect, then its answer waits
    job_id = server.start_job(removal(GROUP))
    assert fake.holding.wait(30)
    sigterm_everyone(server)
    (row,) = rows(sqlite_url, "SELECT status, owner FROM jobs WHERE id = ?", job_id)
    assert (row["status"], row["owner"]) == ("pending", None)
    assert len(fake.removed) == 2  # the first batch, which nobody recorded yet

    fake.hold_removals = False
    fake.release.set()
    server.start()
    job = server.wait_status(job_id, "completed", "failed", timeout=60)
    assert job["status"] == "completed", job
    assert job["resumes"] == 1
    everyone = sorted(key_of(n) for n in IDLE)
    assert sorted(fake.removed) == sorted(sent_id(n) for n in IDLE)  # each once
    done = history(server)
    assert sorted(r["whatsappId"] for r in done) == everyone
    assert {(r["outcome"], r["jobId"]) for r in done} == {("SUCCESS", job_id)}
    assert sorted(job["result"]["removedWhatsappIds"]) == everyone  # result == history
    assert rows(sqlite_url, "SELECT whatsapp_id FROM removal_intents") == []
    assert_removal_invariants(sqlite_url)


CHAOS_GROUP = "g-chaos-resume"
CHAOS_MEMBERS = 30
CHAOS_DELAY_MS = 400


def _running_again(server: Server, job_id: str) -> bool:
    job = server.status(job_id)
    return job["status"] == "running" and job["pid"] is not None


def _hurt(server: Server, job_id: str, fault: str, rng: random.Random) -> None:
    """One fault at a random moment of the removal; the server is up again after it."""
    if fault == "crash":  # SIGKILL of the front: its orphaned child stops itself
        server.kill()
    elif fault == "deploy":  # SIGTERM to every process, as a platform does
        sigterm_everyone(server)
    elif fault == "impatient":  # SIGTERM to the front, SIGKILL before its grace ends
        server.signal(signal.SIGTERM)
        time.sleep(rng.uniform(0.0, 0.8))  # fault timing, not an assertion
        server.kill()
    else:  # SIGTERM to the job's child alone: back to the queue, admissions held briefly
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.status(job_id)["pid"], signal.SIGTERM)
        wait_until(lambda: server.status(job_id)["status"] == "pending", timeout=30)
        return
    server.start()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "sqlite":
        return sqlite_url
    return str(request.getfixturevalue("pg_url"))


@pytest.mark.parametrize("seed", [1, 4])
def test_a_removal_hurt_at_random_moments_reads_as_one_paced_run(
    make_server: Callable[..., Server], db_url: str, seed: int
) -> None:
    """Crashes, deploys, impatient stops and child SIGTERMs, seeded; then the invariants."""
    rng = random.Random(seed)
    server = make_server(DATABASE_URL=db_url, JOBSUP_SIGTERM_HOLD_S="0.5")
    response = server.client.put(
        f"/admin/groups/{CHAOS_GROUP}", json=group_body(inactive=CHAOS_MEMBERS)
    )
    assert response.status_code == 200, response.text
    job_id = server.start_job(removal(CHAOS_GROUP, batchSize=2, delayMs=CHAOS_DELAY_MS))
    faults = [rng.choice(["crash", "deploy", "impatient", "child"]) for _ in range(4)]
    for fault in faults:
        wait_until(lambda: _running_again(server, job_id), timeout=30)
        if server.status(job_id)["status"] in ("completed", "failed"):
            break
        time.sleep(rng.uniform(0.1, 1.0))  # a random moment: in a batch, a delay, the sync
        if server.status(job_id)["status"] != "running":
            break
        _hurt(server, job_id, fault, rng)
    job = server.wait_status(job_id, "completed", "failed", timeout=90)
    assert job["status"] == "completed", (faults, job)

    history = rows(
        db_url,
        "SELECT whatsapp_id, outcome, at FROM removal_history WHERE job_id = ? ORDER BY at, id",
        job_id,
    )
    members = [r["whatsapp_id"] for r in history]
    assert len(members) == len(set(members)) == CHAOS_MEMBERS, (faults, members)
    assert {r["outcome"] for r in history} == {"SUCCESS"}
    assert sorted(job["result"]["removedWhatsappIds"]) == sorted(members), faults
    batches = sorted({r["at"] for r in history})
    gaps = [b - a for a, b in itertools.pairwise(batches)]
    assert min(gaps) >= CHAOS_DELAY_MS, (faults, gaps)  # WhatsApp's pacing, across restarts
    assert rows(db_url, "SELECT id FROM jobs WHERE status IN ('running', 'cancelling')") == []
    assert_removal_invariants(db_url)


STALL = {"JOBSUP_HEARTBEAT_S": "0.3", "JOBSUP_NODE_TIMEOUT_S": "2", "JOBSUP_POLL_S": "0.5"}


@pytest.mark.postgres
def test_a_stalled_instance_wakes_to_a_removal_resumed_elsewhere(
    make_server: Callable[..., Server], pg_url: str
) -> None:
    """SIGSTOP of A's front mid-removal (its child runs on), B rescues and resumes, SIGCONT."""
    # Both are up before the job starts: a start of B after it would race the job's end.
    first, second = (make_server(DATABASE_URL=pg_url, **STALL) for _ in range(2))
    response = first.client.put(f"/admin/groups/{CHAOS_GROUP}", json=group_body(inactive=20))
    assert response.status_code == 200, response.text
    job_id = first.start_job(removal(CHAOS_GROUP, batchSize=1, delayMs=300))
    wait_until(lambda: len(_history(pg_url, job_id)) >= 4, timeout=30)
    # A is the instance that claimed the job; B the other one.
    owner = first.status(job_id)["owner"]
    a, b = (first, second) if owner == _instance(first) else (second, first)
    child = a.status(job_id)["pid"]
    os.kill(a.pid, signal.SIGSTOP)
    try:
        job = b.wait_status(job_id, "completed", "failed", timeout=60)
    finally:
        os.kill(a.pid, signal.SIGCONT)
    assert job["status"] == "completed", job
    assert job["resumes"] == 1
    wait_until(lambda: not alive(child), timeout=10)  # killed when A woke, if not before
    history = _history(pg_url, job_id)
    members = [r["whatsapp_id"] for r in history]
    assert len(members) == len(set(members)) == 20
    assert sorted(job["result"]["removedWhatsappIds"]) == sorted(members)
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(history)]
    assert min(gaps) >= 300, gaps
    # A, awake, lets its stale run go and reads the job from the store.
    wait_until(lambda: a.status(job_id)["status"] == "completed", timeout=10)
    assert_removal_invariants(pg_url)


def _instance(server: Server) -> str:
    return str(server.client.get("/healthz").json()["instance"])


def _history(url: str, job_id: str) -> list[dict[str, Any]]:
    return rows(
        url,
        "SELECT whatsapp_id, outcome, attempt, at FROM removal_history WHERE job_id = ?"
        " ORDER BY at, id",
        job_id,
    )


def test_a_crash_before_the_place_after_the_sync_is_stored_keeps_the_sync_count(
    make_server: Callable[..., Server], sqlite_url: str
) -> None:
    """The front dies after the sync and a batch, before its progress flush stored the place.

    The job runs again from the start (no saved place): its second sync finds
    everyone already queued (by this job). Its result must still say how many
    the job's sync queued, not 0 beside 6 removals.
    """
    server = make_server(JOBSUP_PROGRESS_FLUSH_S="60")
    response = server.client.put(f"/admin/groups/{CHAOS_GROUP}", json=group_body(inactive=6))
    assert response.status_code == 200, response.text
    job_id = server.start_job(removal(CHAOS_GROUP, batchSize=1, delayMs=1_000))
    wait_until(lambda: len(_history(sqlite_url, job_id)) >= 1, timeout=30)
    (row,) = rows(sqlite_url, "SELECT saved_state FROM jobs WHERE id = ?", job_id)
    assert row["saved_state"] is None  # the place is not stored yet
    server.kill()
    server.start()
    job = server.wait_status(job_id, "completed", "failed", timeout=60)
    assert job["status"] == "completed", job
    assert len(job["result"]["removedWhatsappIds"]) == 6
    assert job["result"]["queued"] == 6, job["result"]


def test_a_deploy_during_a_rate_limit_wait_keeps_the_pacing_on_resume(
    make_server: Callable[..., Server], evolution_url: str, fake: FakeEvolution
) -> None:
    """The batch's call got a 429 and waits to retry when the deploy comes.

    WhatsApp saw that call. The resumed job settles the batch's intents
    (nobody was removed) and must not call again sooner than delayMs after it.
    """
    delay_ms = 10_000  # the default floor (JOBSUP_MIN_DELAY_MS)
    server = prepared(make_server(**evolution_env(evolution_url)))
    fake.fail_next("update", Fault(429, ["rate-overlimit"], retry_after=60))
    job_id = server.start_job(removal(GROUP, batchSize=5, delayMs=delay_ms))
    wait_until(lambda: "retrying in" in server.log(), timeout=30)
    sigterm_everyone(server)
    server.start()
    job = server.wait_status(job_id, "completed", "failed", timeout=60)
    assert job["status"] == "completed", job
    calls = [c.at for c in fake.calls_to("update")]
    assert len(calls) == 2, calls
    assert (calls[1] - calls[0]) * 1000 >= delay_ms, calls  # WhatsApp's pacing held
    assert sorted(fake.removed) == sorted(sent_id(n) for n in IDLE)
    assert sorted(job["result"]["removedWhatsappIds"]) == sorted(key_of(n) for n in IDLE)


def test_a_sigterm_at_a_resumable_jobs_first_instant_puts_it_back_unowned(
    make_server: Callable[..., Server], sqlite_url: str
) -> None:
    """The child's 'started' and its end arrive in one read: 'running' was never written.

    Its way back to the queue must still land (pending, no owner), so the
    next claim runs it as a new attempt, rather than leaving the row claimed
    by an instance that forgot it.
    """
    server = make_server(JOBSUP_SIGTERM_HOLD_S="0.5")
    job_id = server.start_job({"type": "counter", "to": 2, "stepMs": 10, "sigtermAtStart": True})
    job = server.wait_status(job_id, "completed", "failed", "cancelled", timeout=30)
    assert job["status"] == "completed", job
    assert job["attempts"] == 2, job
    assert "never started" not in server.log()


def test_a_requeued_removal_holds_its_group_until_it_is_cancelled(
    make_server: Callable[..., Server], sqlite_url: str
) -> None:
    """Back in the queue (its child got SIGTERM), a removal still holds its group."""
    server = make_server(JOBSUP_SIGTERM_HOLD_S="60")
    response = server.client.put(f"/admin/groups/{CHAOS_GROUP}", json=group_body(inactive=10))
    assert response.status_code == 200, response.text
    job_id = server.start_job(removal(CHAOS_GROUP, batchSize=1, delayMs=500))
    wait_until(lambda: len(_history(sqlite_url, job_id)) >= 2, timeout=30)
    os.kill(server.status(job_id)["pid"], signal.SIGTERM)
    job = server.wait_status(job_id, "pending", timeout=30)
    assert job["owner"] is None
    refused = server.client.delete(f"/admin/groups/{CHAOS_GROUP}")
    assert refused.status_code == 409, refused.text
    assert job_id in refused.text
    cancelled = server.client.post(f"/admin/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert_removal_invariants(sqlite_url)  # before the delete, which keeps only the history
    assert server.client.delete(f"/admin/groups/{CHAOS_GROUP}").status_code == 204


@pytest.mark.postgres
def test_a_cancel_asked_elsewhere_during_a_shutdown_is_not_lost_to_the_requeue(
    make_server: Callable[..., Server], evolution_url: str, fake: FakeEvolution, pg_url: str
) -> None:
    """A stops (its job's call held in Evolution); B is asked to cancel that job meanwhile."""
    env = evolution_env(evolution_url, DATABASE_URL=pg_url, **STALL)
    a = prepared(make_server(**env))
    b = make_server(**env)
    fake.hold_removals = True
    job_id = a.start_job(removal(GROUP))
    assert fake.holding.wait(30)
    a.signal(signal.SIGTERM)  # the job is asked to stop, to go back to the queue
    answer = b.client.post(f"/admin/jobs/{job_id}/cancel")
    assert answer.status_code in (200, 202), answer.text
    fake.release.set()
    assert a.process is not None
    assert a.process.wait(30) == 0
    job = b.wait_status(job_id, "cancelled", "completed", "failed", timeout=30)
    assert job["status"] == "cancelled", job
    assert len(fake.calls_to("update")) == 1  # never resumed
