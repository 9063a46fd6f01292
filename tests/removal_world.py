"""The removal domain's in-process test world: databases, a real JobContext, groups.

Jobs run in-process over a real JobContext and pipe, against a fresh SQLite
file and (marked ``postgres``) a PostgreSQL database made per test module.
Each job has its row in the jobs table, owned by ``OWNER`` at attempt 1, so
the removal's fence is checked as in a child. Test modules import the
fixtures they use from here.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from multiprocessing import Pipe
from typing import Any

import psycopg
import pytest
from psycopg import sql

from supervisor.store import jobs as job_store
from supervisor.store.migrations import migrate
from workers import directory, protocol
from workers.context import Channel, JobContext
from workers.db import Database, connect
from workers.directory import GroupIn, MemberIn, current_ms
from workers.directory import queue as removal_queue
from workers.removal import RemovalQueueConfig, RemovalWorkflowConfig

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DAY = timedelta(days=1)
DAY_MS = 86_400_000
WINDOW_MS = 30 * DAY_MS
GROUP = "120363000000000001@g.us"
TABLES = (
    "wa_groups",
    "wa_members",
    "wa_whitelist",
    "removal_queue",
    "removal_history",
    "removal_intents",
    "jobs",
)
OWNER = "instance-under-test"
COMPONENTS = {"jobs": job_store.MIGRATIONS, "directory": directory.MIGRATIONS}


# --- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="module")
def module_pg_url() -> Iterator[str]:
    name = f"jobsup_test_removal_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    try:
        db = connect(url)
        try:
            migrate(db, COMPONENTS)
        finally:
            db.close()
        yield url
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobsup.db'}"
        db = connect(url)
        try:
            migrate(db, COMPONENTS)
        finally:
            db.close()
        return url
    url = str(request.getfixturevalue("module_pg_url"))
    db = connect(url)
    try:  # one database per module: start each test from empty tables
        with db.transaction():
            for table in TABLES[::-1]:
                db.execute(f"DELETE FROM {table}")
    finally:
        db.close()
    return url


@pytest.fixture
def db(url: str) -> Iterator[Database]:
    db = connect(url)
    yield db
    db.close()


class RecordingContext(JobContext):
    """A real JobContext whose sleeps are recorded rather than waited, so tests never sleep.

    A sleep still honours the cancel Event, as the real one does.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sleeps: list[float] = []
        self.progress_interval_s = 0  # every report is sent: these tests read them all
        # Something to happen in the world between two batches (the sleep between them).
        self.between_batches: Callable[[], None] | None = None

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.between_batches is not None:
            self.between_batches()
        super().sleep(0)


CancelWhen = Callable[[dict[str, Any]], bool]


class CancellingChannel(Channel):
    """Sets the cancel Event, as an operator would, once a partial result satisfies ``when``."""

    def __init__(self, conn: Any, cancel: threading.Event, when: CancelWhen) -> None:
        super().__init__(conn, threading.Event())
        self._cancel = cancel
        self._when = when

    def send(self, message: protocol.Message) -> None:
        super().send(message)
        if isinstance(message, protocol.Partial) and self._when(message.result):
            self._cancel.set()


class Job:
    """One job's context over a real pipe, and the messages it sent."""

    def __init__(self, url: str, job_id: str, cancel_when: CancelWhen | None = None) -> None:
        self.reader, self.writer = Pipe(duplex=False)
        self.cancel = threading.Event()
        channel = (
            Channel(self.writer, threading.Event())
            if cancel_when is None
            else CancellingChannel(self.writer, self.cancel, cancel_when)
        )
        self.ctx = RecordingContext(job_id, url, channel, self.cancel, owner=OWNER, attempt=1)
        self._received: list[protocol.Message] = []
        put_job_row(url, job_id)

    def messages(self) -> list[protocol.Message]:
        # Drained after the run: these tests send far less than a pipe buffers.
        while self.reader.poll():
            self._received.append(protocol.decoder.decode(self.reader.recv_bytes()))
        return self._received

    def progress(self, phase: str) -> list[protocol.Progress]:
        return [m for m in self.messages() if isinstance(m, protocol.Progress) and m.phase == phase]

    def partials(self) -> list[dict[str, Any]]:
        return [m.result for m in self.messages() if isinstance(m, protocol.Partial)]

    def logs(self) -> list[str]:
        return [m.message for m in self.messages() if isinstance(m, protocol.Log)]

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


