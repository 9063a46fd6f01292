"""Shutdown runs to the end whatever a background loop died of; errors are told by code."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from supervisor.cluster import Cluster
from supervisor.runtime import Runtime
from supervisor.settings import Settings
from supervisor.state import JobStatus
from supervisor.store import Store, is_unique_violation
from supervisor.testing import wait_until_async
from workers.db import Database, connect

pytestmark = pytest.mark.postgres


async def _dies(self: Cluster) -> None:
    self.listening.set()
    await asyncio.sleep(0)
    raise RuntimeError("the LISTEN loop hit a bug")


def test_a_dead_listen_loop_does_not_stop_the_shutdown(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(Cluster, "listen", _dies)
    settings = Settings(
        database_url=pg_url,
        job_modules=("tests.jobs",),
        cancel_grace_s=0.5,
        kill_after_s=0.5,
        shutdown_grace_s=5.0,
        spare_child=False,
        job_env={"JOBSUP_MIN_DELAY_MS": "0"},
    )

    async def scenario() -> str:
        runtime = await Runtime.start(settings)
        job = await runtime.service.submit(b'{"type": "sleepy", "steps": 1000, "stepMs": 50}')
        await wait_until_async(  # started within 10 s
            lambda: (live := runtime.table.get(job.id)) and live.status is JobStatus.RUNNING,
            within=10,
        )
        # The listen task dies at its first look: wait for that, with a deadline.
        await asyncio.wait_for(asyncio.wait(runtime._tasks[-1:]), timeout=10)
        assert all(t.done() for t in runtime._tasks[-1:])
        await runtime.stop()  # must not raise, must cancel and drain
        return job.id

    with caplog.at_level(logging.ERROR, logger="jobsup"):
        job_id = asyncio.run(scenario())
    assert "a background loop had died" in caplog.text
    db = connect(pg_url)
    try:
        row = db.one("SELECT status, cancel FROM jobs WHERE id = ?", (job_id,))
        instances = db.one("SELECT count(*) FROM instances")
    finally:
        db.close()
    assert row is not None
    assert row[0] == "cancelled"
    assert '"reason":"shutdown"' in row[1]
    assert instances == (0,)  # and it left the cluster: the shutdown ran to the end


def _error_of(db: Database, statement: str) -> Exception:
    try:
        db.execute(statement)
    except Exception as exc:
        return exc
    raise AssertionError(f"{statement!r} did not fail")


@pytest.mark.parametrize("url_kind", ["sqlite", "postgresql"])
def test_only_a_duplicate_key_is_a_unique_violation(
    url_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'x.db'}"
        if url_kind == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    Store(url).migrate()
    db = connect(url)
    try:
        db.execute("INSERT INTO instances VALUES ('a', 'h', 1, 0, 0)")
        assert is_unique_violation(
            _error_of(db, "INSERT INTO instances VALUES ('a', 'h', 1, 0, 0)")
        )
        missing = _error_of(db, "INSERT INTO instances VALUES ('b', NULL, 1, 0, 0)")
        assert not is_unique_violation(missing)  # NOT NULL: an integrity error, not a taken key
    finally:
        db.close()
    assert not is_unique_violation(sqlite3.IntegrityError("UNIQUE constraint failed"))
