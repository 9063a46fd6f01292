"""Job types for the fencing tests: a fenced, idempotent ticker.

Loaded with ``JOBSUP_JOB_MODULES=tests.jobs,tests.fence_jobs``. The ticker
acts on the world the way a removal batch does under the fencing contract:
each tick is written in a transaction that first checks, with the job's row
locked, that the row still carries this run's token (owner, attempts) and a
live state. A run whose job was rescued meanwhile stops without ticking, so
the ``ticks`` table (created by the test) shows which runs acted and in what
order. The token is read from the row when the run begins: the claim stores
it before the child starts.
"""

from __future__ import annotations

import os
import time
from typing import Any

from workers.context import JobContext
from workers.db import Database, connect
from workers.registry import JobConfig, job_type

TICKS_TABLE = """
CREATE TABLE ticks (
    id BIGSERIAL PRIMARY KEY,
    key TEXT,
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
)
"""


class StaleRun(Exception):
    """The job is no longer this run's: another run (or its end) took it."""


class TickerConfig(JobConfig, tag="ticker"):
    key: str | None = None
    first_ms: int = 1000  # how long the first attempt ticks
    again_ms: int = 200  # how long any later attempt ticks
    tick_ms: int = 50


def _tick(db: Database, ctx: JobContext, key: str | None, token: tuple[Any, ...]) -> None:
    lock = " FOR UPDATE" if db.dialect == "postgresql" else ""
    with db.transaction():
        row = db.one(f"SELECT owner, attempts, status FROM jobs WHERE id = ?{lock}", (ctx.job_id,))
        live = row is not None and row[2] in ("pending", "running", "cancelling")
        if not live or row is None or (row[0], row[1]) != token:
            raise StaleRun(f"job {ctx.job_id} is no longer run {token}: {row}")
        db.execute(
            "INSERT INTO ticks (key, job_id, attempt, pid) VALUES (?, ?, ?, ?)",
            (key, ctx.job_id, token[1], os.getpid()),
        )


@job_type(TickerConfig, idempotent=True, exclusive_key=lambda c: c.key)
def ticker(ctx: JobContext, config: TickerConfig) -> dict[str, Any]:
    db = connect(ctx.database_url)
    try:
        token = db.one("SELECT owner, attempts FROM jobs WHERE id = ?", (ctx.job_id,))
        assert token is not None
        run_ms = config.first_ms if token[1] == 1 else config.again_ms
        deadline = time.monotonic() + run_ms / 1000
        ticks = 0
        while True:
            ctx.checkpoint()
            _tick(db, ctx, config.key, token)
            ticks += 1
            ctx.progress(processed=ticks)
            if time.monotonic() >= deadline:
                return {"attempt": token[1], "ticks": ticks}
            ctx.sleep(config.tick_ms / 1000)
    finally:
        db.close()
