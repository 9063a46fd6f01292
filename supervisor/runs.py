"""One running job: its child's messages, its cancel escalation, its end.

A ``Run`` joins a ``JobProcess`` to the table. The event loop watches the
child's progress pipe and its sentinel together (``add_reader`` on both), so
a child that crashes is seen at once, never by a timer, and no thread is
spent per job.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from supervisor import forensics, timing
from supervisor.job import CancelInfo, Job, RequestedBy, now
from supervisor.joblog import JobLog
from supervisor.launcher import JobProcess, ProtocolError
from supervisor.logs import about_job
from supervisor.settings import Settings
from supervisor.state import (
    ACTIVE,
    CancelMode,
    Escalation,
    JobStatus,
    Outcome,
    RunPhase,
    check_phase,
    classify_exit,
)
from supervisor.store import jobs as sql
from supervisor.table import JobTable
from workers import protocol, registry
from workers.times import as_stored

log = logging.getLogger("jobsup.run")


def log_level(name: str) -> int:
    """The child's level name (``ctx.log(text, "warning")``); an unknown one logs at INFO."""
    level = logging.getLevelName(name.upper())
    return level if isinstance(level, int) else logging.INFO


def _told_exit(final: protocol.Message | None, escalation: Escalation | None) -> int:
    """The exit code a child's final message stands for (its reaper being gone)."""
    match final:
        case protocol.Done():
            return protocol.EXIT_OK
        case protocol.Cancelled():
            return protocol.EXIT_CANCELLED
        case protocol.Failed():
            return protocol.EXIT_FAILED
    if escalation is Escalation.KILL:
        return -signal.SIGKILL  # it said nothing, and we had sent it SIGKILL
    return 255  # it said nothing: it died, how is not known


def _pidfd_open(pid: int | None) -> int | None:
    """A descriptor readable once ``pid`` terminates (Linux 5.3+), else None."""
    if pid is None or not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None  # gone already, or an old kernel: the sentinel alone will do


# Bytes of frames read per turn of the event loop (about 3,000 progress frames).
READ_BUDGET = 64 * 1024


def resumable(job_type: str) -> bool:
    """Jobs of this type save their place and go back to the queue at a shutdown."""
    try:
        return registry.get(job_type).resumable
    except KeyError:
        return False


class _Merged:
    """Progress, partial and saved frames of one read, folded into their net effect."""

    __slots__ = ("partial", "progress", "saved")

    def __init__(self) -> None:
        self.progress: list[int | str | None] | None = None
        self.partial: protocol.Partial | None = None
        self.saved: protocol.Saved | None = None

    def take(self, message: protocol.Message) -> bool:
        if isinstance(message, protocol.Progress):
            fields = [message.processed, message.total, message.message, message.phase]
            # Later values win, field by field, as applying each in turn would.
            self.progress = protocol.merge_progress(fields, self.progress)
            return True
        if isinstance(message, protocol.Partial):
            self.partial = message
            return True
        if isinstance(message, protocol.Saved):
            self.saved = message
            return True
        return False

    def apply(self, run: Run, job: Job | None) -> None:
        if job is not None and self.progress is not None:
            run._table.merge_progress(job, *self.progress)  # type: ignore[arg-type]
        if job is not None and self.partial is not None:
            run._table.update(job, result=self.partial.result)
        if job is not None and self.saved is not None:
            run._table.save(job, self.saved.state_json)
        self.progress = None
        self.partial = None
        self.saved = None


