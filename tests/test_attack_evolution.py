"""The Evolution gateway attacked from outside: a hung gateway must not freeze the API.

A real server, a real (fake) Evolution API over HTTP that stops answering.
"""

from __future__ import annotations

import itertools
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Server, wait_until
from tests.fake_evolution import FakeEvolution, Fault, running
from tests.helpers import iso_days_ago, removal, rows
from tests.invariants import assert_removal_invariants
from tests.test_evolution import GROUP, evolution_env, participants, prepared
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


def test_starts_waiting_on_a_hung_gateway_leave_the_reads_answering(
    make_server: Callable[..., Server], evolution_url: str, fake: FakeEvolution
) -> None:
    """Each start looks at Evolution first; a gateway that hangs holds those starts only.

    Two starts wait on it (as many as the database has reader threads on
    SQLite): a list of jobs, the groups and a job's status still answer
    while they wait.
    """
    server = prepared(make_server(**evolution_env(evolution_url, EVOLUTION_TIMEOUT_S="60")))
    done_id = server.start_job({"type": "quick", "value": 1})
    server.wait_status(done_id, "completed")
    fake.fail_next("state", Fault(delay_s=12), Fault(delay_s=12))  # longer than the look waits
    answers: list[int] = []

    def start() -> None:
        with httpx.Client(base_url=server.url, headers=server.client.headers, timeout=60) as c:
            answers.append(c.post("/admin/jobs/start", json=removal(GROUP)).status_code)

    starts = [threading.Thread(target=start) for _ in range(2)]
    for thread in starts:
        thread.start()
    try:
        wait_until(lambda: len(fake.calls_to("state")) >= 2, timeout=30)
        assert server.client.get("/admin/jobs").status_code == 200
        assert server.client.get(f"/admin/groups/{GROUP}").status_code == 200
        assert server.client.get(f"/admin/jobs/{done_id}/status").status_code == 200
        assert all(t.is_alive() for t in starts), answers  # answered while the starts wait
    finally:
        for thread in starts:
            thread.join(60)
    assert sorted(answers) == [503, 503]  # the look timed out: unavailable, nothing written


CHAOS_GROUP = "120363000000000777@g.us"
IDLE_COUNT = 16
DELAY_MS = 800


def _phone(n: int) -> str:
    return f"55119{n:08d}@s.whatsapp.net"


def _chaos_group(fake: FakeEvolution) -> list[str]:
    """Sixteen idle members and an admin, by phone id in both Evolution and our directory."""
    idle = [_phone(100 + i) for i in range(IDLE_COUNT)]
    listed = [{"id": _phone(1), "admin": "superadmin"}]
    listed += [{"id": wid, "admin": None} for wid in idle]
    fake.add_group(CHAOS_GROUP, listed)
    return idle


def _directory(idle: list[str]) -> dict[str, Any]:
    members = [
        {"whatsappId": wid, "joinedAt": iso_days_ago(300), "lastActiveAt": iso_days_ago(90)}
        for wid in idle
    ]
    members.append({"whatsappId": _phone(1), "isAdmin": True, "joinedAt": iso_days_ago(300)})
    return {"name": "Chaos", "members": members}


def _hurt(server: Server, fault: str, rng: random.Random) -> None:
    if fault == "crash":
        server.kill()
    elif fault == "deploy":
        sigterm_everyone(server)
    else:  # SIGTERM to the front, SIGKILL before its grace ends
        server.signal(signal.SIGTERM)
        time.sleep(rng.uniform(0.0, 0.8))  # fault timing, not an assertion
        server.kill()
    server.start()


@pytest.mark.parametrize("seed", [7, 8])
def test_removals_through_a_faulty_gateway_and_a_hurt_server_record_each_removal_once(
    make_server: Callable[..., Server],
    evolution_url: str,
    fake: FakeEvolution,
    sqlite_url: str,
    seed: int,
) -> None:
    """429 storms, 500s and answers slower than the timeout, with crashes and deploys.

    Whatever happens, each member Evolution removed has exactly one SUCCESS
    row, every finished job's result equals its history, and batches (calls
    with different members) are never closer than delayMs, restarts included.
    """
    rng = random.Random(seed)
    idle = _chaos_group(fake)
    env = evolution_env(evolution_url, EVOLUTION_TIMEOUT_S="1", JOBSUP_SIGTERM_HOLD_S="0.5")
    server = make_server(**env)
    response = server.client.put(f"/admin/groups/{CHAOS_GROUP}", json=_directory(idle))
    assert response.status_code == 200, response.text
    kinds = [Fault(429, ["rate-overlimit"], retry_after=0.3), Fault(500), Fault(delay_s=1.5)]
    for _ in range(6):
        fake.fail_next("update", rng.choice(kinds))
    jobs: list[str] = []
    hurts = 0
    while len(jobs) < 6:
        job_id = server.start_job(removal(CHAOS_GROUP, batchSize=3, delayMs=DELAY_MS))
        jobs.append(job_id)
        while hurts < 3:
            time.sleep(rng.uniform(0.2, 1.5))  # a random moment: a call, a wait, the sync
            if server.status(job_id)["status"] not in ("pending", "running"):
                break
            _hurt(server, rng.choice(["crash", "deploy", "impatient"]), rng)
            hurts += 1
        job = server.wait_status(job_id, "completed", "failed", "cancelled", timeout=90)
        if job["status"] == "completed" and not _queued(sqlite_url):
            break
    assert sorted(fake.removed) == sorted(idle), jobs  # everyone, in the end
    history = rows(sqlite_url, "SELECT whatsapp_id, outcome, job_id FROM removal_history")
    successes = [r["whatsapp_id"] for r in history if r["outcome"] == "SUCCESS"]
    assert sorted(successes) == sorted(idle)  # exactly one SUCCESS row each
    for job_id in jobs:
        job = server.status(job_id)
        if job["status"] == "completed":
            mine = sorted(
                r["whatsapp_id"]
                for r in history
                if r["job_id"] == job_id and r["outcome"] == "SUCCESS"
            )
            assert sorted(job["result"]["removedWhatsappIds"]) == mine, job_id
    calls = fake.calls_to("update")
    for before, after in itertools.pairwise(calls):
        if before.body["participants"] != after.body["participants"]:  # not a retry
            assert (after.at - before.at) * 1000 >= DELAY_MS, (before, after)
    assert rows(sqlite_url, "SELECT * FROM removal_intents") == []
    assert_removal_invariants(sqlite_url)


def _queued(url: str) -> bool:
    return bool(rows(url, "SELECT whatsapp_id FROM removal_queue"))
