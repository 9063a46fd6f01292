"""Chaos on a cluster: three instances on PostgreSQL, then the invariants.

Faults, picked by a seeded random generator (the seed is printed; set
JOBSUP_CHAOS_SEED to replay one): SIGSTOP of a front past the node timeout
then SIGCONT, SIGKILL and SIGTERM of fronts (restarted) and of job children, every
database backend terminated, cancels and starts sent to random instances.
Starts mix exclusive tickers with real removal jobs on a few groups (small
delays, batches of a few members). Then every job must end, and the job
invariants (``tests.chaos_invariants``), the removal invariants
(``tests.invariants``) and the agreement of each removal's result with its
history (``removal_result_violations``) must hold.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from typing import Any

import httpx
import psycopg
import pytest

from tests.chaos_invariants import (
    FINAL,
    Seen,
    install_audit,
    removal_result_violations,
    violations,
)
from tests.conftest import Server, wait_until
from tests.helpers import alive, group_body, removal
from tests.invariants import assert_removal_invariants
from tests.test_fencing import FENCE, fenced_db  # noqa: F401 (a fixture)

pytestmark = pytest.mark.postgres

CHAOS_S = 20.0
STALL_S = 2.6  # past JOBSUP_NODE_TIMEOUT_S (2)
GROUPS = ("r0", "r1", "r2")
INACTIVE = 60  # per group: removals go on all through the run


class Chaos:
    def __init__(self, servers: list[Server], url: str, rng: random.Random) -> None:
        self.servers = servers
        self.url = url
        self.rng = rng
        self.seen = Seen()
        self.jobs: list[str] = []
        self.keys: dict[str, str] = {}
        self.stalled: dict[int, float] = {}  # index -> when to SIGCONT

    def up(self) -> list[Server]:
        return [s for i, s in enumerate(self.servers) if i not in self.stalled]

    def any_up(self) -> Server:
        return self.rng.choice(self.up())

    def body(self) -> tuple[dict[str, Any], str | None]:
        rng = self.rng
        kind = rng.choice(["keyed", "keyed", "ticker", "sleepy", "quick", "removal", "removal"])
        if kind == "keyed":
            key = f"k{rng.randrange(3)}"
            first = rng.randrange(200, 1500)
            return {"type": "ticker", "key": key, "firstMs": first, "againMs": 200}, key
        if kind == "ticker":
            return {"type": "ticker", "firstMs": rng.randrange(100, 800)}, None
        if kind == "sleepy":
            return {"type": "sleepy", "steps": 2, "stepMs": 200}, None
        if kind == "removal":
            group = rng.choice(GROUPS)
            batch, delay = rng.randrange(2, 5), rng.randrange(100, 250)
            return removal(group, batchSize=batch, delayMs=delay), group
        return {"type": "quick"}, None

    def start(self) -> None:
        body, key = self.body()
        response = self.any_up().client.post("/admin/jobs/start", json=body)
        if response.status_code == 202:
            job_id = response.json()["jobId"]
            self.jobs.append(job_id)
            if key is not None:
                self.keys[job_id] = key

    def cancel(self) -> None:
        if self.jobs:
            job_id = self.rng.choice(self.jobs[-10:])
            response = self.any_up().client.post(f"/admin/jobs/{job_id}/cancel")
            if response.status_code in (200, 202):
                self.seen.cancel_answer(job_id, response.status_code, response.json()["status"])

    def look(self) -> dict[str, Any] | None:
        if not self.jobs:
            return None
        job_id = self.rng.choice(self.jobs[-10:])
        response = self.any_up().client.get(f"/admin/jobs/{job_id}/status")
        if response.status_code != 200:
            return None
        job = dict(response.json())
        self.seen.status(job_id, job["status"])
        return job

    def stall(self) -> None:
        if len(self.up()) > 1:
            index = self.servers.index(self.any_up())
            os.kill(self.servers[index].pid, signal.SIGSTOP)
            self.stalled[index] = time.monotonic() + STALL_S + self.rng.uniform(0, 1)

    def resume_due(self, everyone: bool = False) -> None:
        for index, when in list(self.stalled.items()):
            if everyone or time.monotonic() >= when:
                os.kill(self.servers[index].pid, signal.SIGCONT)
                del self.stalled[index]

    def kill_front(self) -> None:
        server = self.any_up()
        server.kill()
        server.start()

    def term_front(self) -> None:
        server = self.any_up()
        server.stop()  # SIGTERM: a graceful stop
        server.start()

    def kill_child(self, sig: int = signal.SIGKILL) -> None:
        job = self.look()
        if job is not None and job["status"] == "running" and job["pid"] and alive(job["pid"]):
            os.kill(job["pid"], sig)

    def term_child(self) -> None:
        self.kill_child(signal.SIGTERM)

    def terminate_backends(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )

    def step(self) -> None:
        actions = [
            (self.start, 6),
            (self.cancel, 2),
            (self.look, 2),
            (self.stall, 0.6),
            (self.kill_front, 0.3),
            (self.term_front, 0.2),
            (self.kill_child, 0.6),
            (self.term_child, 0.3),
            (self.terminate_backends, 0.3),
        ]
        action = self.rng.choices([a for a, _ in actions], [w for _, w in actions])[0]
        # A front killed, or its database cut, under the request: that is the chaos.
        with contextlib.suppress(httpx.TransportError):
            action()
        self.resume_due()
        time.sleep(self.rng.uniform(0, 0.1))


def _all_final(url: str, jobs: list[str]) -> bool:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT status FROM jobs WHERE id = ANY(%s)", (jobs,)).fetchall()
    return len(rows) == len(jobs) and all(r[0] in FINAL for r in rows)


def test_chaos_keeps_the_invariants(fenced_db: str, make_server: Any) -> None:  # noqa: F811
    seed = int(os.environ.get("JOBSUP_CHAOS_SEED") or time.time_ns() % 1_000_000)
    print(f"chaos seed: {seed} (JOBSUP_CHAOS_SEED={seed} replays it)")
    env = {
        **FENCE,
        "DATABASE_URL": fenced_db,
        "JOBSUP_MAX_CONCURRENT_JOBS": "3",
        "JOBSUP_SIGTERM_HOLD_S": "1",
    }
    servers = [make_server(**env)]
    install_audit(fenced_db)
    servers += [make_server(**env) for _ in range(2)]
    for group in GROUPS:
        servers[0].client.put(f"/admin/groups/{group}", json=group_body(inactive=INACTIVE))
    chaos = Chaos(servers, fenced_db, random.Random(seed))
    deadline = time.monotonic() + CHAOS_S
    while time.monotonic() < deadline:
        chaos.step()
    chaos.resume_due(everyone=True)
    for server in servers:  # all up, so that every job can end
        assert server.process is not None
        if server.process.poll() is not None:
            server.start()

    wait_until(lambda: _all_final(fenced_db, chaos.jobs), timeout=30, interval=0.2)
    for job_id in chaos.jobs:  # what each instance now says, seen too
        for server in servers:
            chaos.seen.status(job_id, server.status(job_id)["status"])
    print(f"{len(chaos.jobs)} jobs, {len(chaos.seen.cancels_200)} cancels answered 200")
    problems = violations(fenced_db, chaos.seen, chaos.keys)
    problems += removal_result_violations(fenced_db)
    assert problems == [], f"seed {seed}"
    counts = assert_removal_invariants(fenced_db, list(GROUPS))
    print(f"removals: {counts}")
