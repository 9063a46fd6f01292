"""Storage for the front process: the job table and the job modules' tables.

``Store.call(fn, *args)`` runs ``fn(db, *args)`` off the event loop, on a
database thread with its own connection: a fixed pool of threads and
connections. Writes go through one writer thread, in the order they were
made, so the database follows the in-memory table's order of changes; reads
use a few reader threads. A bulk write (a group's whole member list) gives
way to the ordinary writes queued behind it, so that a job start or a state
write never waits for more than the one bulk write already running.

On PostgreSQL, bulk writes do not share the writer at all: they run in order
on a thread and connection of their own. One can take many seconds there (an
8 MiB whitelist, 17 s), and the writer also carries this instance's
heartbeat: held up past ``JOBSUP_NODE_TIMEOUT_S``, it would get the instance
declared dead and its running jobs failed. Bulk writes touch only the groups'
tables, so nothing orders them against the job table's writes. SQLite has one
write lock per file, so there they stay in the writer's second lane.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from supervisor.store import access, jobs, outbox, schedules
from supervisor.store.migrations import migrate
from workers import registry
from workers.db import Database, DatabaseUnavailable, connect, dialect_of

log = logging.getLogger("jobsup.store")
T = TypeVar("T")

POSTGRES_THREADS = 4
SQLITE_READERS = 2
# Reads that may wait on something outside the database (a job type's start
# check that asks a remote gateway) run on threads of their own.
SLOW_READERS = 4
# The front process waits briefly on a SQLite lock, then retries on its own
# terms, so that a long lock shows in /readyz instead of hanging silently.
FRONT_BUSY_TIMEOUT_MS = 1000


class DatabaseBusy(Exception):
    """A call waited its ``queue_timeout`` behind other writes and was dropped, not run."""


class _Writer:
    """One thread that runs writes in order, in two lanes: ordinary, then bulk.

    Within a lane, writes run in the order they were made. A bulk write runs
    only when no ordinary write is waiting.
    """

    def __init__(self) -> None:
        self._lanes: tuple[deque[tuple[Future[Any], Callable[[], Any]]], ...] = (deque(), deque())
        self._ready = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="jobsup-db-write", daemon=True)
        self._thread.start()

    def submit(self, work: Callable[[], T], bulk: bool = False) -> Future[T]:
        future: Future[T] = Future()
        with self._ready:
            if self._stopping:
                raise RuntimeError("the store is closed")
            self._lanes[bulk].append((future, work))
            self._ready.notify()
        return future

    def _next(self) -> tuple[Future[Any], Callable[[], Any]] | None:
        with self._ready:
            while not (self._lanes[0] or self._lanes[1]):
                if self._stopping:
                    return None
                self._ready.wait()
            return (self._lanes[0] or self._lanes[1]).popleft()

    def _loop(self) -> None:
        while (item := self._next()) is not None:
            future, work = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = work()
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self) -> None:
        """Drop what has not started, wait for what has."""
        with self._ready:
            self._stopping = True
            for lane in self._lanes:
                while lane:
                    lane.popleft()[0].cancel()
            self._ready.notify()
        self._thread.join()


# SQLite's outages, by extended error code (a code's extended forms, such as
# SQLITE_BUSY_SNAPSHOT or SQLITE_IOERR_WRITE, share its prefix).
_SQLITE_OUTAGES = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_CANTOPEN",
    "SQLITE_FULL",
    "SQLITE_IOERR",
    "SQLITE_READONLY",
)


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        # Busy or locked past the busy timeout, a file that cannot be opened,
        # a full disk, a file gone read-only or failing I/O: the storage's
        # outage, not the statement's fault, and it passes.
        name = getattr(exc, "sqlite_errorname", None) or ""
        return name.startswith(_SQLITE_OUTAGES)
    try:
        import psycopg
        import psycopg.errors
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    if isinstance(exc, psycopg.errors.ProgramLimitExceeded):
        return False  # SQLSTATE class 54: this statement is at fault, not the database
    # 25P03: the server ended a session that sat idle inside a transaction
    # (workers.db.IDLE_IN_TRANSACTION_MS); the connection is gone, as in a restart.
    return isinstance(
        exc,
        psycopg.OperationalError
        | psycopg.InterfaceError
        | psycopg.errors.IdleInTransactionSessionTimeout,
    )


# SQLite's extended codes for a duplicate key; a NOT NULL or CHECK failure is
# an IntegrityError too, and must not pass for a taken key or instance id.
_SQLITE_UNIQUE = frozenset({"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"})
_PG_UNIQUE_VIOLATION = "23505"  # SQLSTATE unique_violation


try:
    from psycopg import Error as _PgError
except ImportError:  # pragma: no cover - psycopg is a dependency
    _PgError = sqlite3.Error  # type: ignore[misc,assignment]


def is_unique_violation(exc: BaseException) -> bool:
    """A duplicate key, told by the database's own error code, never by message text."""
    if isinstance(exc, sqlite3.IntegrityError):
        return getattr(exc, "sqlite_errorname", None) in _SQLITE_UNIQUE
    return getattr(exc, "sqlstate", None) == _PG_UNIQUE_VIOLATION


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = dialect_of(url)
        self._writer = _Writer()
        # SQLite in WAL mode reads beside a writer, even one waiting on a lock.
        readers = SQLITE_READERS if self.dialect == "sqlite" else POSTGRES_THREADS
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="jobsup-db-read")
        self._slow = ThreadPoolExecutor(SLOW_READERS, thread_name_prefix="jobsup-db-slow")
        self._bulk = (
            ThreadPoolExecutor(1, thread_name_prefix="jobsup-db-bulk")
            if self.dialect == "postgresql"
            else None
        )
        self._local = threading.local()
        self._connections: list[Database] = []
        self.available = True
        self._closing = False
        # Told of each write's end, on its database thread: (seconds, failure
        # cause or None). The metrics set it; it must be quick and thread-safe.
        self.on_write: Callable[[float, str | None], None] | None = None

    def _db(self) -> Database:
        db: Database | None = getattr(self._local, "db", None)
        if db is None:
            db = connect(self.url, FRONT_BUSY_TIMEOUT_MS)
            self._local.db = db
            self._connections.append(db)
        return db

    def _drop_connection(self) -> None:
        db = getattr(self._local, "db", None)
        self._local.db = None
        if db is not None:
            self._connections.remove(db)
            with contextlib.suppress(Exception):
                db.close()

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...], retry_for: float, write: bool) -> T:
        observe = self.on_write if write else None
        if observe is None:
            return self._attempt(fn, args, retry_for, write)
        began = time.perf_counter()
        failure: str | None = None
        try:
            return self._attempt(fn, args, retry_for, write)
        except DatabaseUnavailable:
            failure = "unavailable"
            raise
        except (sqlite3.Error, _PgError) as exc:  # the domain's refusals are not failures
            failure = (
                "unavailable"
                if _is_unavailable(exc)
                else "conflict"
                if is_unique_violation(exc)
                else "error"
            )
            raise
        finally:
            observe(time.perf_counter() - began, failure)

    def _attempt(
        self, fn: Callable[..., T], args: tuple[Any, ...], retry_for: float, write: bool
    ) -> T:
        deadline = time.monotonic() + retry_for
        delay = 0.05
        fresh = getattr(self._local, "db", None) is None
        while True:
            try:
                result = fn(self._db(), *args)
            except Exception as exc:
                if not _is_unavailable(exc):
                    raise
                self._drop_connection()
                if not fresh:  # a pooled connection went stale: one more try at once
                    fresh = True
                    continue
                if write:  # readiness follows writes: reads may work while writes cannot
                    self.available = False
                if time.monotonic() >= deadline or self._closing:
                    raise DatabaseUnavailable(str(exc)) from exc
                log.warning("database unavailable (%s); retrying", exc)
                time.sleep(delay)  # on a database thread, never the event loop
                delay = min(delay * 2, 1.0)
                continue
            if write:
                self.available = True
            return result

    async def call(
        self,
        fn: Callable[..., T],
        *args: Any,
        write: bool = False,
        bulk: bool = False,
        slow: bool = False,
        retry_for: float = 0.0,
        queue_timeout: float | None = None,
    ) -> T:
        """Run ``fn(db, *args)`` on a database thread.

        ``write`` puts it in the ordered write queue; ``bulk`` (a large write)
        lets the ordinary writes queued after it go first. ``slow``: a read
        that may wait on a remote service (a start's gateway check) runs on
        threads of its own, so a hung service holds up no other read. ``retry_for``:
        seconds of retries when the database is unavailable (state writes
        wait for it to come back; reads fail fast). ``queue_timeout``: give
        up, with ``DatabaseBusy`` and nothing done, if the call has not
        started by then (it waits behind other writes, or writes retrying).
        """
        if write and bulk and self._bulk is not None:
            future = self._bulk.submit(self._run, fn, args, retry_for, True)
        elif write:
            future = self._writer.submit(lambda: self._run(fn, args, retry_for, True), bulk)
        else:
            readers = self._slow if slow else self._readers
            future = readers.submit(self._run, fn, args, retry_for, False)
        # One asyncio future per call: a second one, left holding an
        # exception nobody awaits, would be logged as never retrieved.
        waiter = asyncio.wrap_future(future)
        if queue_timeout is not None:
            await asyncio.wait([waiter], timeout=queue_timeout)
            if not waiter.done() and future.cancel():
                raise DatabaseBusy("the database is busy; nothing was written")
        return await waiter  # started: its own retry_for bounds it

    def migrate(self) -> list[str]:
        """Apply pending migrations (blocking; for startup and ``jobsup migrate``)."""
        db = connect(self.url)
        try:
            # The job table first, the schedules, the access tables, the outbox; then what the
            # loaded job modules contribute.
            components = {
                "jobs": jobs.MIGRATIONS,
                "schedules": schedules.MIGRATIONS,
                "access": access.MIGRATIONS,
                "notify": outbox.MIGRATIONS,
            }
            return migrate(db, {**components, **registry.migrations()})
        finally:
            db.close()

    def close(self) -> None:
        """Stop retrying, drop what has not started, close every connection."""
        self._closing = True
        self._readers.shutdown(wait=True, cancel_futures=True)
        self._slow.shutdown(wait=True, cancel_futures=True)
        if self._bulk is not None:
            self._bulk.shutdown(wait=True, cancel_futures=True)
        self._writer.shutdown()
        for db in list(self._connections):
            db.close()
        self._connections.clear()