class Run:
    def __init__(
        self,
        job_id: str,
        process: JobProcess,
        table: JobTable,
        settings: Settings,
        on_settled: Callable[[Run], None],
        on_exit: Callable[[Run], None],
    ) -> None:
        self.job_id = job_id
        self.process = process
        self._table = table
        self._settings = settings
        self._on_settled = on_settled
        self._on_exit = on_exit
        self._loop = asyncio.get_running_loop()
        self.final: protocol.Message | None = None
        self.escalation: Escalation | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.phase = RunPhase.STARTING
        self._pidfd: int | None = None
        self._garbled = False  # it sent a bad frame
        self._started_unsaved = False  # 'running' applied, its write not yet made
        self.fenced = False  # another instance holds the job: kill, write nothing
        self.signalled = False  # ended by a SIGTERM the supervisor did not send
        self.requeue = False  # stopped by a shutdown: back to the queue, not cancelled
        self.frozen = False  # its process group is stopped (SIGSTOP): a paused job, frozen
        self._paused_timer: asyncio.TimerHandle | None = None  # JOBSUP_PAUSED_TIMEOUT_S
        self.timed_out = False  # stopped by its timeout (the cancel ladder): it fails
        self.limit: str | None = None  # the limit that stopped it: timeout, cpu_limit, memory_limit
        self._deadline: asyncio.TimerHandle | None = None  # its timeout, if it has one
        self._timeout_left: float | None = None  # of its timeout while paused (not counted)
        self.leftovers = 0  # descendants the child swept at its end (protocol.Swept)
        # Which limit stopped it, if one did (set by whoever enforces it): ended = limit.
        self.limit: str | None = None
        self.output: JobLog | None = None  # its stdout, stderr and ctx.log lines
        self.usage: protocol.Usage | None = None  # what it reported using, if it ended itself
        self._started_at: float | None = None  # its Started message's time (epoch seconds)
        # Resolved when the scheduler drops the run: the child is gone (or never came).
        self.gone: asyncio.Future[None] = self._loop.create_future()
        # Resolved once the child is reaped and how it ended recorded (_record_end),
        # moments after it is gone; or when the run had no child to reap.
        self.reaped: asyncio.Future[None] = self._loop.create_future()

    @property
    def settled(self) -> bool:
        """The job's final state is decided: the slot is free."""
        return self.phase in (RunPhase.SETTLED, RunPhase.ENDED)

    def _move(self, phase: RunPhase) -> None:
        check_phase(self.phase, phase)
        self.phase = phase

    def attach(self) -> None:
        """Called once the child exists: watch its pipe and its sentinel."""
        self._move(RunPhase.ATTACHED)
        self.output = JobLog(self.job_id, self._table.write, self._settings.job_log_bytes)
        self.output.watch(*self.process.output_fds)
        self._loop.add_reader(self.process.progress_fd, self._on_readable)
        self._loop.add_reader(self.process.sentinel, self._on_sentinel)
        self._pidfd = _pidfd_open(self.process.pid)
        if self._pidfd is not None:
            self._loop.add_reader(self._pidfd, self._on_pidfd)
        if self.escalation is not None:  # cancelled (or killed) while it was being started
            self._escalate_to(self.escalation)
        job = self._table.get(self.job_id)
        if job is not None and job.limits is not None and job.limits.timeout_s is not None:
            self._deadline = self._loop.call_later(job.limits.timeout_s, self._on_timeout)

    def _hold_timeout(self) -> None:
        """Paused: the timeout stops counting (it bounds the time a job runs)."""
        if self._deadline is not None:
            self._timeout_left = max(0.0, self._deadline.when() - self._loop.time())
            self._deadline.cancel()
            self._deadline = None

    def _release_timeout(self) -> None:
        """Resumed: the timeout counts on from where the pause held it."""
        if self._timeout_left is not None:
            self._deadline = self._loop.call_later(self._timeout_left, self._on_timeout)
            self._timeout_left = None

    # -- messages from the child ---------------------------------------------

    def _on_readable(self) -> None:
        self._consume(READ_BUDGET)

    def _consume(self, budget: int) -> None:
        """Read up to ``budget`` bytes of frames; the rest waits for the next turn.

        A child flooding progress gets one bounded slice of the loop per
        turn, and a slice's progress and partial frames are merged into one
        table update: the API stays responsive whatever the job sends.
        """
        assert self.process.reader is not None
        if self._garbled:
            return
        job = self._table.get(self.job_id)
        merged = _Merged()
        try:
            for frame in self.process.reader.read(budget):
                message = protocol.decoder.decode(frame)
                if not merged.take(message):
                    merged.apply(self, job)
                    self._handle(message, job)
        except (ProtocolError, msgspec.DecodeError) as exc:
            log.error(
                "job %s sent a bad frame (%s); killing it",
                self.job_id,
                exc,
                extra=about_job(self.job_id),
            )
            self._loop.remove_reader(self.process.progress_fd)
            self._garbled = True  # nothing more it sends is read
            self.final = protocol.Failed("ProtocolError", str(exc), "")
            self.process.kill()
            return
        finally:
            merged.apply(self, job)
        if self.process.reader.eof:
            self._loop.remove_reader(self.process.progress_fd)
        if self.final is None and self._started_unsaved and job is not None:
            self._table.persist(job)  # 'running' is on record before the job's next read
        self._started_unsaved = False
        if self.final is not None and not self.settled:
            self._settle_before_exit()

    def _handle(self, message: protocol.Message, job: Job | None) -> None:
        if job is None and not isinstance(message, protocol.Usage):
            return
        match message:
            case protocol.Started(pid, at):
                self._started_at = at
                if log.isEnabledFor(logging.DEBUG):  # its end line, at INFO, has the pid
                    log.debug(
                        "job %s started (pid %d)", self.job_id, pid, extra=about_job(self.job_id)
                    )
                started = as_stored(datetime.fromtimestamp(at, UTC))
                if job.status is JobStatus.PENDING:
                    # Written at the end of this read, unless the job's end
                    # came in the same read: its final write carries it all.
                    self._table.move_soon(job, JobStatus.RUNNING, pid=pid, started_at=started)
                    self._started_unsaved = True
                else:  # cancelling already: keep the state, stamp the start
                    self._table.update(job, pid=pid, started_at=started)
            case protocol.Paused():
                if job.status is JobStatus.PAUSING:  # not cancelled or ended meanwhile
                    log.info("job %s paused", self.job_id, extra=about_job(self.job_id))
                    self._table.move(job, JobStatus.PAUSED)
                    self._hold_timeout()
                    self._arm_paused_timeout()
            case protocol.Log(level, text):
                log.log(
                    log_level(level), "job %s: %s", self.job_id, text, extra=about_job(self.job_id)
                )
                if self.output is not None:
                    self.output.add("log", text, level)
            case protocol.Swept(killed):
                self.leftovers += killed
            case protocol.Failed(reason=reason) if reason in ("cpu_limit", "memory_limit"):
                self.limit = reason
                self.final = message
            case protocol.Usage():
                self.usage = message
            case protocol.Done() | protocol.Cancelled() | protocol.Failed():
                self.final = message

    # -- cancellation ----------------------------------------------------------

    def request_cancel(self, reason: str, by: RequestedBy | None = None) -> None:
        job = self._table.get(self.job_id)
        if self.escalation is not None or self.settled or job is None:
            return
        self.escalation = Escalation.ASK
        if reason != "user":  # a user's request is logged where it is made (the service)
            log.info(
                "job %s: cancel requested (%s)", self.job_id, reason, extra=about_job(self.job_id)
            )
        info = CancelInfo(requested_at=now(), reason=reason, requested_by=by)
        # Usually cancelled within milliseconds: the final state's write
        # carries this one too, and a 202 persists it first.
        self._table.move_soon(job, JobStatus.CANCELLING, cancel=info)
        if self.phase is not RunPhase.STARTING:
            self._escalate_to(Escalation.ASK)

    # -- pause and resume --------------------------------------------------------

    def request_pause(self, freeze: bool = False) -> None:
        """Pause a running job: ask it to hold at its next context call, or freeze it.

        Asked, it is ``pausing`` until its child reports ``Paused``; frozen
        (SIGSTOP to its process group), it is ``paused`` at once. Either way
        it keeps its slot, and the paused timeout runs from when it is paused.
        """
        job = self._table.get(self.job_id)
        if job is None or self.settled or self.escalation is not None:
            return
        if job.status is not JobStatus.RUNNING:
            return
        if freeze:
            log.info("job %s frozen", self.job_id, extra=about_job(self.job_id))
            self.process.freeze()
            self.frozen = True
            self._table.move(job, JobStatus.PAUSED, paused_at=now())
            self._hold_timeout()
            self._arm_paused_timeout()
        else:
            log.info("job %s: pause requested", self.job_id, extra=about_job(self.job_id))
            self.process.pause()
            self._table.move(job, JobStatus.PAUSING, paused_at=now())

    def request_resume(self) -> None:
        """Let a paused job go on where it held (or thaw a frozen one)."""
        job = self._table.get(self.job_id)
        if job is None or self.settled or job.status is not JobStatus.PAUSED:
            return
        self._disarm_paused_timeout()
        if self.frozen:
            self.process.thaw()
            self.frozen = False
        else:
            self.process.resume()
        log.info("job %s resumed", self.job_id, extra=about_job(self.job_id))
        self._table.move(job, JobStatus.RUNNING, paused_at=None)
        self._release_timeout()

    def _arm_paused_timeout(self) -> None:
        self._disarm_paused_timeout()
        self._paused_timer = self._loop.call_later(
            self._settings.paused_timeout_s, self._paused_too_long
        )

    def _disarm_paused_timeout(self) -> None:
        if self._paused_timer is not None:
            self._paused_timer.cancel()
            self._paused_timer = None

    def _paused_too_long(self) -> None:
        self._paused_timer = None
        job = self._table.get(self.job_id)
        if job is not None and job.status is JobStatus.PAUSED:
            log.warning(
                "job %s paused longer than %.0f s: cancelled",
                self.job_id,
                self._settings.paused_timeout_s,
                extra=about_job(self.job_id),
            )
            self.request_cancel("paused_timeout")

    def _thaw(self) -> None:
        """A frozen job must run again to stop: a cancel's byte and SIGTERM wait for SIGCONT."""
        if self.frozen:
            self.process.thaw()
            self.frozen = False

    def _on_timeout(self) -> None:
        """The job ran past its timeout: stopped like a cancel, it fails (``timeout``)."""
        self._deadline = None
        if self.escalation is not None or self.settled:
            return  # being stopped already: a cancel someone asked for stays a cancel
        log.info("job %s: past its timeout; stopping it", self.job_id, extra=about_job(self.job_id))
        self.timed_out = True
        self.limit = "timeout"
        self.escalation = Escalation.ASK
        self._escalate_to(Escalation.ASK)

    def request_requeue(self) -> None:
        """A shutdown stops a resumable job: asked like a cancel, escalated like one,
        but the job goes back to the queue with its saved place instead of ending."""
        if self.escalation is not None or self.settled:
            return
        self.requeue = True
        self.escalation = Escalation.ASK
        if self.phase is not RunPhase.STARTING:
            self._escalate_to(Escalation.ASK)

    def _escalate_to(self, step: Escalation) -> None:
        if self.process.exitcode is not None:
            return
        if self._timer is not None:  # a later step replaces the pending one
            self._timer.cancel()
            self._timer = None
        self._disarm_paused_timeout()
        self._thaw()
        self.escalation = step
        if step is Escalation.ASK:
            self.process.cancel()
            self._timer = self._loop.call_later(
                self._settings.cancel_grace_s, self._escalate_to, Escalation.TERMINATE
            )
        elif step is Escalation.TERMINATE:
            log.warning(
                "job %s still running after the grace period: SIGTERM",
                self.job_id,
                extra=about_job(self.job_id),
            )
            self.process.terminate()
            self._timer = self._loop.call_later(
                self._settings.kill_after_s, self._escalate_to, Escalation.KILL
            )
        else:
            log.warning("job %s still running: SIGKILL", self.job_id, extra=about_job(self.job_id))
            self.process.kill()

    def _settle_before_exit(self) -> None:
        """The child has said how it ended and is in os._exit.

        Write the final state, and let the next job have the slot, while the
        kernel tears the process down (about a millisecond). A pending
        escalation step is moot now (a SIGTERM no longer raises in it): the
        child gets kill_after_s to be gone.
        """
        self._settle(None)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(self._settings.kill_after_s, self._kill_straggler)

    def _kill_straggler(self) -> None:
        """The child said it ended but has not exited (it holds no slot now)."""
        self._timer = None
        if self.process.exitcode is None:
            log.warning(
                "job %s's child is still there after its end: SIGKILL",
                self.job_id,
                extra=about_job(self.job_id),
            )
            self.process.kill()

    def fence(self) -> None:
        """Another instance holds the job now: SIGKILL the child's group at once.

        Nothing more is written for it (the table has let the job go).
        """
        if self.fenced:
            return
        self.fenced = True
        log.error(
            "job %s: another instance holds it now; killing its child here",
            self.job_id,
            extra=about_job(self.job_id),
        )
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.escalation = Escalation.KILL  # attach() kills a child still being started
        if self.phase is not RunPhase.STARTING:
            self.process.kill()

    def kill_now(self) -> None:
        """Last step of a shutdown: no more grace."""
        if self.escalation is None:
            self.request_cancel("shutdown")
        self._escalate_to(Escalation.KILL)

    # -- the end -----------------------------------------------------------------

    def _on_pidfd(self) -> None:
        """The child has terminated; its parent, the forkserver, has yet to reap it.

        When it said how it ended, that is all the job's final state needs,
        so the run ends now; the exit code follows on the sentinel. With the
        forkserver gone there is no exit code to follow: its own word is all.
        """
        self._close_pidfd()
        self._consume(budget=1 << 62)  # what it wrote before exiting is all there
        if self.process.server_lost:
            self._reaped(self.process.ended_unreaped(_told_exit(self.final, self.escalation)))
        elif self.phase is RunPhase.SETTLED:
            self._end(None)

    def _on_sentinel(self) -> None:
        exitcode = self.process.reap()
        if exitcode is None and not self.process.server_lost:
            return  # woken without an exit status: keep watching
        self._loop.remove_reader(self.process.sentinel)
        if exitcode is None:
            if self._pidfd is not None:
                # The forkserver died (killed, OOM) before the child: the child
                # runs on, reparented, its pipes to us intact, its cancel heard.
                # Its end comes on its pidfd; how it ended, in its own word.
                if self.frozen:  # orphaned while stopped, its group got SIGCONT
                    self.process.freeze()
                log.warning(
                    "job %s: the forkserver is gone; its child %s runs on",
                    self.job_id,
                    self.process.pid,
                    extra=about_job(self.job_id),
                )
                return
            exitcode = self.process.ended_unreaped(_told_exit(self.final, self.escalation))
        self._close_pidfd()
        self._reaped(exitcode)

    def _reaped(self, exitcode: int) -> None:
        """The child is gone, its exit code known: end the run, record how it ended."""
        self._consume(budget=1 << 62)
        self._loop.remove_reader(self.process.progress_fd)
        if self.phase is not RunPhase.ENDED:
            self._end(exitcode)
        elif exitcode != 0 and not isinstance(self.final, protocol.Done):
            log.info(
                "job %s's child exited with %s", self.job_id, exitcode, extra=about_job(self.job_id)
            )
        self._record_end(exitcode)
        self.process.close()
        if not self.reaped.done():
            self.reaped.set_result(None)

    def _record_end(self, exitcode: int) -> None:
        """The child is reaped: keep its output's last lines and how it ended (forensics)."""
        if self.output is not None:
            self.output.close()
        spec = self.process.spec
        if self.fenced or spec is None:
            return  # another instance holds the job: nothing more is written here
        exit_code, signal_name = forensics.exit_status(exitcode)
        peak, user, system = self.process.usage or (None, None, None)
        if self.process.usage is None and self.usage is not None:
            peak, user, system = (
                self.usage.peak_rss_kib,
                self.usage.user_cpu_s,
                self.usage.system_cpu_s,
            )
        if peak is None:
            peak = self.process.peak_rss_kib
        # A child that broke the protocol was SIGKILLed: its recorded failure is ours.
        final = None if self._garbled else self.final
        escalation = Escalation.KILL if self._garbled else self.escalation
        wall = None if self._started_at is None else max(0.0, time.time() - self._started_at)
        resources = forensics.Resources(
            ended=forensics.ending(exitcode, final, escalation, self.limit),
            exit_code=exit_code,
            signal=signal_name,
            peak_rss_kib=peak,
            user_cpu_s=user,
            system_cpu_s=system,
            wall_s=wall,
            stderr_tail=self.output.stderr_tail() if self.output is not None else "",
            limit=self.limit,
        )
        self._table.record_resources(self.job_id, spec.job_type, spec.attempt, resources)

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def _end(self, exitcode: int | None) -> None:
        """The child is gone: kill what it left behind, forget the run."""
        if self.final is None:  # it did not sweep its descendants: they are the forkserver's
            self.process.sweep_orphans()
        self.process.kill_group_leftovers()
        if self._timer is not None:
            self._timer.cancel()
        if self._deadline is not None:
            self._deadline.cancel()
        if self.phase is RunPhase.ATTACHED:  # it died without saying how it ended
            self._settle(exitcode)
        self._move(RunPhase.ENDED)
        self._on_exit(self)

    def _settle(self, exitcode: int | None) -> None:
        self._move(RunPhase.SETTLED)
        self._disarm_paused_timeout()
        job = self._table.get(self.job_id)
        # A child cancelled or killed by SIGTERM when nobody here asked: the
        # platform is stopping every process (or someone signalled it by hand).
        unasked = exitcode == -signal.SIGTERM or isinstance(self.final, protocol.Cancelled)
        self.signalled = self.escalation is None and unasked
        if self.signalled and job is not None and job.status is JobStatus.PENDING:
            # Killed before it began the job: the job goes back to the queue.
            log.warning(
                "job %s's child got SIGTERM before it started; job re-queued",
                job.id,
                extra=about_job(job.id),
            )
            self._table.release(job)
            self._on_settled(self)
            return
        partial = job.result if job is not None else None  # the last partial result
        outcome = classify_exit(
            exitcode,
            self.final,
            self.escalation,
            partial,
            limits=job.limits if job is not None else None,
            timed_out=self.timed_out,
        )
        if job is not None and self._goes_back(job, outcome):
            log.info("job %s stopped by a shutdown; back in the queue to resume", job.id)
            if outcome.result is not None:
                job.result = outcome.result
            # A paused job comes back paused: stored unclaimed until resumed.
            self._table.requeue(job, paused=job.status in (JobStatus.PAUSING, JobStatus.PAUSED))
            self._on_settled(self)
            return
        self._finish(outcome, exitcode)
        self._on_settled(self)

    def _goes_back(self, job: Job, outcome: Outcome) -> bool:
        """Stopped by a shutdown (ours, or the platform's SIGTERM) and able to resume."""
        platform = self.signalled and self._settings.shutdown_mode == "requeue"
        return (
            (self.requeue or platform)
            and outcome.status is JobStatus.CANCELLED
            and job.status in ACTIVE  # a cancel someone asked for stays a cancel
            and resumable(job.type)
        )

    def _finish(self, outcome: Outcome, exitcode: int | None) -> None:
        job = self._table.get(self.job_id)
        if job is None:
            return
        changes: dict[str, Any] = {"completed_at": now(), "pid": None, "paused_at": None}
        # What the child swept at its end, or the front before its SIGKILL.
        leftovers = self.leftovers + self.process.swept
        if leftovers:
            changes["leftovers_killed"] = leftovers
        if outcome.result is not None or job.result is None:
            changes["result"] = outcome.result
        changes["error"] = outcome.error
        if job.cancel is not None:
            # No mode when it completed or failed before the cancel took hold.
            mode = outcome.cancel_mode
            changes["cancel"] = msgspec.structs.replace(
                job.cancel, mode=mode.value if mode else None, exited_at=now()
            )
        elif outcome.status is JobStatus.CANCELLED:
            # SIGTERM from outside (a platform stopping the box): a cancel too.
            changes["cancel"] = CancelInfo(
                requested_at=now(),
                reason="signal",
                mode=(outcome.cancel_mode or CancelMode.TERMINATED).value,
                exited_at=now(),
            )
        if outcome.status is JobStatus.FAILED and outcome.error is not None:
            again = timing.next_attempt(job, outcome.error, now())
            if again is not None and (job.status is JobStatus.PENDING or job.status in ACTIVE):
                log.info(
                    "job %s failed (%s) in attempt %d; retried at %s",
                    self.job_id,
                    outcome.error.get("reason"),
                    len(job.attempt_errors or ()),
                    again.isoformat(),
                    extra=about_job(job.id),
                )
                if outcome.result is not None:
                    job.result = outcome.result
                aging_ms = int(self._settings.priority_aging_s * 1000)
                retried = msgspec.structs.replace(job, run_at=again)
                self._table.retry(job, again, sql.queue_rank(retried, aging_ms), outcome.error)
                return
        _log_end(job, outcome, exitcode, changes)
        self._table.move(job, outcome.status, **changes)


