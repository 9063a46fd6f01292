"""Resume after a restart: how long a deploy costs a running removal.

A removal (batches of 1, 200 ms apart) is stopped after a few batches by a
graceful restart of its server (SIGTERM, as a deploy does); it goes back to
the queue with its saved place. The figure is the time from the new
server's spawn to the resumed job's next batch. The baseline, in the same
run, is the same restart followed at once by a fresh removal: from the
spawn to its first batch. Both include the server's own start-up, so the
ratio says what resuming adds to it.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from bench.servers import JobsupServer, poll
from bench.session import Session
from bench.stats import Row, Summary, Target

MEMBERS = 12
BEFORE_RESTART = 3  # batches done before the restart
JOINED = "2020-01-01T00:00:00Z"


def _group() -> dict[str, Any]:
    return {
        "name": "bench resume group",
        "members": [
            {"whatsappId": f"{5511800000000 + i}@s.whatsapp.net", "joinedAt": JOINED}
            for i in range(MEMBERS)
        ],
    }


def _removal(group: str) -> dict[str, Any]:
    return {
        "type": "removal_workflow",
        "groupWaId": group,
        "batchSize": 1,
        "delayMs": 200,
        "dryRun": False,
        "inactivityWindowMs": 86_400_000,
    }


def _first_row_at(server: JobsupServer, job_id: str, after_ms: int) -> float:
    """Epoch seconds of the job's first history row written after ``after_ms``."""
    path = server.env["DATABASE_URL"].removeprefix("sqlite:///")

    def landed() -> float | None:
        with sqlite3.connect(path) as db:
            row = db.execute(
                "SELECT min(at) FROM removal_history WHERE job_id = ? AND at > ?",
                (job_id, after_ms),
            ).fetchone()
        return None if row[0] is None else row[0] / 1000

    return float(poll(landed, timeout=60, interval=0.005))


def _rows(server: JobsupServer, job_id: str) -> int:
    path = server.env["DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        (count,) = db.execute(
            "SELECT count(*) FROM removal_history WHERE job_id = ?", (job_id,)
        ).fetchone()
    return int(count)


def _restart(server: JobsupServer) -> tuple[float, int]:
    """Stop gracefully and start again; (spawn time in epoch s, the stop in epoch ms)."""
    server.stop()
    stopped_ms = int(time.time() * 1000)
    spawned = time.time()
    server.start()
    return spawned, stopped_ms


def _sample(server: JobsupServer, n: int) -> tuple[float, float]:
    group = f"resume-{n}"
    server.client.request("PUT", f"/admin/groups/{group}", body=_group()).raise_for_status()
    job_id = server.submit(_removal(group))
    poll(lambda: _rows(server, job_id) >= BEFORE_RESTART, timeout=60, interval=0.01)
    spawned, stopped_ms = _restart(server)
    resumed = _first_row_at(server, job_id, stopped_ms) - spawned
    server.cancel(job_id)

    fresh_group = f"fresh-{n}"
    server.client.request("PUT", f"/admin/groups/{fresh_group}", body=_group()).raise_for_status()
    spawned, stopped_ms = _restart(server)
    fresh_id = server.submit(_removal(fresh_group))
    fresh = _first_row_at(server, fresh_id, stopped_ms) - spawned
    server.cancel(fresh_id)
    return resumed, fresh


def resume(session: Session) -> list[Row]:
    server = session.jobsup("jobsup-resume")
    resumed, fresh = [], []
    for n in range(session.count(7, 2)):
        r, f = _sample(server, n)
        resumed.append(r)
        fresh.append(f)
    return [
        Row(
            "restart to the resumed removal's next batch",
            "ms",
            Summary.of(resumed, 1000),
            "restart, fresh job's 1st batch",
            Summary.of(fresh, 1000),
            Target("<=", 1.25),
            "graceful restart (SIGTERM); both include the server's start-up",
        )
    ]