def put_job_row(url: str, job_id: str, owner: str = OWNER, attempts: int = 1) -> None:
    """The job's row as a claim and launch leave it: running, owned, this attempt."""
    db = connect(url)
    try:
        db.execute(
            "INSERT INTO jobs (id, type, status, config, progress, created_at, updated_at,"
            " owner, attempts) VALUES (?, 'removal_workflow', 'running', '{}', '{}', 0, 0, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, attempts = excluded.attempts",
            (job_id, owner, attempts),
        )
    finally:
        db.close()


@pytest.fixture
def make_job(url: str) -> Iterator[Any]:
    jobs: list[Job] = []

    def make(job_id: str = "job-1", cancel_when: CancelWhen | None = None) -> Job:
        jobs.append(Job(url, job_id, cancel_when))
        return jobs[-1]

    yield make
    for job in jobs:
        job.close()


# --- helpers -------------------------------------------------------------------


def member(
    whatsapp_id: str,
    *,
    idle_days: float | None = None,
    joined_days: float = 400,
    admin: bool = False,
) -> MemberIn:
    """A member who joined ``joined_days`` ago and was last active ``idle_days`` ago."""
    now = datetime.now(UTC)
    return MemberIn(
        whatsapp_id=whatsapp_id,
        is_admin=admin,
        joined_at=now - joined_days * DAY,
        last_active_at=None if idle_days is None else now - idle_days * DAY,
    )


def put_group(db: Database, members: list[MemberIn], name: str = "Garden") -> None:
    directory.upsert_group(db, GROUP, GroupIn(name=name, members=members), current_ms())


def snapshot(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    return {t: sorted(db.query(f"SELECT * FROM {t}"), key=repr) for t in TABLES if t != "jobs"}


def history(db: Database) -> list[tuple[str, str, str | None, str | None]]:
    rows = db.query(
        "SELECT whatsapp_id, outcome, reason, job_id FROM removal_history WHERE group_wa_id = ?",
        (GROUP,),
    )
    return sorted(rows)


def queued_ids(db: Database) -> list[str]:
    return [e.whatsapp_id for e in removal_queue.read_queue(db, GROUP)]


def current_ids(db: Database) -> list[str]:
    return [m.whatsapp_id for m in directory.list_members(db, GROUP)]


def workflow(
    batch_size: int = 2, delay_ms: int = 0, dry_run: bool = False
) -> RemovalWorkflowConfig:
    return RemovalWorkflowConfig(
        group_wa_id=GROUP,
        batch_size=batch_size,
        delay_ms=delay_ms,
        dry_run=dry_run,
        inactivity_window_ms=WINDOW_MS,
    )


def queue_job(batch_size: int = 2, delay_ms: int = 0, dry_run: bool = False) -> RemovalQueueConfig:
    return RemovalQueueConfig(
        group_wa_id=GROUP, batch_size=batch_size, delay_ms=delay_ms, dry_run=dry_run
    )


INACTIVE = [f"idle-{i}" for i in range(1, 6)]


def garden(db: Database) -> None:
    """Five inactive members, and an inactive admin, an inactive whitelisted one, an active one."""
    put_group(
        db,
        [member(wid, idle_days=100) for wid in INACTIVE]
        + [
            member("admin", idle_days=100, admin=True),
            member("friend", idle_days=100),
            member("talker", idle_days=1),
        ],
    )
    directory.set_whitelist(db, GROUP, ["friend"])


def queue_earlier(db: Database, *whatsapp_ids: str) -> None:
    """Queue these as an earlier sync would have, one hour apart, oldest first."""
    start = current_ms() - len(whatsapp_ids) * 3_600_000
    db.executemany(
        "INSERT INTO removal_queue (group_wa_id, whatsapp_id, queued_at, window_ms, job_id)"
        " VALUES (?, ?, ?, ?, ?)",
        [
            (GROUP, wid, start + i * 3_600_000, WINDOW_MS, "job-old")
            for i, wid in enumerate(whatsapp_ids)
        ],
    )
