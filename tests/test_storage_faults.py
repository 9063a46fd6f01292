"""A SQLite file that cannot be written (a full disk, failing I/O) is an outage, not a bug.

The front is given a file size limit (RLIMIT_FSIZE) just under what its
database's write-ahead log needs next, from outside, as a filling disk
would: SQLite's writes then fail with an I/O error. A start answers 503,
never 500, and a job that ends meanwhile has its final state written once
the disk has room again, rather than left ``running`` in the database.
"""

from __future__ import annotations

import os
import resource
import signal
from typing import Any

from tests.conftest import wait_until
from tests.test_durability import stored
from workers.db import sqlite_path


def test_a_full_disk_is_an_outage_that_passes(make_server: Any, sqlite_url: str) -> None:
    server = make_server()
    job = server.start_job({"type": "stubborn", "seconds": 600})
    pid = server.wait_status(job, "running")["pid"]
    wait_until(lambda: stored(sqlite_url, job)["status"] == "running")
    soft, hard = resource.prlimit(server.pid, resource.RLIMIT_FSIZE)
    wal = os.path.getsize(sqlite_path(sqlite_url) + "-wal")
    resource.prlimit(server.pid, resource.RLIMIT_FSIZE, (wal, hard))  # the disk is full
    try:
        os.kill(pid, signal.SIGKILL)  # the job ends while nothing can be written
        server.wait_status(job, "failed")
        response = server.client.post("/admin/jobs/start", json={"type": "quick"})
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "database_unavailable"
        assert stored(sqlite_url, job)["status"] == "running"  # not written yet
    finally:
        resource.prlimit(server.pid, resource.RLIMIT_FSIZE, (soft, hard))
    wait_until(lambda: stored(sqlite_url, job)["status"] == "failed", timeout=15)
    quick = server.start_job({"type": "quick"})
    assert server.wait_status(quick, "completed")["status"] == "completed"
