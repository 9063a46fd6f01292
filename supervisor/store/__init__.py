"""Storage for the front process: the job table and the workers' data.

``Store.call(fn, *args)`` runs ``fn(db, *args)`` off the event loop, on a
database thread with its own connection: a fixed pool of threads and
connections. Writes go through one writer thread, in the order they were
made, so the database follows the in-memory table's order of changes; reads
use a few reader threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from supervisor.store import jobs
from supervisor.store.migrations import migrate
from workers import directory
from workers.db import Database, DatabaseUnavailable, connect, dialect_of

log = logging.getLogger("jobsup.store")
T = TypeVar("T")

COMPONENTS = {"jobs": jobs.MIGRATIONS, "directory": directory.MIGRATIONS}
POSTGRES_THREADS = 4
SQLITE_READERS = 2
# The front process waits briefly on a SQLite lock, then retries on its own
# terms, so that a long lock shows in /readyz instead of hanging silently.
FRONT_BUSY_TIMEOUT_MS = 1000


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc)
        return "locked" in text or "busy" in text or "unable to open" in text
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def is_unique_violation(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.IntegrityError):
        return True
    try:
        import psycopg.errors
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, psycopg.errors.UniqueViolation)


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = dialect_of(url)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="jobsup-db-write")
        # SQLite in WAL mode reads beside a writer, even one waiting on a lock.
        readers = SQLITE_READERS if self.dialect == "sqlite" else POSTGRES_THREADS
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="jobsup-db-read")
        self._local = threading.local()
        self._connections: list[Database] = []
        self.available = True
        self._closing = False

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
        retry_for: float = 0.0,
        queue_timeout: float | None = None,
    ) -> T:
        """Run ``fn(db, *args)`` on a database thread.

        ``write`` puts it in the ordered write queue. ``retry_for``: seconds of
        retries when the database is unavailable (state writes wait for it to
        come back; reads fail fast). ``queue_timeout``: give up, with
        ``DatabaseUnavailable`` and nothing done, if the call has not started
        by then (it waits behind writes that are retrying).
        """
        executor = self._writer if write else self._readers
        future = executor.submit(self._run, fn, args, retry_for, write)
        if queue_timeout is None:
            return await asyncio.wrap_future(future)
        done, _ = await asyncio.wait([asyncio.wrap_future(future)], timeout=queue_timeout)
        if not done and future.cancel():
            raise DatabaseUnavailable("the database is not taking writes; nothing was written")
        return await asyncio.wrap_future(future)  # started: its own retry_for bounds it

    def migrate(self) -> list[str]:
        """Apply pending migrations (blocking; for startup and ``jobsup migrate``)."""
        db = connect(self.url)
        try:
            return migrate(db, COMPONENTS)
        finally:
            db.close()

    def close(self) -> None:
        """Stop retrying, drop what has not started, close every connection."""
        self._closing = True

        def close_all() -> None:
            for db in list(self._connections):
                db.close()
            self._connections.clear()

        for executor in (self._readers, self._writer):
            executor.shutdown(wait=True, cancel_futures=True)
        close_all()
