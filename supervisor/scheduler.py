"""Admission and lifecycle: this instance claims pending jobs as slots free up.

Pending jobs wait in the database, unowned, in arrival order. When this
instance has a free slot it claims the oldest (``claim_jobs``; on PostgreSQL
with ``SKIP LOCKED``, so instances never take the same job) and starts a
child for each. The scheduler owns the running ``Run`` objects and the
launcher thread that asks the forkserver for children (a blocking exchange
of a few milliseconds, kept off the event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.context import ForkServerContext

import msgspec

from supervisor.job import CancelInfo, Job, now
from supervisor.launcher import JobProcess
from supervisor.runs import Run
from supervisor.settings import Settings
from supervisor.state import TERMINAL, JobStatus
from supervisor.store import claims
from supervisor.table import JobTable, now_ms
from workers.entry import ChildSpec

log = logging.getLogger("jobsup.scheduler")

SPARE_REFILL_DELAY_S = 0.1


class Scheduler:
    def __init__(self, table: JobTable, ctx: ForkServerContext, settings: Settings) -> None:
        self._table = table
        self._store = table.store
        self._ctx = ctx
        self._settings = settings
        self.runs: dict[str, Run] = {}
        self.accepting = True
        self._launcher = ThreadPoolExecutor(1, thread_name_prefix="jobsup-launch")
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Future[None]] = set()
        self._claiming = False
        self._claim_again = False
        self._spare: JobProcess | None = None
        self._reserved = 0  # slots held by submits that may claim their job
        self._claiming_slots = 0  # slots held by a claim in flight
        self._spare_starting = False

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- admission -------------------------------------------------------------

    def wake(self) -> None:
        """Claim pending jobs for the free slots, now or right after the current claim."""
        if self._claiming:
            self._claim_again = True
        elif self.accepting:
            self._claiming = True
            self._spawn(self._claim())

    def reserve_slot(self) -> bool:
        """Hold a free slot for a job being submitted here, which may take it at once."""
        if not self.accepting or self._free() <= 0:
            return False
        self._reserved += 1
        return True

    def release_slot(self, reserved: bool) -> None:
        if reserved:
            self._reserved -= 1

    def run_claimed(self, job: Job) -> None:
        """Start a job this instance claimed when it was submitted."""
        job.owner = self._settings.instance_id  # one shared string, not one per job
        self._table.adopt(job)
        self._launch(job)

    def running(self) -> int:
        """Jobs whose end is not yet known (a child still exiting is not counted)."""
        return sum(1 for run in self.runs.values() if not run.settled)

    def _free(self) -> int:
        taken = self.running() + self._reserved + self._claiming_slots
        return self._settings.max_concurrent_jobs - taken

    async def _claim(self) -> None:
        try:
            while self.accepting:
                self._claim_again = False
                free = self._free()
                if free <= 0:
                    break
                self._claiming_slots = free  # held while the claim is in flight
                try:
                    claimed = await self._store.call(
                        claims.claim_jobs, self._settings.instance_id, free, now_ms(), write=True
                    )
                finally:
                    self._claiming_slots = 0
                if not self.accepting:  # shutdown began meanwhile: give them back
                    ids = [job.id for job, _key in claimed]
                    await self._store.call(
                        claims.unclaim, ids, self._settings.instance_id, write=True
                    )
                    break
                for job, _key in claimed:
                    job.owner = self._settings.instance_id  # shared, not one per job
                    self._table.adopt(job)
                    self._launch(job)
                if len(claimed) < free and not self._claim_again:
                    break
        except Exception:
            log.exception("claiming pending jobs failed; the next poll retries")
        finally:
            self._claiming = False

    def _launch(self, job: Job) -> None:
        spec = ChildSpec(
            job.id,
            job.type,
            bytes(job.config),
            self._settings.database_url,
            owner=job.owner or "",
            attempt=job.attempts + 1,  # the attempt this launch starts
            job_modules=self._settings.job_modules,
        )
        spare = self._take_spare()
        process = spare or JobProcess(self._ctx, self._settings.child_nice)
        run = Run(job.id, process, self._table, self._settings, self._settled, self._exited)
        self.runs[job.id] = run
        self._idle.clear()
        self._table.update(job, attempts=job.attempts + 1)
        if spare is not None:
            spare.assign(spec)
            run.attach()
        else:
            self._spawn(self._start(run, spec))
        # Not at once: the fork would compete for the CPU with the job that
        # just started (and with a quick cancel of it).
        asyncio.get_running_loop().call_later(SPARE_REFILL_DELAY_S, self.refill)

    # -- the spare child ----------------------------------------------------------

    def _take_spare(self) -> JobProcess | None:
        spare, self._spare = self._spare, None
        if spare is not None and not spare.usable:
            spare.discard()  # it died waiting (OOM killer, a stray signal)
            return None
        return spare

    def refill(self) -> None:
        """Fork the next spare child in the background, so the next job need not wait."""
        wanted = self._settings.spare_child and self.accepting and self._spare is None
        if wanted and not self._spare_starting:
            self._spare_starting = True
            self._spawn(self._fork_spare())

    async def _fork_spare(self) -> None:
        process = JobProcess(self._ctx, self._settings.child_nice)
        try:
            await asyncio.get_running_loop().run_in_executor(self._launcher, process.start)
        except Exception:
            log.exception("could not fork a spare child")
            return
        finally:
            self._spare_starting = False
        if self.accepting and self._spare is None:
            self._spare = process
        else:
            process.discard()

    async def _start(self, run: Run, spec: ChildSpec) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._launcher, run.process.start)
            run.process.assign(spec)
        except Exception as exc:
            log.exception("could not start job %s", run.job_id)
            job = self._table.get(run.job_id)
            if job is not None and job.status not in TERMINAL:
                error = {"reason": "spawn", "type": type(exc).__name__, "message": str(exc)}
                self._table.move(job, JobStatus.FAILED, error=error, completed_at=now())
            self._exited(run)
            return
        run.attach()

    def _settled(self, run: Run) -> None:
        self.wake()  # its slot is free

    def _exited(self, run: Run) -> None:
        self.runs.pop(run.job_id, None)
        run.exited.set_result(None)
        if not self.runs:
            self._idle.set()
        if not run.settled:  # never started: its slot is free only now
            self.wake()

    # -- cancellation --------------------------------------------------------------

    async def cancel_local(self, job_id: str, reason: str) -> bool:
        """Cancel a job this instance owns; False if it is not one of ours."""
        run = self.runs.get(job_id)
        if run is not None:
            run.request_cancel(reason)
            return True
        job = self._table.get(job_id)
        if job is None or job.status is not JobStatus.PENDING:
            return False
        info = CancelInfo(requested_at=now(), reason=reason)
        await self._table.move(job, JobStatus.CANCELLED, cancel=info, completed_at=now())
        return True

    async def exited(self, job_id: str, deadline: float) -> None:
        """Wait, until ``deadline`` (monotonic) at most, for the job's child to be gone."""
        run = self.runs.get(job_id)
        if run is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(run.exited), deadline - time.monotonic())

    async def cancel_unclaimed(self, job: Job, reason: str) -> bool:
        """Cancel a pending job nobody has claimed; False if someone has meanwhile."""
        cancelled = msgspec.structs.replace(
            job,
            status=JobStatus.CANCELLED,
            completed_at=now(),
            cancel=CancelInfo(requested_at=now(), reason=reason),
        )
        return await self._store.call(claims.cancel_unclaimed, cancelled, now_ms(), write=True)

    # -- shutdown ------------------------------------------------------------------

    async def shutdown(self, grace_s: float) -> None:
        """Stop claiming, cancel running jobs, escalate at the deadline, wait for all."""
        self.accepting = False
        if self._spare is not None:
            self._spare.discard()
            self._spare = None
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
