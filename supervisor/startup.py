"""What the ``jobsup`` command checks before it serves, and its exit codes.

Each startup failure is one line on stderr and an exit code from the table
below (also in docs/operations.md, "Exit codes"), never a traceback: a bad
setting, an unimportable job module, a database that cannot be opened, a
port in use, another live instance in the way.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import fcntl
import importlib
import os
import socket
import sqlite3
import traceback
from pathlib import Path
from typing import IO, Any

from supervisor.settings import Settings, SettingsError, redact_url
from workers import registry
from workers.db import DatabaseUnavailable, sqlite_path

EXIT_OK = 0
EXIT_FAILED = 1  # the demo's job did not complete; an unexpected error (a bug, logged)
EXIT_USAGE = 2  # bad arguments or settings, an unimportable JOBSUP_JOB_MODULES entry
EXIT_IN_USE = 3  # a live instance holds this JOBSUP_INSTANCE_ID or this SQLite file
EXIT_DATABASE = 4  # the database cannot be reached, opened or migrated
EXIT_PORT = 5  # the address cannot be listened on (port in use, or not permitted)

EXIT_CODES = (
    (EXIT_OK, "done (serve: stopped by SIGTERM or SIGINT after a clean shutdown)"),
    (EXIT_FAILED, "the demo's job did not complete, or an unexpected error (logged)"),
    (EXIT_USAGE, "bad arguments or settings, or an unimportable JOBSUP_JOB_MODULES entry"),
    (EXIT_IN_USE, "a live instance holds this JOBSUP_INSTANCE_ID or this SQLite file"),
    (EXIT_DATABASE, "the database cannot be reached, opened or migrated"),
    (EXIT_PORT, "the port is in use, or listening on it is not permitted"),
)


class StartupFailed(Exception):
    """A startup failure a user can fix: ``message`` is the one line printed."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def load_job_modules(settings: Settings) -> None:
    """Import the built-in and JOBSUP_JOB_MODULES modules; EXIT_USAGE naming a bad one."""
    for name in registry.modules(settings.job_modules):
        try:
            importlib.import_module(name)
        except Exception as exc:
            where = _where(exc)
            raise StartupFailed(
                EXIT_USAGE,
                f"JOBSUP_JOB_MODULES: cannot import {name!r}: {type(exc).__name__}: {exc}{where}",
            ) from None
    try:
        settings.policy()  # a job module's bad setting stops us here, named
    except SettingsError as exc:
        raise StartupFailed(EXIT_USAGE, str(exc)) from None


def _where(exc: BaseException) -> str:
    """`` (file:line)`` of the innermost frame, for an error raised inside a module."""
    if isinstance(exc, ModuleNotFoundError) or exc.__traceback__ is None:
        return ""
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return f" ({frame.filename}:{frame.lineno})"


def database_failure(url: str, exc: BaseException) -> StartupFailed:
    # psycopg's messages run over several lines; one line is the contract.
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return StartupFailed(EXIT_DATABASE, f"cannot use the database {redact_url(url)}: {reason}")


def is_database_error(exc: BaseException) -> bool:
    if isinstance(exc, DatabaseUnavailable | sqlite3.Error | OSError):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    return isinstance(exc, psycopg.Error)


def migrate_database(settings: Settings) -> list[str]:
    """Open the database and apply pending migrations; EXIT_DATABASE if it cannot."""
    from supervisor.store import Store

    store = Store(settings.database_url)
    try:
        return store.migrate()
    except Exception as exc:
        if is_database_error(exc):
            raise database_failure(settings.database_url, exc) from None
        raise
    finally:
        store.close()


def check_port(host: str, port: int) -> None:
    """EXIT_PORT if ``host:port`` cannot be listened on.

    The probe binds as uvicorn will, with SO_REUSEADDR: the sockets a server
    that just stopped left in TIME_WAIT do not count, only a listener.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupFailed(EXIT_USAGE, f"JOBSUP_HOST={host!r} is not valid: {exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise port_failure(host, port, exc) from None


def port_failure(host: str, port: int, exc: BaseException) -> StartupFailed:
    if getattr(exc, "errno", None) == errno.EADDRINUSE or "in use" in str(exc):
        why = "is in use; stop what listens there or set PORT (or --port) to another one"
    else:
        why = f"cannot be listened on: {getattr(exc, 'strerror', None) or exc}"
    return StartupFailed(EXIT_PORT, f"port {port} on {host} {why}")


def lock_sqlite(settings: Settings) -> IO[bytes] | None:
    """Hold an exclusive lock beside a SQLite database for this process's life.

    SQLite supports one instance: a second server on the same file is
    refused with EXIT_IN_USE. The lock is ``<file>.lock``, an advisory
    ``flock`` that the kernel drops when the process ends, however it ends;
    the forkserver and job children do not inherit it. Returns the open lock
    file (keep it referenced), or None for PostgreSQL.
    """
    if not settings.database_url.startswith("sqlite:///"):
        return None
    path = Path(sqlite_path(settings.database_url))
    lock_path = path.with_name(path.name + ".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = lock_path.open("a+b")
    except OSError as exc:
        raise database_failure(settings.database_url, exc) from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().decode(errors="replace").strip()
        handle.close()
        raise StartupFailed(
            EXIT_IN_USE,
            f"{path} is in use by another jobsup server ({holder or 'pid unknown'}); "
            "SQLite supports one instance: stop that one, or use PostgreSQL for several",
        ) from None
    with contextlib.suppress(OSError):
        handle.truncate(0)
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}".encode())
        handle.flush()
    return handle


def load_settings(args: argparse.Namespace) -> Settings:
    """The environment's settings, with ``--host``/``--port`` over them; StartupFailed if bad."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise StartupFailed(EXIT_USAGE, str(exc)) from None
    changes: dict[str, Any] = {}
    if getattr(args, "host", None) is not None:
        changes["host"] = args.host
    if getattr(args, "port", None) is not None:
        changes["port"] = args.port
    return dataclasses.replace(settings, **changes)
