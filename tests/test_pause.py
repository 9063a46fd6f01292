"""Pause and resume with real children: cooperative holds, freeze, cancel, restarts, timeouts."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server, wait_until
from tests.helpers import group_body, removal, rows

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
    # It holds: a later look finds the same count (it would tick every 20 ms).
    wait_until(lambda: server.status(job_id)["status"] == "paused")
    time.sleep(0.3)
    assert ticks(server, job_id) == held
    response = post(server, job_id, "resume")
    assert response.status_code == 200, response.text
    assert response.json() == {"jobId": job_id, "status": "running"}
    wait_until(lambda: ticks(server, job_id) > held)
    assert server.status(job_id)["pausedAt"] is None
