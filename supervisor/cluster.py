"""This instance among others on one database: heartbeats, rescue, cancel and pause requests.

With SQLite there is one instance, and these loops cost a query a second.
With PostgreSQL, any number of instances share the job table: each claims
pending jobs for itself (``Scheduler``), heartbeats here, rescues the jobs
of instances that stopped heartbeating, and hears cancel, pause and resume
requests made on other instances through LISTEN/NOTIFY, with polling as the
fallback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from supervisor import recovery
from supervisor.notify import Notices
from supervisor.scheduler import Scheduler
from supervisor.settings import Settings, SettingsError
from supervisor.state import JobStatus
from supervisor.store import Store, claims, instances, is_unique_violation
from supervisor.store import jobs as sql
from workers.db import DatabaseUnavailable
from workers.times import now_ms

log = logging.getLogger("jobsup.cluster")

# A pending job stored as ours but not held here this long after its claim
# was never adopted (a claim retried after its commit landed): give it back.
STRAY_AFTER_S = 10.0


class Cluster:
    def __init__(self, settings: Settings, store: Store, scheduler: Scheduler) -> None:
        self.settings = settings
        self.store = store
        self.scheduler = scheduler
        self.me = settings.instance_id
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.listening = asyncio.Event()  # LISTEN is in place (PostgreSQL)
        self.notices = Notices.of(settings)  # a rescued job's end is notified too

    async def join(self) -> None:
        # A fixed JOBSUP_INSTANCE_ID may come back after a crash: what that
        # earlier life left is rescued like any dead instance's jobs. But two
        # live processes must never share one id.
        timeout_ms = int(self.settings.node_timeout_s * 1000)
        try:
            taken = await self.store.call(
                instances.take_id,
                self.me,
                self.host,
                self.pid,
                now_ms(),
                timeout_ms,
                write=True,
                retry_for=30,
            )
        except Exception as exc:
            if not is_unique_violation(exc):
                raise
            taken = False  # another process registered it in the same instant
        if not taken:
            raise SettingsError(
                f"JOBSUP_INSTANCE_ID={self.me} is in use by a live instance; ids must be unique"
            )
        await self.rescue(earlier_self=True)

    async def leave(self) -> None:
        """Unregister, so others need not wait out the timeout; best effort."""
        try:
            await self.store.call(instances.unregister, self.me, write=True, retry_for=5)
        except DatabaseUnavailable:
            log.warning("could not unregister %s; others will time it out", self.me)

    async def beat(self) -> None:
        known = await self.store.call(instances.heartbeat, self.me, now_ms(), write=True)
        if not known:
            await self._declared_dead()
        await self.rescue()
        await self._give_back_strays()

    async def _give_back_strays(self) -> None:
        """Unclaim pending jobs stored as ours that this instance does not hold."""
        held = frozenset(self.scheduler.held_ids())  # taken before the cutoff below
        before = now_ms() - int(STRAY_AFTER_S * 1000)
        strays = await self.store.call(claims.give_back_strays, self.me, held, before, write=True)
        if strays:
            log.warning("gave back %d claimed jobs this instance never started", len(strays))
            await self.store.call(claims.notify_pending, write=True)
            self.scheduler.wake()

    async def _declared_dead(self) -> None:
        """Others declared this instance dead (it stalled): its jobs are theirs now.

        Kill every local child at once and forget their jobs unwritten; hand
        back what is still stored under this id (a rescuer may not have got
        to it yet, and will not once this id is registered again); register.
        """
        log.error("this instance (%s) was declared dead by another; letting its jobs go", self.me)
        self.scheduler.let_go_of_everything()
        await self.rescue(earlier_self=True)
        await self.store.call(
            instances.register, self.me, self.host, self.pid, now_ms(), write=True
        )

    async def rescue(self, earlier_self: bool = False) -> None:
        """Rescue the live jobs of dead instances (and, at start, of our own earlier life)."""
        timeout_ms = int(self.settings.node_timeout_s * 1000)
        dead = await self.store.call(
            instances.remove_dead, self.me, self.host, now_ms(), timeout_ms, write=True
        )
        for instance_id in dead:
            log.warning("instance %s is gone; rescuing its jobs", instance_id)
        orphans = await self.store.call(claims.orphaned_jobs, self.me if earlier_self else None)
        requeued = False
        for job in orphans:
            new = recovery.rescued(job)
            rank = None
            if new.status is JobStatus.SCHEDULED:  # a retry: it waits, in the claim order
                rank = sql.queue_rank(new, self.scheduler.aging_ms)
                self.scheduler.wake_at(new.run_at)
            if await self.store.call(
                claims.rescue_job, job, new, now_ms(), rank, self.notices.notice_of, write=True
            ):
                log.warning("job %s of %s: %s -> %s", job.id, job.owner, job.status, new.status)
                requeued = requeued or new.owner is None
        if requeued:
            await self.store.call(claims.notify_pending, write=True)
            self.scheduler.wake()

    async def poll_cancel_requests(self) -> None:
        for job_id, reason, by in await self.store.call(claims.cancel_requests, self.me):
            await self.scheduler.cancel_local(job_id, reason, by)

    async def poll_pause_requests(self) -> None:
        for job_id, action in await self.store.call(claims.pause_requests, self.me):
            await self.scheduler.take_pause_request(job_id, action)

    async def listen(self) -> None:
        """LISTEN for cancel requests and new jobs (PostgreSQL only); reconnects."""
        import psycopg

        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.settings.database_url, autocommit=True
                ) as conn:
                    await conn.execute("LISTEN jobsup_cancel")
                    await conn.execute("LISTEN jobsup_pending")
                    await conn.execute("LISTEN jobsup_pause")
                    self.listening.set()
                    delay = 0.5
                    async for note in conn.notifies():
                        if note.channel == "jobsup_cancel":
                            job_id, reason, by = claims.parse_cancel_note(note.payload)
                            await self.scheduler.cancel_local(job_id, reason, by)
                        elif note.channel == "jobsup_pause":
                            job_id, _, action = note.payload.partition(" ")
                            if self.scheduler.runs.get(job_id) is not None:
                                await self.scheduler.take_pause_request(job_id, action)
                        else:
                            self.scheduler.wake()
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self.listening.clear()
                log.warning("LISTEN connection lost (%s); polling until it is back", exc)
            except Exception:
                # A bug here must not end listening for good: the poll covers
                # the gap, and a fresh connection starts over.
                self.listening.clear()
                log.exception("LISTEN loop failed; polling until it is back")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
