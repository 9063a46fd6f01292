"""Admission and lifecycle: this instance claims pending jobs as slots free up.

Pending jobs wait in the database, unowned, in claim order (arrival, moved
ahead by priority). When this instance has a free slot it claims the first
(``claim_jobs``; on PostgreSQL with ``SKIP LOCKED``, so instances never take
the same job) and starts a child for each. Scheduled jobs become pending in
the claim, once their time has come: a timer wakes the scheduler at the
earliest time it knows of (from its own starts and each claim's look
ahead), and the poll covers the rest. The scheduler owns the running ``Run`` objects and the
launcher thread that asks the forkserver for children (a blocking exchange
of a few milliseconds, kept off the event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from multiprocessing.context import ForkServerContext

import msgspec

from supervisor.events import Kind
from supervisor.job import CancelInfo, Job, RequestedBy, now
from supervisor.launcher import JobProcess
from supervisor.logs import about_job
from supervisor.runs import Run, resumable
from supervisor.settings import Settings
from supervisor.spare import SparePool
from supervisor.state import TERMINAL, JobStatus, RunPhase, check_transition, job_error
from supervisor.store import claims
from supervisor.table import JobTable
from workers.entry import ChildSpec
from workers.times import now_ms, to_ms

log = logging.getLogger("jobsup.scheduler")

SPARE_REFILL_DELAY_S = 0.1
PAUSE_STATES = frozenset({JobStatus.PAUSING, JobStatus.PAUSED})
# The scheduled-job timer sleeps at most this long; the poll runs meanwhile anyway.
MAX_TIMER_S = 3600.0
# At shutdown, how long at least the ended runs' exit statuses are awaited
# (they follow the children's ends by a millisecond or so).
REAP_WAIT_S = 1.0


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
        self._reaping: set[Run] = set()  # ended, their exit status not yet read
        self._tasks: set[asyncio.Future[None]] = set()
        self._claiming = False
        self._claim_again = False
        self._reserved = 0  # slots held by submits that may claim their job
        self._claiming_slots = 0  # slots held by a claim in flight
        self._held_until = 0.0  # monotonic: admissions paused until then
        self._hold_timer: asyncio.TimerHandle | None = None
        self._due_timer: asyncio.TimerHandle | None = None
        self._due_ms: int | None = None  # the earliest scheduled job's time we know of
        self.aging_ms = int(settings.priority_aging_s * 1000)
        self._spares = SparePool(
            ctx,
            settings.child_nice,
            self._launcher,
            # No slot, no spare: a web instance with no job slots forks nothing.
            wanted=lambda: (
                settings.spare_child and settings.max_concurrent_jobs > 0 and self.admitting()
            ),
            on_sigterm=self.hold_admissions,
        )
        table.on_lost = self._lost

    def _spawn(self, coro: object) -> None:
        # A fresh context: the request that woke the scheduler is not what its
        # work (another job's start, say) is about; its id stays off those lines.
        loop = asyncio.get_running_loop()
        task = loop.create_task(coro, context=contextvars.Context())  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- admission -------------------------------------------------------------

    def wake(self) -> None:
        """Claim pending jobs for the free slots, now or right after the current claim."""
        if self._claiming:
            self._claim_again = True
        elif self.admitting():
            self._claiming = True
            self._spawn(self._claim())

    def wake_at(self, at: datetime | int | None) -> None:
        """Claim again when a scheduled job becomes due (the earliest one known wins)."""
        if at is None:
            return
        due = at if isinstance(at, int) else to_ms(at)
        known = self._due_ms
        # An earlier time is armed, or has come and waits for the claim: keep it.
        if known is not None and known <= due and (self._due_timer or known <= now_ms()):
            return
        if self._due_timer is not None:
            self._due_timer.cancel()
        self._due_ms = due
        delay = min(MAX_TIMER_S, max(0.0, (due - now_ms()) / 1000))
        self._due_timer = asyncio.get_running_loop().call_later(delay, self._due)

    def _due(self) -> None:
        self._due_timer = None  # _due_ms stays: the next claim runs even with no free slot
        self.wake()

    def admitting(self) -> bool:
        """Whether this instance starts jobs now (not shutting down, not paused)."""
        return self.accepting and time.monotonic() >= self._held_until

    def stop_admissions(self) -> None:
        """The front's own SIGTERM: start nothing more. Safe in a signal handler (a flag)."""
        self.accepting = False

    def hold_admissions(self, why: str) -> None:
        """A SIGTERM reached one of our children unasked: the platform may be stopping us.

        Start nothing for ``sigterm_hold_s``; the front's own SIGTERM, if it
        comes, then stops admissions for good. If it does not (someone
        signalled one child by hand), admissions resume on their own.
        """
        hold = self._settings.sigterm_hold_s
        log.warning("%s: starting no job for %.0f s", why, hold)
        self._held_until = max(self._held_until, time.monotonic() + hold)
        self._spares.drop()  # forked before the signal, it may well have had it too
        if self._hold_timer is not None:
            self._hold_timer.cancel()
        self._hold_timer = asyncio.get_running_loop().call_later(hold, self._hold_over)

    def _hold_over(self) -> None:
        self._hold_timer = None
        if self.accepting:
            log.info("no stop followed the SIGTERM: starting jobs again")
            self.wake()
            self.refill()

    def reserve_slot(self) -> bool:
        """Hold a free slot for a job being submitted here, which may take it at once."""
        if not self.admitting() or self._free() <= 0:
            return False
        self._reserved += 1
        return True

    def release_slot(self, reserved: bool) -> None:
        if reserved:
            self._reserved -= 1

    def run_claimed(self, job: Job) -> None:
        """Start a job this instance claimed when it was submitted."""
        job.owner = self._settings.instance_id  # one shared string, not one per job
        if not self.admitting():  # a SIGTERM came during the insert: back to the queue
            self._spawn(self._unclaim([job]))
            return
        self._table.adopt(job)
        self._launch(job)

    async def _unclaim(self, jobs: list[Job]) -> None:
        if jobs:
            await self._store.call(claims.unclaim, jobs, write=True, retry_for=5.0)

    def held_ids(self) -> list[str]:
        """Jobs this instance holds: in memory, or with a run (a child) here."""
        return [*self._table.live_ids(), *self.runs]

    def running(self) -> int:
        """Jobs whose end is not yet known (a child still exiting is not counted)."""
        return sum(1 for run in self.runs.values() if not run.settled)

    def paused(self) -> int:
        """Jobs held here that are pausing or paused (each still holds its slot)."""
        held = (self._table.get(job_id) for job_id in self.runs)
        return sum(1 for j in held if j is not None and j.status in PAUSE_STATES)

    def _free(self) -> int:
        taken = self.running() + self._reserved + self._claiming_slots
        return self._settings.max_concurrent_jobs - taken

    async def _claim(self) -> None:
        try:
            while self.admitting():
                self._claim_again = False
                free = self._free()
                due = self._due_ms is not None and self._due_ms <= now_ms()
                if free <= 0 and not due:
                    break
                self._claiming_slots = max(0, free)  # held while the claim is in flight
                try:
                    claimed, next_due = await self._store.call(
                        claims.claim_and_look_ahead,
                        self._settings.instance_id,
                        free,
                        now_ms(),
                        self._table.notices.notice_of,
                        write=True,
                    )
                finally:
                    self._claiming_slots = 0
                if due:  # moved to pending in that claim
                    self._due_ms = None
                self.wake_at(next_due)
                for job, _saved in claimed:
                    job.owner = self._settings.instance_id  # shared, not one per job
                # Shutdown or a SIGTERM began meanwhile, or (rarely) the child of
                # a lost earlier attempt is still being killed: give them back.
                back = [j for j, _ in claimed if not self.admitting() or j.id in self.runs]
                for job, saved in claimed:
                    if all(job is not b for b in back):
                        self._table.adopt(job)
                        if not self._gave_up(job):
                            self._launch(job, saved)
                if back:  # the next child exit or poll claims again
                    await self._unclaim(back)
                    break
                if len(claimed) < free and not self._claim_again:
                    break
        except Exception:
            log.exception("claiming pending jobs failed; the next poll retries")
        finally:
            self._claiming = False

    def _gave_up(self, job: Job) -> bool:
        """A job interrupted too often (it may be what brings its instances down) fails."""
        # Every claim counts an attempt; the first is no resume, nor is a retry.
        again = job.attempts - 1 - len(job.attempt_errors or ())
        if again <= self._settings.max_resumes:
            return False
        error = job_error(
            "resume_limit",
            "ResumeLimit",
            f"interrupted {again} times without finishing (its last resume from"
            f" {job.saved_at.isoformat() if job.saved_at else 'the start'});"
            f" JOBSUP_MAX_RESUMES is {self._settings.max_resumes}",
        )
        log.error("job %s: %s", job.id, error["message"])
        self._table.move(job, JobStatus.FAILED, error=error, completed_at=now())
        return True

    def _launch(self, job: Job, saved: bytes | None = None) -> None:
        if saved is not None:
            job.resumes += 1  # written with 'running'
        spec = ChildSpec(
            job.id,
            job.type,
            bytes(job.config),
            self._settings.database_url,
            owner=job.owner or "",
            attempt=job.attempts,  # counted by the claim, stored before this child starts
            job_modules=self._settings.job_modules,
            saved_json=saved,
            resumes=job.resumes,
            limits_json=None if job.limits is None else msgspec.json.encode(job.limits),
        )
        spare = self._spares.take()
        process = spare or JobProcess(self._ctx, self._settings.child_nice)
        run = Run(job.id, process, self._table, self._settings, self._settled, self._drop)
        self.runs[job.id] = run
        self._idle.clear()
        if spare is not None:
            spare.assign(spec)
            run.attach()
        else:
            self._spawn(self._start(run, spec))
        # Not at once: the fork would compete for the CPU with the job that
        # just started (and with a quick cancel of it).
        asyncio.get_running_loop().call_later(SPARE_REFILL_DELAY_S, self.refill)

    def refill(self) -> None:
        """Fork the next spare child in the background, so the next job need not wait."""
        self._spares.refill()

    async def _start(self, run: Run, spec: ChildSpec) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._launcher, run.process.start)
            if run.fenced:  # lost while it was being forked: it never gets the job
                run.process.discard()
                self._drop(run)
                return
            run.process.assign(spec)
        except Exception as exc:
            log.exception("could not start job %s", run.job_id)
            job = self._table.get(run.job_id)
            if job is not None and job.status not in TERMINAL:
                error = job_error("spawn", type(exc).__name__, str(exc))
                self._table.move(job, JobStatus.FAILED, error=error, completed_at=now())
            self._drop(run)
            return
        run.attach()

    def _settled(self, run: Run) -> None:
        if run.signalled:
            self.hold_admissions(f"job {run.job_id}'s child got SIGTERM")
        self.wake()  # its slot is free

    def _drop(self, run: Run) -> None:
        """The run is over (its child gone, or never started): forget it."""
        if self.runs.get(run.job_id) is run:
            del self.runs[run.job_id]
        run.gone.set_result(None)
        if run.phase is RunPhase.STARTING:  # no child was ever watched: nothing to reap
            run.reaped.set_result(None)
        elif not run.reaped.done():  # its exit status follows on the sentinel
            self._reaping.add(run)
            run.reaped.add_done_callback(lambda _: self._reaping.discard(run))
        if not self.runs:
            self._idle.set()
        if not run.settled:  # never started: its slot is free only now
            self.wake()

    # -- cancellation --------------------------------------------------------------

    async def cancel_local(self, job_id: str, reason: str, by: RequestedBy | None = None) -> bool:
        """Cancel a job this instance owns; False if it is not one of ours."""
        run = self.runs.get(job_id)
        job = self._table.get(job_id)
        if run is not None and job is not None:
            run.request_cancel(reason, by)
            return True
        if job is None or job.status is not JobStatus.PENDING:
            return False
        info = CancelInfo(requested_at=now(), reason=reason, requested_by=by)
        log.info("job %s stopped before it started", job_id, extra=about_job(job_id))
        await self._table.move(job, JobStatus.CANCELLED, cancel=info, completed_at=now())
        return True

    # -- pause and resume --------------------------------------------------------

    def pause_local(self, job_id: str, freeze: bool = False) -> bool:
        """Pause a running job this instance holds; False if it is not one of ours."""
        run = self.runs.get(job_id)
        if run is None or self._table.get(job_id) is None:
            return False
        run.request_pause(freeze)
        return True

    def resume_local(self, job_id: str) -> bool:
        """Resume a paused job this instance holds; False if it is not one of ours."""
        run = self.runs.get(job_id)
        if run is None or self._table.get(job_id) is None:
            return False
        run.request_resume()
        return True

    async def take_pause_request(self, job_id: str, action: str) -> None:
        """Act on a pause request made through another instance, if the job is still ours."""
        job = self._table.get(job_id)
        if job is not None and action in ("pause", "freeze") and job.status is JobStatus.RUNNING:
            self.pause_local(job_id, freeze=action == "freeze")
        elif job is not None and action == "resume" and job.status is JobStatus.PAUSED:
            self.resume_local(job_id)
        await self._store.call(claims.take_pause_request, job_id, action, write=True)

    async def wait_gone(self, job_id: str, deadline: float) -> None:
        """Wait, until ``deadline`` (monotonic) at most, for the job's child to be gone."""
        run = self.runs.get(job_id)
        if run is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(run.gone), deadline - time.monotonic())

    async def cancel_unclaimed(self, job: Job, reason: str, by: RequestedBy | None = None) -> bool:
        """Cancel a pending job nobody has claimed; False if someone has meanwhile.

        Checked against TRANSITIONS like a move in the table (the job is not
        in this instance's memory); the SQL guard (still pending, still
        unowned) is the storage-side twin.
        """
        check_transition(job.status, JobStatus.CANCELLED)
        cancelled = msgspec.structs.replace(
            job,
            status=JobStatus.CANCELLED,
            completed_at=now(),
            cancel=CancelInfo(requested_at=now(), reason=reason, requested_by=by),
        )
        done = await self._store.call(
            claims.cancel_unclaimed, cancelled, now_ms(), self._table.notices.notice_of, write=True
        )
        if done:  # the one final state not applied through the table: announced here
            log.info("job %s stopped before it started", job.id, extra=about_job(job.id))
            self._table.events.publish(Kind.FINISHED, cancelled)
            self._table.announce_released(job.id)  # the jobs that waited for it
        return bool(done)

    # -- fencing -------------------------------------------------------------------

    def _lost(self, job_id: str) -> None:
        """A write found the job held by another run: this one's child must stop now."""
        run = self.runs.get(job_id)
        if run is not None:
            run.fence()

    def let_go_of_everything(self) -> None:
        """Declared dead by the others: every live job here has been, or will be, rescued.

        Kill every child at once and forget their jobs without writing them.
        """
        for run in list(self.runs.values()):
            run.fence()
        for job_id in self._table.live_ids():
            self._table.forget(job_id)

    # -- shutdown ------------------------------------------------------------------

    async def shutdown(self, grace_s: float) -> None:
        """Stop claiming, cancel running jobs, escalate at the deadline, wait for all."""
        self.accepting = False
        self._spares.drop()
        if self._hold_timer is not None:
            self._hold_timer.cancel()
        if self._due_timer is not None:
            self._due_timer.cancel()
        requeue = self._settings.shutdown_mode == "requeue"
        for run in list(self.runs.values()):
            job = self._table.get(run.job_id)
            if requeue and job is not None and resumable(job.type):
                run.request_requeue()  # its next run, on any instance, resumes it
            else:
                run.request_cancel("shutdown")
        deadline = time.monotonic() + grace_s
        try:
            await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            for run in list(self.runs.values()):
                run.kill_now()
            await self._idle.wait()
        if self._reaping:  # their end records go with the shutdown's last write
            reaps = [run.reaped for run in self._reaping]
            await asyncio.wait(reaps, timeout=max(REAP_WAIT_S, deadline - time.monotonic()))
        self._launcher.shutdown(wait=True)
