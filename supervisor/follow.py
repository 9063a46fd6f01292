"""Events of jobs this instance does not hold, read from the store (PostgreSQL).

The owner's table publishes a job's events in the owner's process only.
Its progress and partial results reach the database by the owner's flush
(every ``progress_flush_s``), which NOTIFY does not carry; so an instance
whose streams follow another's jobs reads them from the store every
``events_follow_s`` and publishes the differences on its own bus, with the
same kinds. Only while someone follows: a one-job stream follows its job
(one query for all followed ids), an every-job stream follows the live jobs
no instance here holds (one query, at most ``FOLLOW_LIMIT`` jobs). The
events are as fine as the owner's flushes and this poll: progress arrives
coalesced, at most once per interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence

from supervisor.events import Kind
from supervisor.job import Job, Progress
from supervisor.state import ACTIVE, TERMINAL, JobStatus
from supervisor.store import jobs as sql
from supervisor.table import JobTable

log = logging.getLogger("jobsup.follow")

# At most this many foreign jobs are read per poll.
FOLLOW_LIMIT = 1000


_PAUSE_EVENTS = {JobStatus.PAUSING: Kind.PAUSING, JobStatus.PAUSED: Kind.PAUSED}


class Follower:
    def __init__(self, table: JobTable, me: str, interval_s: float) -> None:
        self.table = table
        self.bus = table.events
        self.me = me
        self.interval_s = interval_s
        self._ids: Counter[str] = Counter()
        self._all = 0
        self._seen: dict[str, Job] = {}
        self._task: asyncio.Task[None] | None = None

    def follow(self, job_id: str, seen: Job | None = None) -> Callable[[], None]:
        """Follow one job (``seen``: its state as the follower's stream last showed it).

        Returns the function that stops following it.
        """
        self._ids[job_id] += 1
        if seen is not None and self.table.get(job_id) is None:
            self._seen.setdefault(job_id, seen)
        self._ensure()

        def stop() -> None:
            self._ids[job_id] -= 1
            if self._ids[job_id] <= 0:
                del self._ids[job_id]

        return _once(stop)

    def follow_all(self, seen: Sequence[Job] = ()) -> Callable[[], None]:
        """Follow every live job not held here (``seen``: as the stream's snapshots showed them)."""
        self._all += 1
        for job in seen:
            if self.table.get(job.id) is None:
                self._seen.setdefault(job.id, job)
        self._ensure()

        def stop() -> None:
            self._all -= 1

        return _once(stop)

    def _ensure(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while self._ids or self._all:
            await asyncio.sleep(self.interval_s)
            try:
                await self.poll()
            except Exception as exc:  # the database is down, say: the next poll retries
                log.warning("reading followed jobs failed: %s", exc)
        self._seen.clear()

    async def poll(self) -> None:
        store = self.table.store
        ids = [i for i in self._ids if self.table.get(i) is None][:FOLLOW_LIMIT]
        jobs = {j.id: j for j in await store.call(sql.get_jobs, ids, True)} if ids else {}
        if self._all:
            for job in await store.call(sql.foreign_live_jobs, self.me, FOLLOW_LIMIT):
                jobs.setdefault(job.id, job)
            # Seen live, now gone from the live list: read how it ended.
            gone = [
                i
                for i, j in self._seen.items()
                if i not in jobs and j.status not in TERMINAL and self.table.get(i) is None
            ][:FOLLOW_LIMIT]
            if gone:
                for job in await store.call(sql.get_jobs, gone, False):
                    jobs[job.id] = job
        for job in jobs.values():
            if self.table.get(job.id) is not None:
                self._seen.pop(job.id, None)  # held here now: the table publishes it
                continue
            self._publish(self._seen.get(job.id), job)
            self._seen[job.id] = job
        for job_id in [i for i in self._seen if i not in jobs and i not in self._ids]:
            del self._seen[job_id]

    def _publish(self, prev: Job | None, job: Job) -> None:
        publish = self.bus.publish
        if prev is None:
            before = JobStatus.PENDING if self.bus.knows(job.id) else None
        else:
            before = prev.status
        if before is None and job.status is JobStatus.PENDING:
            publish(Kind.CREATED, job)
        running = job.status in (*ACTIVE, JobStatus.CANCELLING)
        if running and before in (None, JobStatus.PENDING):
            publish(Kind.STARTED, job)
        if job.status is JobStatus.CANCELLING and before is not JobStatus.CANCELLING:
            publish(Kind.CANCELLING, job)
        if job.status in _PAUSE_EVENTS and before is not job.status:
            publish(_PAUSE_EVENTS[job.status], job)
        if job.status is JobStatus.RUNNING and before in _PAUSE_EVENTS:
            publish(Kind.RESUMED, job)
        if job.status not in TERMINAL:
            old_progress = prev.progress if prev is not None else Progress()
            if job.progress != old_progress:
                publish(Kind.PROGRESS, job)
            if prev is not None and job.result is not None and job.result != prev.result:
                publish(Kind.PARTIAL, job)
        elif before not in TERMINAL:
            publish(Kind.FINISHED, job)


def _once(fn: Callable[[], None]) -> Callable[[], None]:
    done = False

    def call() -> None:
        nonlocal done
        if not done:
            done = True
            fn()

    return call
