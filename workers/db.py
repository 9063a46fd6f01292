"""One small synchronous interface over SQLite and PostgreSQL.

SQL is written once with ``?`` placeholders and portable types; the
PostgreSQL side rewrites the placeholders. Children open their own
connection; the front process runs these calls off its event loop.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SQLITE_BUSY_TIMEOUT_MS = 15_000
# Ids are indexed: PostgreSQL refuses an index entry over about 2.7 KB, and
# no id we are given (a WhatsApp id, a job id) comes near this.
MAX_ID_LENGTH = 256

# Page cache per connection. SQLite's default (2 MiB) filled up as the jobs
# table grew and was most of the front process's growth with 10,000 jobs;
# the hot pages (the newest jobs, the indexes) fit in this, and the rest
# comes from the operating system's file cache.
SQLITE_CACHE_KIB = 512

# A PostgreSQL session left inside a transaction this long is ended by the
# server, which rolls the transaction back and frees its locks. No write of
# ours holds a transaction open while it waits on anything but the database,
# so only a stalled process (stopped, swapping, cut off) reaches it; without
# it a stalled front or child holds its row locks, and every other instance
# waiting on them, until it wakes. Fencing makes its late writes harmless.
IDLE_IN_TRANSACTION_MS = 60_000


class DatabaseUnavailable(Exception):
    """The database could not be reached or stayed locked; the caller may retry."""


def sqlite_path(url: str) -> str:
    """``sqlite:///data/x.db`` -> ``data/x.db``; ``sqlite:////abs/x.db`` -> ``/abs/x.db``."""
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url!r}")
    return url.removeprefix("sqlite:///")


def dialect_of(url: str) -> str:
    if url.startswith("sqlite:"):
        return "sqlite"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql"
    raise ValueError(f"DATABASE_URL must start with sqlite:/// or postgresql://, got {url!r}")


class Database:
    """A connection with ``?`` placeholders everywhere and explicit transactions."""

    def __init__(self, conn: Any, dialect: str) -> None:
        self.conn = conn
        self.dialect = dialect

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; returns the number of rows it changed."""
        cur = self.conn.execute(self._sql(sql), params)
        return int(cur.rowcount)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if self.dialect == "postgresql":
            with self.conn.cursor() as cur:
                cur.executemany(self._sql(sql), rows)
        else:
            self.conn.executemany(sql, rows)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self.conn.execute(self._sql(sql), params).fetchall())

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row = self.conn.execute(self._sql(sql), params).fetchone()
        return tuple(row) if row is not None else None

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """A transaction; inside another one, a savepoint (an error undoes the inner part only)."""
        if self.dialect == "postgresql":
            with self.conn.transaction():  # psycopg nests as a savepoint
                yield self
            return
        if self.conn.in_transaction:
            self.conn.execute("SAVEPOINT nested")
            try:
                yield self
            except BaseException:
                self.conn.execute("ROLLBACK TO SAVEPOINT nested")
                self.conn.execute("RELEASE SAVEPOINT nested")
                raise
            self.conn.execute("RELEASE SAVEPOINT nested")
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


def connect_sqlite(path: str, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> sqlite3.Connection:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        path,
        isolation_level=None,  # autocommit; transactions are explicit
        check_same_thread=False,
        timeout=busy_timeout_ms / 1000,
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
    conn.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    return conn


def connect(
    url: str,
    busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS,
    idle_in_transaction_ms: int = IDLE_IN_TRANSACTION_MS,
) -> Database:
    """Open ``url``. ``busy_timeout_ms``: how long SQLite waits on a lock before failing;
    ``idle_in_transaction_ms``: how long PostgreSQL lets a transaction sit idle."""
    dialect = dialect_of(url)
    if dialect == "sqlite":
        return Database(connect_sqlite(sqlite_path(url), busy_timeout_ms), dialect)
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    # Added to whatever options the URL already sets, not in their place.
    given = conninfo_to_dict(url).get("options") or ""
    options = f"{given} -c idle_in_transaction_session_timeout={idle_in_transaction_ms}".strip()
    conn = psycopg.connect(url, autocommit=True, connect_timeout=5, options=options)
    return Database(conn, dialect)
