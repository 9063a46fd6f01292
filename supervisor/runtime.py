"""Everything the front process runs besides HTTP: store, table, scheduler, loops.

``Runtime.start`` is the lifespan's startup, ``Runtime.stop`` its shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from supervisor.cluster import Cluster
from supervisor.events import EventBus, Kind
from supervisor.follow import Follower
from supervisor.launcher import ensure_forkserver, forkserver_context
from supervisor.notify import Notices, Sender
from supervisor.scheduler import Scheduler
from supervisor.schedules import ScheduleService
from supervisor.service import JobService
from supervisor.settings import Settings
from supervisor.store import DatabaseBusy, Store, access, claims, outbox
from supervisor.store import jobs as sql
from supervisor.table import JobTable
from workers import registry
from workers.db import DatabaseUnavailable
from workers.times import now_ms

log = logging.getLogger("jobsup")

# After the jobs have stopped, the least time given to writing their final states.
FINAL_WRITES_S = 3.0
# How long startup waits for LISTEN before serving anyway (polling covers it).
LISTEN_READY_S = 5.0


class Runtime:
    def __init__(
        self, settings: Settings, store: Store, table: JobTable, scheduler: Scheduler
    ) -> None:
        self.settings = settings
        self.store = store
        self.table = table
        self.scheduler = scheduler
        self.service = JobService(table, scheduler, settings)
        self.cluster = Cluster(settings, store, scheduler)
        self.schedules = ScheduleService(self.service, store, scheduler, settings)
        self._tasks: list[asyncio.Task[None]] = []
        table.notices = Notices.of(settings)
        # Every instance sends the outbox's due rows (each row leased to one).
        # Without a secret nothing can be signed: rows wait for one.
        self.sender: Sender | None = None
        if settings.notify_secret:
            self.sender = Sender(store, settings.notify_secret, settings.poll_s)
        self._loop: asyncio.AbstractEventLoop | None = None
        # Streams of jobs other instances hold (PostgreSQL: there can be others).
        self.follower: Follower | None = None
        if store.dialect == "postgresql":
            self.follower = Follower(table, settings.instance_id, settings.events_follow_s)

    @property
    def events(self) -> EventBus:
        return self.table.events

    def end_streams_soon(self) -> None:
        """End every open event stream; safe in a signal handler (schedules it on the loop)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.table.events.close)

    @classmethod
    async def start(cls, settings: Settings, role: str = "web") -> Runtime:
        """Start an instance: ``role`` is "web" (``jobsup serve``) or "worker" (for the logs)."""
        loop = asyncio.get_running_loop()
        registry.load(settings.job_modules)
        store = Store(settings.database_url)
        applied = await loop.run_in_executor(None, store.migrate)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        ctx = forkserver_context(settings.job_modules)
        if settings.max_concurrent_jobs > 0:  # a web instance that runs nothing needs none
            await loop.run_in_executor(None, ensure_forkserver)
        events = EventBus(settings.events_buffer, max_queue=settings.events_queue)
        table = JobTable(store, events)
        runtime = cls(settings, store, table, Scheduler(table, ctx, settings))
        runtime._loop = loop
        await runtime.cluster.join()
        runtime.scheduler.wake()
        runtime.scheduler.refill()
        runtime._every(settings.progress_flush_s, table.flush)
        runtime._every(settings.cleanup_interval_s, runtime.sweep)
        runtime._every(settings.heartbeat_s, runtime.cluster.beat)
        runtime._every(settings.poll_s, runtime.poll)
        runtime._tasks.append(asyncio.ensure_future(runtime.fire_schedules()))
        if runtime.sender is not None:
            events.listen(runtime.sender.on_event)
            runtime._tasks.append(asyncio.ensure_future(runtime.sender.run()))
        if store.dialect == "postgresql":
            runtime._tasks.append(asyncio.ensure_future(runtime.cluster.listen()))
            # Ready means listening: a cancel sent from another instance right
            # after this one starts must not wait for the polling fallback.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runtime.cluster.listening.wait(), LISTEN_READY_S)
        if settings.max_concurrent_jobs == 0:
            log.info(
                "%s instance %s ready on %s; it runs no job (JOBSUP_MAX_CONCURRENT_JOBS=0):"
                " workers run them",
                role,
                settings.instance_id,
                store.dialect,
            )
        else:
            log.info(
                "%s instance %s ready on %s; it runs up to %d jobs at once",
                role,
                settings.instance_id,
                store.dialect,
                settings.max_concurrent_jobs,
            )
        return runtime

    async def poll(self) -> None:
        """The fallback for missed NOTIFYs: new pending jobs, remote cancel and pause requests."""
        self.scheduler.wake()
        await self.cluster.poll_cancel_requests()
        await self.cluster.poll_pause_requests()

    async def fire_schedules(self) -> None:
        """Fire due schedules; wake at the earliest tick known, and at least every poll period.

        Every instance runs this; ``ScheduleService.tick`` fires each tick once among them.
        """
        while True:
            wait = self.settings.poll_s
            try:
                wait = min(wait, await self.schedules.tick())
            except (DatabaseUnavailable, DatabaseBusy) as exc:
                log.warning("background fire_schedules: database unavailable (%s)", exc)
            except Exception:
                log.exception("background fire_schedules failed")
            await asyncio.sleep(wait)

    async def sweep(self) -> None:
        dropped = self.table.sweep(self.settings.job_ttl_s)
        cutoff_ms = int((time.time() - self.settings.retention_days * 86400) * 1000)
        pruned = await self.store.call(sql.prune, cutoff_ms, write=True)
        await self.store.call(access.prune_audit, cutoff_ms, write=True)
        await self.cancel_paused_too_long()
        await self.store.call(outbox.prune, cutoff_ms, write=True)
        if dropped or pruned:
            log.info(
                "swept %d finished jobs from memory, pruned %d from the store", dropped, pruned
            )

    async def cancel_paused_too_long(self) -> None:
        """Cancel jobs paused unclaimed (across a restart) past JOBSUP_PAUSED_TIMEOUT_S.

        A paused job held by an instance has its own timer (``Run``); these
        have no instance, so whichever sweeps first cancels them.
        """
        before = int((time.time() - self.settings.paused_timeout_s) * 1000)
        ended = await self.store.call(
            claims.cancel_paused_too_long,
            before,
            now_ms(),
            self.table.notices.notice_of,
            write=True,
        )
        for job in ended:
            log.warning("job %s paused too long while unclaimed: cancelled", job.id)
            self.table.events.publish(Kind.FINISHED, job)

    def _every(self, interval: float, fn: Callable[[], Awaitable[None]]) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await fn()
                except DatabaseUnavailable as exc:
                    log.warning("background %s: database unavailable (%s)", fn.__name__, exc)
                except Exception:
                    log.exception("background %s failed", fn.__name__)

        self._tasks.append(asyncio.ensure_future(loop()))

    async def stop(self) -> None:
        """Shut down, always to the end: a failed step is logged, and the next one runs."""
        log.info("shutting down: stopping %d running jobs", len(self.scheduler.runs))
        self.table.events.close()  # open event streams end: they hold nothing up
        if self.follower is not None:
            self.follower.stop()
        deadline = time.monotonic() + self.settings.shutdown_grace_s
        try:
            await self._stop_loops()
            if self.sender is not None:
                await self.sender.stop()
            await self.scheduler.shutdown(self.settings.shutdown_grace_s)
        finally:
            try:
                await self._drain_and_leave(deadline)
            finally:
                await asyncio.get_running_loop().run_in_executor(None, self.store.close)

    async def _stop_loops(self) -> None:
        """Cancel the background loops; one that died of an error has it logged, not raised."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("a background loop had died")

    async def _drain_and_leave(self, deadline: float) -> None:
        left = await self.table.drain(max(FINAL_WRITES_S, deadline - time.monotonic()))
        if left:
            # The database is down: the next start finds these jobs live and
            # rescues them like any crashed instance's.
            log.error("database unavailable at shutdown: %d state writes not saved", left)
            return
        try:
            await self.cluster.leave()
        except Exception:  # the others will declare this instance dead instead
            log.exception("could not unregister this instance")
