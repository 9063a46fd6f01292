"""Admission and lifecycle: pending jobs start in arrival order as slots free up.

The scheduler owns the running ``Run`` objects and the launcher thread that
asks the forkserver for children (a blocking exchange of a few milliseconds,
kept off the event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.context import ForkServerContext

from supervisor.job import CancelInfo, Job, now
from supervisor.launcher import JobProcess
from supervisor.runs import Run
from supervisor.settings import Settings
from supervisor.state import TERMINAL, JobStatus
from supervisor.table import JobTable
from workers.entry import ChildSpec

log = logging.getLogger("jobsup.scheduler")


class QueueFull(Exception):
    pass


class Scheduler:
    def __init__(self, table: JobTable, ctx: ForkServerContext, settings: Settings) -> None:
        self._table = table
        self._ctx = ctx
        self._settings = settings
        self._pending: deque[str] = deque()
        self.runs: dict[str, Run] = {}
        self.accepting = True
        self._launcher = ThreadPoolExecutor(1, thread_name_prefix="jobsup-launch")
        self._idle = asyncio.Event()
        self._idle.set()
        self._starting: set[asyncio.Future[None]] = set()

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def check_room(self) -> None:
        if len(self._pending) >= self._settings.max_pending_jobs:
            raise QueueFull

    def enqueue(self, job: Job) -> None:
        self._pending.append(job.id)
        self.admit()

    def admit(self) -> None:
        while (
            self.accepting and self._pending and len(self.runs) < self._settings.max_concurrent_jobs
        ):
            job = self._table.get(self._pending.popleft())
            if job is not None and job.status is JobStatus.PENDING:
                self._launch(job)

    def _launch(self, job: Job) -> None:
        spec = ChildSpec(
            job.id,
            job.type,
            bytes(job.config),
            self._settings.database_url,
            self._settings.job_modules,
        )
        run = Run(job.id, JobProcess(self._ctx, spec), self._table, self._settings, self._exited)
        self.runs[job.id] = run
        self._idle.clear()
        self._table.update(job, owner=self._settings.instance_id, attempts=job.attempts + 1)
        starting = asyncio.ensure_future(self._start(run))
        self._starting.add(starting)
        starting.add_done_callback(self._starting.discard)

    async def _start(self, run: Run) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._launcher, run.process.start)
        except Exception as exc:
            log.exception("could not start job %s", run.job_id)
            job = self._table.get(run.job_id)
            if job is not None and job.status not in TERMINAL:
                error = {"reason": "spawn", "type": type(exc).__name__, "message": str(exc)}
                self._table.move(job, JobStatus.FAILED, error=error, completed_at=now())
            self._exited(run)
            return
        run.attach()

    def _exited(self, run: Run) -> None:
        self.runs.pop(run.job_id, None)
        if not self.runs:
            self._idle.set()
        self.admit()

    async def cancel(self, job: Job, reason: str = "user") -> None:
        """Cancel a live job: at once if pending, by escalation if running."""
        run = self.runs.get(job.id)
        if run is not None:
            run.request_cancel(reason)
            return
        if job.status is JobStatus.PENDING:
            with contextlib.suppress(ValueError):
                self._pending.remove(job.id)
            info = CancelInfo(requested_at=now(), reason=reason, exited_at=None)
            await self._table.move(job, JobStatus.CANCELLED, cancel=info, completed_at=now())

    async def shutdown(self, grace_s: float) -> None:
        """Stop admitting, cancel running jobs, escalate at the deadline, wait for all."""
        self.accepting = False
        for run in list(self.runs.values()):
            run.request_cancel("shutdown")
        deadline = time.monotonic() + grace_s
        try:
            await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            for run in list(self.runs.values()):
                run.kill_now()
            await self._idle.wait()
        self._launcher.shutdown(wait=True)
