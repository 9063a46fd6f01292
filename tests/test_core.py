"""The core in process, with the OS faked where a child would be: a failure names a unit."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from supervisor import recovery
from supervisor import spare as spare_module
from supervisor.job import Job, Progress, now
from supervisor.launcher import FrameReader, ProtocolError
from supervisor.runs import Run
from supervisor.settings import Settings
from supervisor.spare import SparePool
from supervisor.state import (
    LIVE,
    RUN_PHASES,
    TRANSITIONS,
    IllegalTransition,
    JobStatus,
    RunPhase,
    check_phase,
)
from supervisor.store import Store
from supervisor.table import JobTable
from supervisor.testing import wait_until_async
from tests.helpers import pending_job
from workers import protocol
from workers.db import Database, DatabaseUnavailable

# -- frames and the progress merge ------------------------------------------------


def _frame(payload: bytes) -> bytes:
    return struct.pack("!i", len(payload)) + payload  # Connection.send_bytes' framing


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):  # closed by the test already
            os.close(fd)


def test_frames_are_split_whole_across_reads_and_budgets(pipe: tuple[int, int]) -> None:
    r, w = pipe
    reader = FrameReader(r)
    data = _frame(b"one") + _frame(b"two") + _frame(b"three")
    os.write(w, data[:9])  # one frame and part of the next
    assert reader.read() == [b"one"]
    os.write(w, data[9:])
    assert reader.read(budget=4) == []  # the budget stops the read mid-frame
    assert reader.read() == [b"two", b"three"]
    assert not reader.eof
    os.close(w)
    assert reader.read() == []
    assert reader.eof


def test_a_bad_frame_size_is_a_protocol_error(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, struct.pack("!i", -5) + b"junk")
    with pytest.raises(ProtocolError):
        FrameReader(r).read()


def test_progress_merges_field_by_field_the_later_value_winning() -> None:
    assert protocol.merge_progress([1, None, "a", None], None) == [1, None, "a", None]
    assert protocol.merge_progress([None, 10, None, None], [1, None, "a", "x"]) == [1, 10, "a", "x"]
    assert protocol.merge_progress([2, None, "b", None], [1, 10, "a", "x"]) == [2, 10, "b", "x"]


# -- the table against a real store in a temp file --------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.migrate()
    yield store
    store.close()


def test_the_table_moves_merges_and_writes_through(store: Store) -> None:
    async def scenario() -> None:
        table = JobTable(store)
        job = pending_job()
        assert await table.add(job, "k", None, 100, "me")  # claimed at insert
        table.adopt(job)
        await table.move(job, JobStatus.RUNNING, started_at=now())
        table.merge_progress(job, 1, 4, "first", None)
        table.merge_progress(job, None, None, None, "phase")
        await table.flush()
        stored = await store.call(_get, job.id)
        assert stored.progress == Progress(1, 4, "first", "phase")
        await table.move(job, JobStatus.COMPLETED, result={"n": 1}, completed_at=now())
        with pytest.raises(IllegalTransition):  # a final state is final
            table.move_soon(job, JobStatus.RUNNING)
        assert (await table.wait(job.id, 1.0)).status is JobStatus.COMPLETED  # type: ignore[union-attr]
        stored = await store.call(_get, job.id)
        assert (stored.status, stored.result) == (JobStatus.COMPLETED, {"n": 1})

    asyncio.run(scenario())


def _get(db: Database, job_id: str) -> Job:
    from supervisor.store import jobs as sql

    job = sql.get_job(db, job_id)
    assert job is not None
    return job


# -- the store's retries ---------------------------------------------------------------------


class _Flaky:
    """Locked ``failures`` times, then answers."""

    def __init__(self, failures: int) -> None:
        self.calls = 0
        self.failures = failures

    def __call__(self, db: Database) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            locked = sqlite3.OperationalError("database is locked")
            locked.sqlite_errorname = "SQLITE_BUSY"  # as SQLite sets it
            raise locked
        return "done"


def test_the_store_retries_an_unavailable_database_within_retry_for(store: Store) -> None:
    async def scenario() -> None:
        flaky = _Flaky(failures=3)
        assert await store.call(flaky, write=True, retry_for=10.0) == "done"
        assert flaky.calls == 4
        assert store.available
        stuck = _Flaky(failures=10**6)
        with pytest.raises(DatabaseUnavailable):
            await store.call(stuck, write=True, retry_for=0.2)
        assert not store.available  # a failed write: /readyz says so
        assert await store.call(_Flaky(0), write=True) == "done"
        assert store.available

        def broken(db: Database) -> None:
            raise sqlite3.OperationalError("no such table: nope")

        calls = 0

        def counted(db: Database) -> None:
            nonlocal calls
            calls += 1
            broken(db)

        with pytest.raises(sqlite3.OperationalError):  # not an outage: no retry
            await store.call(counted, write=True, retry_for=10.0)
        assert calls == 1

    asyncio.run(scenario())


# -- a run's phases, with a faked child -------------------------------------------------------


def test_the_run_phases_go_one_way() -> None:
    order = [RunPhase.STARTING, RunPhase.ATTACHED, RunPhase.SETTLED, RunPhase.ENDED]
    for old, new in itertools.pairwise(order):
        check_phase(old, new)
    for old in RunPhase:
        for new in set(RunPhase) - RUN_PHASES[old]:
            with pytest.raises(IllegalTransition):
                check_phase(old, new)


class FakeChild:
    """What a Run sees of a JobProcess: a progress pipe and a sentinel pipe."""

    def __init__(self) -> None:
        self.progress_fd, self.progress_w = os.pipe()
        os.set_blocking(self.progress_fd, False)
        self.sentinel, self.sentinel_w = os.pipe()
        self.reader = FrameReader(self.progress_fd)
        self.pid: int | None = None  # no pidfd: the sentinel alone ends the run
        self.exitcode: int | None = None
        self.signals: list[str] = []
        self.swept = 0  # descendants a kill() swept
        self._outputs = [os.pipe(), os.pipe()]  # stdout, stderr: (read, write)
        for r, _ in self._outputs:
            os.set_blocking(r, False)
        self.output_fds = tuple(r for r, _ in self._outputs)
        self.spec = None  # no job spec: its end is not recorded (no resources)
        self.usage = None
        self.peak_rss_kib = None

    def send(self, message: protocol.Message) -> None:
        os.write(self.progress_w, _frame(protocol.encoder.encode(message)))

    def exit(self, code: int) -> None:
        self.exitcode = code
        os.close(self.progress_w)
        os.close(self.sentinel_w)
        for _, w in self._outputs:
            os.close(w)

    def reap(self) -> int | None:
        return self.exitcode

    def cancel(self) -> None:
        self.signals.append("cancel")

    def terminate(self) -> None:
        self.signals.append("terminate")

    def kill(self) -> None:
        self.signals.append("kill")

    def kill_group_leftovers(self) -> None:
        pass

    def sweep_orphans(self) -> None:
        pass

    def close(self) -> None:
        for fd in (self.progress_fd, self.sentinel, *self.output_fds):
            os.close(fd)


def test_a_run_attaches_settles_on_its_final_message_and_ends_on_its_sentinel(
    store: Store,
) -> None:
    async def scenario() -> None:
        table = JobTable(store)
        job = pending_job()
        await table.add(job, None, None, 100, "me")
        table.adopt(job)
        child = FakeChild()
        seen: list[tuple[str, RunPhase]] = []
        ended = asyncio.Event()

        def on_exit(run: Run) -> None:
            seen.append(("exit", run.phase))
            ended.set()

        run = Run(
            job.id,
            child,  # type: ignore[arg-type]
            table,
            Settings(),
            on_settled=lambda r: seen.append(("settled", r.phase)),
            on_exit=on_exit,
        )
        assert run.phase is RunPhase.STARTING
        run.attach()
        assert run.phase is RunPhase.ATTACHED
        child.send(protocol.Started(pid=1, at=0.0))
        child.send(protocol.Progress(processed=1))
        child.send(protocol.Done({"ok": True}))
        await table.wait(job.id, 5.0)
        assert run.phase is RunPhase.SETTLED
        assert run.settled
        assert job.status is JobStatus.COMPLETED
        child.exit(0)
        await asyncio.wait_for(ended.wait(), 5.0)
        assert seen == [("settled", RunPhase.SETTLED), ("exit", RunPhase.ENDED)]
        assert child.signals == []

    asyncio.run(scenario())


# -- the spare pool, with a faked fork ----------------------------------------------------------


async def _until(condition: Any) -> None:
    """Poll ``condition`` on the loop, for 5 s at most."""
    await wait_until_async(condition, within=5)


class FakeSpare:
    started: list[FakeSpare] = []

    def __init__(self, ctx: Any, nice: int = 0) -> None:
        self.sentinel, self._sentinel_w = os.pipe()
        self.discarded = False
        self.code: int | None = None

    def start(self) -> None:
        FakeSpare.started.append(self)

    @property
    def usable(self) -> bool:
        return self.code is None and not self.discarded

    def die(self, code: int) -> None:
        self.code = code
        os.close(self._sentinel_w)

    def reap(self) -> int | None:
        return self.code

    def discard(self) -> None:
        self.discarded = True


def test_the_spare_pool_keeps_one_waiting_and_hears_its_sigterm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(spare_module, "JobProcess", FakeSpare)
    FakeSpare.started = []

    async def scenario() -> None:
        wanted = True
        held: list[str] = []
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as launcher:
            pool = SparePool(None, 0, launcher, lambda: wanted, held.append)  # type: ignore[arg-type]
            pool.refill()
            pool.refill()  # one fork at a time, one spare at most
            await _until(lambda: pool.waiting)
            assert len(FakeSpare.started) == 1
            first = pool.take()
            assert first is FakeSpare.started[0]
            assert not pool.waiting
            pool.refill()
            await _until(lambda: pool.waiting)
            second = FakeSpare.started[1]
            second.die(-signal.SIGTERM)
            await _until(lambda: not pool.waiting)
            assert held == ["the spare child got SIGTERM"]
            assert second.discarded
            wanted = False
            pool.refill()
            assert pool.take() is None
            assert len(FakeSpare.started) == 2

    asyncio.run(scenario())


# -- moves made outside the table still follow TRANSITIONS ----------------------------------------


def test_every_rescue_of_a_dead_instances_job_is_a_legal_move() -> None:
    for status in LIVE:
        job = msgspec.structs.replace(pending_job(), status=status, owner="dead-instance")
        new = recovery.rescued(job)
        assert new.status is status or new.status in TRANSITIONS[status], (status, new.status)
