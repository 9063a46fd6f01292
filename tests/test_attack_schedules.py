"""Schedules attacked from outside: replaced and deleted while three instances race to fire.

Three PostgreSQL instances look for due ticks every 0.2 s. A tick is brought
forward in the database and, at the same moment, the schedule is replaced
(PUT) or deleted. Whatever wins, a tick that fired has its job and its tick
row, and a job has its tick; a deleted schedule starts nothing more.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import psycopg
import pytest

from tests.conftest import Server, wait_until
from workers.times import now_ms

pytestmark = pytest.mark.postgres

CLUSTER = {"JOBSUP_HEARTBEAT_S": "0.3", "JOBSUP_NODE_TIMEOUT_S": "2", "JOBSUP_POLL_S": "0.2"}
FINAL = ("completed", "failed", "cancelled")


def _fire_now(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE schedules SET next_fire_at = %s WHERE name = 'race'", (now_ms(),))


def _put(server: Server, value: int) -> None:
    body = {"cron": "0 0 1 1 *", "timezone": "UTC", "job": {"type": "quick", "value": value}}
    response = server.client.put("/admin/schedules/race", json=body)
    assert response.status_code in (200, 201), response.text


def _jobs(pg_url: str) -> dict[str, tuple[int, int]]:
    """Every job: id -> (its value, created_at ms)."""
    with psycopg.connect(pg_url) as conn:
        found = conn.execute("SELECT id, config, created_at FROM jobs").fetchall()
    return {r[0]: (json.loads(r[1])["value"], r[2]) for r in found}


def _ticked_jobs(pg_url: str) -> list[str]:
    with psycopg.connect(pg_url) as conn:
        found = conn.execute("SELECT job_id FROM schedule_ticks WHERE job_id IS NOT NULL")
        return [r[0] for r in found.fetchall()]


def test_a_schedule_replaced_or_deleted_as_its_tick_fires_starts_one_job_or_none(
    pg_url: str, make_server: Any
) -> None:
    rng = random.Random(3)
    servers = [make_server(DATABASE_URL=pg_url, **CLUSTER) for _ in range(3)]
    _put(servers[0], 0)
    for value in range(1, 13):
        _fire_now(pg_url)
        time.sleep(rng.uniform(0.0, 0.3))  # fault timing: before, during or after a look
        _put(servers[value % 3], value)  # the PUT races the instances' fire
    wait_until(lambda: len(_jobs(pg_url)) == len(_ticked_jobs(pg_url)), timeout=10)
    jobs = _jobs(pg_url)
    ticked = _ticked_jobs(pg_url)
    assert sorted(ticked) == sorted(jobs)  # each job has its tick, each tick its job
    assert len(set(ticked)) == len(ticked)
    assert all(0 <= value <= 12 for value, _ in jobs.values())

    _fire_now(pg_url)
    time.sleep(0.1)  # fault timing: about when the instances look
    response = servers[1].client.delete("/admin/schedules/race")  # races the fire
    assert response.status_code == 204, response.text
    deleted_at = now_ms()
    assert servers[2].client.get("/admin/schedules/race").status_code == 404
    after = _jobs(pg_url)
    assert len(after) - len(jobs) <= 1  # the raced tick fired once, or not at all
    for job_id in after:
        servers[0].wait_status(job_id, *FINAL, timeout=30)
    assert all(created <= deleted_at for _, created in _jobs(pg_url).values())
    assert _jobs(pg_url).keys() == after.keys()  # nothing started since
