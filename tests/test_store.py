"""The store's writer: bulk writes give way, a busy queue is not an unavailable database."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import psycopg.errors
import pytest

from supervisor.store import DatabaseBusy, Store, _is_unavailable
from tests.conftest import Server
from workers.db import Database, connect


class Gate:
    """Holds the writer thread inside a call until opened."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def hold(self) -> None:
        self.entered.set()
        self.opened.wait(10)


def _record(db: Database, order: list[str], name: str, gate: Gate | None) -> str:
    if gate is not None:
        gate.hold()
    order.append(name)
    return name


def test_ordinary_writes_overtake_queued_bulk_writes(tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        store = Store(f"sqlite:///{tmp_path / 'x.db'}")
        order: list[str] = []
        gate = Gate()
        try:
            running = asyncio.ensure_future(
                store.call(_record, order, "bulk-running", gate, write=True, bulk=True)
            )
            await asyncio.to_thread(gate.entered.wait, 10)
            queued = [
                asyncio.ensure_future(
                    store.call(_record, order, f"bulk-{i}", None, write=True, bulk=True)
                )
                for i in range(3)
            ]
            small = [
                asyncio.ensure_future(store.call(_record, order, f"small-{i}", None, write=True))
                for i in range(2)
            ]
            await asyncio.sleep(0)  # every call is queued before the gate opens
            gate.opened.set()
            await asyncio.gather(running, *queued, *small)
        finally:
            store.close()
        return order

    order = asyncio.run(scenario())
    # The bulk write already running finishes; then the small ones, in order;
    # then the queued bulk ones, in order.
    assert order == ["bulk-running", "small-0", "small-1", "bulk-0", "bulk-1", "bulk-2"]


def test_on_postgresql_a_running_bulk_write_holds_up_no_ordinary_write(pg_url: str) -> None:
    """The writer carries the heartbeat: a long bulk write must not delay it."""

    async def scenario() -> list[str]:
        store = Store(pg_url)
        order: list[str] = []
        gate = Gate()
        try:
            bulk = asyncio.ensure_future(
                store.call(_record, order, "bulk", gate, write=True, bulk=True)
            )
            await asyncio.to_thread(gate.entered.wait, 10)
            await store.call(_record, order, "heartbeat", None, write=True, queue_timeout=5)
            gate.opened.set()
            await bulk
        finally:
            gate.opened.set()
            store.close()
        return order

    assert asyncio.run(scenario()) == ["heartbeat", "bulk"]


def test_a_queue_timeout_is_busy_and_runs_nothing(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[str], bool]:
        store = Store(f"sqlite:///{tmp_path / 'x.db'}")
        order: list[str] = []
        gate = Gate()
        try:
            blocker = asyncio.ensure_future(store.call(_record, order, "blocker", gate, write=True))
            await asyncio.to_thread(gate.entered.wait, 10)
            with pytest.raises(DatabaseBusy):
                await store.call(_record, order, "late", None, write=True, queue_timeout=0.05)
            gate.opened.set()
            await blocker
            await store.call(_record, order, "after", None, write=True)
            return order, store.available
        finally:
            gate.opened.set()
            store.close()

    order, available = asyncio.run(scenario())
    assert order == ["blocker", "after"]  # the timed-out call never ran
    assert available  # busy is not unavailable


def _members(n: int) -> bytes:
    members = [
        {"whatsappId": f"{i:012d}@s.whatsapp.net", "joinedAt": "2024-01-01T00:00:00Z"}
        for i in range(n)
    ]
    return json.dumps({"name": "big", "members": members}).encode()


def test_large_group_writes_do_not_starve_a_job_start(make_server: Any) -> None:
    body = _members(20_000)  # about 1.7 MB: past the default body limit
    server: Server = make_server(JOBSUP_MAX_BODY_BYTES=str(4 * 1024 * 1024))

    def put(i: int) -> int:
        response = httpx.put(
            f"{server.url}/admin/groups/big-{i}",
            content=body,
            headers={"content-type": "application/json", **server.headers},
            timeout=60,
        )
        return response.status_code

    with ThreadPoolExecutor(6) as pool:
        puts = [pool.submit(put, i) for i in range(6)]
        response = server.client.post("/admin/jobs/start", json={"type": "quick"})
        statuses: list[Any] = [p.result() for p in puts]
    assert response.status_code == 202, response.text
    assert statuses == [200] * 6
    assert server.client.get("/readyz").status_code == 200
    server.wait_status(response.json()["jobId"], "completed")


def test_a_statement_past_a_postgresql_limit_is_not_an_outage() -> None:
    assert not _is_unavailable(psycopg.errors.ProgramLimitExceeded("index row size exceeds"))
    assert _is_unavailable(psycopg.OperationalError("connection lost"))


def test_a_stalled_postgresql_transaction_frees_its_locks(pg_url: str) -> None:
    """A process stopped inside a transaction does not hold its row locks forever."""
    stalled = connect(pg_url, idle_in_transaction_ms=300)
    other = connect(pg_url)
    try:
        other.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        other.execute("INSERT INTO t VALUES (1)")
        stalled.conn.execute("BEGIN")
        stalled.execute("SELECT id FROM t WHERE id = 1 FOR UPDATE")
        # What a stopped process does next: nothing. The server ends its session.
        other.execute("SET lock_timeout = '20s'")
        other.execute("UPDATE t SET id = 2 WHERE id = 1")
        assert other.query("SELECT id FROM t") == [(2,)]
        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout) as ended:
            stalled.execute("SELECT 1")
        assert _is_unavailable(ended.value)  # the front's store reconnects and retries
    finally:
        stalled.conn.close()
        other.close()


def test_options_in_the_url_are_kept_beside_the_idle_timeout(pg_url: str) -> None:
    db = connect(f"{pg_url}?options=-c%20application_name%3Dmine")
    try:
        assert db.query("SHOW application_name") == [("mine",)]
        assert db.query("SHOW idle_in_transaction_session_timeout") == [("1min",)]
    finally:
        db.close()