def _log_end(job: Job, outcome: Outcome, exitcode: int | None, changes: dict[str, Any]) -> None:
    """The job's end at INFO: completed, failed (its cause), or stopped (mode, latency),
    with its child's pid and exit code when known: a run's one INFO line."""
    extra = {"extra": about_job(job.id)}
    # The child that ran it (none if it died before it began the job), and
    # its exit code (none when it reported its end: the code is not in yet).
    code = "" if job.pid is None else f"; pid {job.pid}"
    if exitcode is not None:
        code += f"; exit {exitcode}"
    if outcome.status is JobStatus.COMPLETED:
        log.info("job %s completed%s", job.id, code and f" ({code[2:]})", **extra)
    elif outcome.status is JobStatus.FAILED:
        error = outcome.error or {}
        cause = f"{error.get('reason')}: {error.get('type')}: {error.get('message')}"
        log.info("job %s failed (%s%s)", job.id, cause, code, **extra)
    else:
        cancel: CancelInfo | None = changes.get("cancel")
        mode = cancel.mode if cancel is not None else None
        latency = ""
        if cancel is not None and cancel.exited_at is not None:
            ms = (cancel.exited_at - cancel.requested_at).total_seconds() * 1000
            latency = f", {ms:.0f} ms after the request"
        log.info("job %s stopped (%s%s%s)", job.id, mode, latency, code, **extra)
