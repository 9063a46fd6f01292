"""The job table: authoritative in memory for live jobs, written through to the store.

State changes apply in memory at once (so the loop's view is always current
and transitions are checked in order) and are written to the store through
its ordered writer; callers that answer a client await that write. Progress
and partial results are coalesced: the flusher writes each dirty job at most
once per ``progress_flush_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import msgspec

from supervisor.audit import AuditEntry
from supervisor.events import EventBus, Kind
from supervisor.forensics import Resources
from supervisor.job import Job, Progress, now
from supervisor.logs import about_job
from supervisor.notify import Notices
from supervisor.state import TERMINAL, JobStatus, check_transition
from supervisor.store import DatabaseBusy, Store, claims, is_unique_violation
from supervisor.store import chains as chains_sql
from supervisor.store import jobs as sql
from workers import protocol
from workers.db import DatabaseUnavailable
from workers.times import now_ms

log = logging.getLogger("jobsup.table")

# A state write keeps retrying this long while the database is unavailable.
STATE_WRITE_RETRY_S = 3600.0
# A read of a final state not yet stored waits this long for its write.
SHOW_FINAL_WAIT_S = 1.0
# A finished job's result bigger than this (encoded) is not kept in memory
# once it is stored: reads of that job go to the store. A job over a large
# group reports every member; twenty such results held whole cost 200 MiB.
RESULT_KEPT_BYTES = 64 * 1024
_encoder = msgspec.json.Encoder()


# The events a state change publishes at once (a final state: once stored).
MAX_FOLLOWED = 10_000
_STATE_EVENTS = {
    JobStatus.RUNNING: Kind.STARTED,
    JobStatus.CANCELLING: Kind.CANCELLING,
    JobStatus.PAUSING: Kind.PAUSING,
    JobStatus.PAUSED: Kind.PAUSED,
}


class JobTable:
    def __init__(self, store: Store, events: EventBus | None = None) -> None:
        self.store = store
        # Every change applied here is published on it, once (supervisor.events).
        self.events = events if events is not None else EventBus()
        self._jobs: dict[str, Job] = {}
        self._dirty: set[str] = set()  # progress or result to write
        self._state_dirty: set[str] = set()  # a state changed by move_soon to write
        self._saved: dict[str, bytes] = {}  # saved places (JSON) to write with the next flush
        self._changed = asyncio.Event()
        self._waiting = 0  # wait() calls in progress; no waiter, no wake-up to make
        self._writes: set[asyncio.Future[Any]] = set()
        self._last_write: dict[str, asyncio.Future[bool]] = {}
        # Called on the loop with the id of a job whose write matched nothing:
        # another instance holds it now. Set by the scheduler.
        self.on_lost: Callable[[str], None] = lambda job_id: None
        self._result_stored: set[str] = set()  # finished jobs whose result is only in the store
        # Jobs that others wait for (``after``), as far as this instance knows:
        # their end is followed by a read of what it released (announce_released).
        self._followed: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # The notifications a state write adds to the outbox (none until the
        # runtime sets the configured URLs).
        self.notices = Notices((), 0.0)
        # Called on the loop with (job type, resources) at each run's end (metrics).
        self.resource_listeners: list[Callable[[str, Resources], None]] = []
        # Runs' ends to write with the next flush: job id -> (attempt, resources).
        self._resources: dict[str, tuple[int, Resources]] = {}

    # -- reads -------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    async def fetch(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is not None and job.status in TERMINAL and job_id in self._last_write:
            # A final state is shown once stored: its write may yet be fenced
            # off. A database that does not answer is not waited out.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.persisted(job_id), SHOW_FINAL_WAIT_S)
            job = self._jobs.get(job_id)
        if job is None or job_id in self._result_stored:
            job = await self.store.call(sql.get_job, job_id)
        elif job.status in TERMINAL and not await self._still_stored(job_id):
            self.forget(job_id)  # deleted, perhaps through another instance
            job = None
        return job

    async def _still_stored(self, job_id: str) -> bool:
        """Whether a finished job kept in memory is still in the store (not deleted)."""
        try:
            return await self.store.call(sql.job_exists, job_id)  # type: ignore[no-any-return]
        except (DatabaseUnavailable, DatabaseBusy):
            return True  # memory answers while the store cannot

    async def list(self, f: sql.JobFilter) -> list[Job]:
        stored = await self.store.call(sql.list_jobs, f)
        # Live jobs' coalesced progress is fresher in memory; a final state
        # is shown once stored (its write may yet be fenced off), and a large
        # stored result is read from the store.
        return [self._jobs.get(j.id, j) if self._shown(j.id) else j for j in stored]

    def _shown(self, job_id: str) -> bool:
        job = self._jobs.get(job_id)
        if job is None or job_id in self._result_stored:
            return False
        return job.status not in TERMINAL or job_id not in self._last_write

    def __len__(self) -> int:
        return len(self._jobs)

    # -- writes ------------------------------------------------------------

    async def add(
        self,
        job: Job,
        key: str | None,
        label: str | None,
        max_pending: int,
        claim_for: str | None = None,
        rank: int | None = None,
        idempotency_ttl_ms: int = 0,
        audit: AuditEntry | None = None,
    ) -> bool:
        """Insert a new pending (or scheduled) job; in the store before this returns.

        Returns whether ``claim_for`` claimed it at once (``sql.insert_job``).

        Raises ``sql.KeyTaken`` when a live job holds the same exclusive key
        (checked in the insert's transaction, and by a unique index across
        instances), ``sql.QueueFull`` past ``max_pending`` waiting jobs,
        ``sql.IdempotentReplay`` when a job already carries its idempotency
        key (a race of two inserts with one key: the unique index decides,
        and the loser answers with the winner's job).
        """
        try:
            claimed = await self.store.call(
                sql.insert_job,
                job,
                key,
                label,
                now_ms(),
                max_pending,
                claim_for,
                rank,
                idempotency_ttl_ms,
                audit,
                self.notices.notice_of,
                write=True,
                retry_for=5.0,
                queue_timeout=5.0,
            )
        except (sql.KeyTaken, sql.IdempotentReplay):
            raise
        except Exception as exc:
            if not is_unique_violation(exc):
                raise
            if job.idempotency_key is not None:
                winner = await self.store.call(sql.holder_of_idempotency_key, job.idempotency_key)
                if winner is not None:
                    raise sql.IdempotentReplay(winner) from None
            if key is not None:
                raise sql.KeyTaken(key, None) from None  # a race with another instance
            raise
        self.events.publish(Kind.CREATED, job)
        return claimed

    def adopt(self, job: Job) -> None:
        """Keep a job this instance has claimed in memory."""
        self._jobs[job.id] = job
        self._publish(job)

    def move(self, job: Job, status: JobStatus, **changes: Any) -> Awaitable[bool]:
        """Change a job's status (and fields) now; returns its store write."""
        self._apply(job, status, changes)
        write = self.persist(job)
        if status in TERMINAL:
            # Announced once stored: the write may yet be fenced off.
            write.add_done_callback(lambda _: self._finished(job, write))
        return write

    def _finished(self, job: Job, write: asyncio.Future[bool]) -> None:
        if write.cancelled() or write.exception() is not None or write.result() is False:
            return
        # A large result has just been let go from memory: the event says so.
        self.events.publish(Kind.FINISHED, job, result_omitted=job.id in self._result_stored)
        if job.chain_id is not None or job.id in self._followed:
            self.announce_released(job.id)

    def follow(self, parent_id: str) -> None:
        """A job waits for ``parent_id``: announce what its end releases."""
        if len(self._followed) >= MAX_FOLLOWED:  # parents that end elsewhere are never seen here
            self._followed.clear()
        self._followed.add(parent_id)

    def announce_released(self, parent_id: str) -> None:
        """Publish the jobs the end of ``parent_id`` released in the store (chains.release).

        The release is written by the store inside the parent's final write;
        this reads its outcome afterwards, off the loop, and publishes each
        follower as ``released`` (pending or awaiting approval) or
        ``finished`` (cancelled, and then what that released in turn).
        """
        self._followed.discard(parent_id)
        task = asyncio.get_running_loop().create_task(self._announce(parent_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _announce(self, parent_id: str) -> None:
        parents = [parent_id]
        try:
            for _ in range(chains_sql.MAX_ANNOUNCED_DEPTH):
                followers = await self.store.call(chains_sql.followers, parents)
                for job in followers:
                    kind = Kind.FINISHED if job.status in TERMINAL else Kind.RELEASED
                    self.events.publish(kind, job)
                parents = [job.id for job in followers if job.status in TERMINAL]
                if not parents:
                    return
        except Exception as exc:  # an announcement only: the store has the truth
            log.warning("could not announce what %s released: %s", parent_id, exc)

    def move_soon(self, job: Job, status: JobStatus, **changes: Any) -> None:
        """Change a job's status now, and write it with the next flush.

        For a passing state that a final one usually follows within
        milliseconds (``cancelling``): whoever answers a client for it calls
        ``persist`` first.
        """
        self._apply(job, status, changes)
        self._state_dirty.add(job.id)

    def _apply(self, job: Job, status: JobStatus, changes: dict[str, Any]) -> None:
        check_transition(job.status, status)
        resumed = job.status is JobStatus.PAUSED and status is JobStatus.RUNNING
        job.status = status
        for name, value in changes.items():
            setattr(job, name, value)
        self._publish(job)
        kind = Kind.RESUMED if resumed else _STATE_EVENTS.get(status)
        if kind is not None:
            self.events.publish(kind, job)

    def persist(self, job: Job) -> Awaitable[bool]:
        """Write the job's whole state now (ordered after every earlier write).

        The write is fenced (``sql.update_job``): it resolves to False, and
        the job is let go (``on_lost``), when another instance holds it now.
        """
        self._dirty.discard(job.id)
        self._state_dirty.discard(job.id)
        if job.id in self._saved and job.status not in TERMINAL:
            self._dirty.add(job.id)  # the state's write does not carry the saved place
        write = self._write(
            sql.update_job, msgspec.structs.replace(job), now_ms(), self.notices.notice_of
        )
        write.add_done_callback(lambda _: self._state_written(job.id, write))
        self._last_write[job.id] = write
        if job.status in TERMINAL and job.result is not None:
            write.add_done_callback(lambda _: self._release_result(job, write))
        return write

    def _release_result(self, job: Job, write: asyncio.Future[bool]) -> None:
        """Once a finished job's large result is stored, stop holding it in memory."""
        if write.cancelled() or write.exception() is not None or write.result() is False:
            return
        if self._jobs.get(job.id) is not job:
            return
        if len(_encoder.encode(job.result)) > RESULT_KEPT_BYTES:
            job.result = None
            self._result_stored.add(job.id)

    def _state_written(self, job_id: str, write: asyncio.Future[bool]) -> None:
        if self._last_write.get(job_id) is write:
            del self._last_write[job_id]
        if not write.cancelled() and write.exception() is None and write.result() is False:
            self._lost(job_id)

    async def persisted(self, job_id: str) -> bool:
        """Wait until the job's latest state change is in the store.

        False if this instance no longer holds the job (its write was fenced
        off, or the job was let go before): the store has someone else's answer.
        """
        write = self._last_write.get(job_id)
        if write is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(write)
        return job_id in self._jobs

    def forget(self, job_id: str) -> None:
        """Drop a job from memory without writing it (another instance owns it now)."""
        self._jobs.pop(job_id, None)
        self._saved.pop(job_id, None)
        self._result_stored.discard(job_id)
        self._dirty.discard(job_id)
        self._state_dirty.discard(job_id)
        self._publish(None)

    def live_ids(self) -> list[str]:
        return [j.id for j in self._jobs.values() if j.status not in TERMINAL]

    def requeue(self, job: Job, paused: bool = False) -> Awaitable[bool]:
        """Put a running job back in the queue, with its saved place, for any instance.

        Its latest saved place goes in the same write; the job leaves this
        instance's memory (whoever claims it next runs it). ``paused``: it
        waits, unclaimed, as ``paused`` until it is resumed.
        """
        check_transition(job.status, JobStatus.PENDING)
        saved = self._saved.pop(job.id, None)
        stored = msgspec.structs.replace(job)
        self.forget(job.id)
        status = JobStatus.PAUSED if paused else JobStatus.PENDING
        back = msgspec.structs.replace(job, status=status, owner=None, pid=None)
        self.events.publish(Kind.REQUEUED, back)
        return self._write(claims.requeue_job, stored, saved, now_ms(), paused)

    def retry(
        self, job: Job, run_at: datetime, rank: int, error: dict[str, Any]
    ) -> Awaitable[bool]:
        """Put a job whose attempt failed back as ``scheduled`` until ``run_at``, for any instance.

        Like ``requeue``: one fenced write, and the job leaves this
        instance's memory (whoever claims it when it is due runs it).
        """
        check_transition(job.status, JobStatus.SCHEDULED)
        saved = self._saved.pop(job.id, None)  # the next attempt resumes from it
        stored = msgspec.structs.replace(
            job, status=JobStatus.SCHEDULED, run_at=run_at, error=error, pid=None
        )
        self.forget(job.id)
        back = msgspec.structs.replace(stored, owner=None, started_at=None)
        self.events.publish(Kind.REQUEUED, back)  # streams: it runs again at run_at
        return self._write(claims.retry_job, stored, rank, saved, now_ms())

    def record_resources(
        self, job_id: str, job_type: str, attempt: int, resources: Resources
    ) -> None:
        """A run's child is gone: how it ended and what it used, kept with its job.

        Written with the next flush, after the final state's write (the
        child's end comes after its final message), all runs' ends of that
        period in one write; fenced by the run's attempt, so a later run's stay.
        """
        job = self._jobs.get(job_id)
        if job is not None and job.attempts == attempt:
            job.resources = resources
            self._publish(job)
        self._resources[job_id] = (attempt, resources)
        for listener in self.resource_listeners:
            listener(job_type, resources)

    def save(self, job: Job, state_json: bytes) -> None:
        """Keep the job's latest saved place; written by the next flush."""
        self._saved[job.id] = state_json
        self.update(job, saved_at=now())

    def release(self, job: Job) -> None:
        """Give a claimed job whose child never began it back to the queue."""
        self.forget(job.id)
        self._write(claims.unclaim, [msgspec.structs.replace(job)])

    def _lost(self, job_id: str) -> None:
        if job_id in self._jobs:
            log.error("job %s is held by another instance now; letting it go here", job_id)
            self.forget(job_id)
            self.on_lost(job_id)

    def update(self, job: Job, **changes: Any) -> None:
        """Change progress or result; written by the next flush."""
        for name, value in changes.items():
            setattr(job, name, value)
        self._dirty.add(job.id)
        self._publish(job)
        if "progress" in changes:
            self.events.publish(Kind.PROGRESS, job)
        if "result" in changes:
            self.events.publish(Kind.PARTIAL, job)

    def merge_progress(
        self,
        job: Job,
        processed: int | None,
        total: int | None,
        message: str | None,
        phase: str | None,
    ) -> None:
        old = job.progress
        merged = protocol.merge_progress(
            [processed, total, message, phase], [old.processed, old.total, old.message, old.phase]
        )
        self.update(job, progress=Progress(*merged))  # type: ignore[arg-type]

    async def flush(self) -> None:
        write = self._start_flush()
        if write is not None:
            await write

    def _start_flush(self) -> asyncio.Future[Any] | None:
        for job_id in list(self._state_dirty):
            if job_id in self._jobs:
                self.persist(self._jobs[job_id])
        self._state_dirty.clear()
        ends = None
        if self._resources:
            ends = self._write(sql.set_resources, list(self._resources.items()))
            self._resources = {}
        if not self._dirty:
            return ends
        batch = [msgspec.structs.replace(self._jobs[i]) for i in self._dirty if i in self._jobs]
        saved = {j.id: self._saved.pop(j.id) for j in batch if j.id in self._saved}
        self._dirty.clear()
        write = self._write(sql.update_progress, batch, now_ms(), saved)
        write.add_done_callback(self._progress_written)
        return write

    def _progress_written(self, write: asyncio.Future[list[str]]) -> None:
        if not write.cancelled() and write.exception() is None:
            for job_id in write.result():
                self._lost(job_id)

    def write(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run ``fn(db, *args)`` in the ordered writer, retried like state writes;
        shutdown's ``drain`` waits for it too (a job's log lines)."""
        return self._write(fn, *args)

    def _write(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        future = asyncio.ensure_future(
            self.store.call(fn, *args, write=True, retry_for=STATE_WRITE_RETRY_S)
        )
        self._writes.add(future)
        future.add_done_callback(self._write_done)
        return future

    def _write_done(self, future: asyncio.Future[Any]) -> None:
        self._writes.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.error("job write failed", exc_info=future.exception())

    async def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` for every write made so far; returns how many are left."""
        self._start_flush()
        if not self._writes:
            return 0
        _, left = await asyncio.wait(list(self._writes), timeout=timeout)
        return len(left)

    # -- waiting and events ------------------------------------------------

    def _publish(self, job: Job | None) -> None:
        """Wake whoever waits on a change (no one waiting: nothing to do)."""
        if self._waiting:
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    async def wait(
        self,
        job_id: str,
        timeout: float,
        until: Callable[[Job], bool] = lambda j: j.status in TERMINAL,
    ) -> Job | None:
        """Wait for a job in memory to satisfy ``until``; returns it.

        None on timeout, or as soon as the job leaves memory (let go to
        another instance).
        """
        deadline = time.monotonic() + timeout
        held = job_id in self._jobs
        while True:
            job = self._jobs.get(job_id)
            if job is not None and until(job):
                return job
            if held and job is None:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._waiting += 1
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return None
            finally:
                self._waiting -= 1

    # -- forgetting ----------------------------------------------------------

    def sweep(self, ttl_s: float, now: float | None = None) -> int:
        """Drop finished jobs older than the TTL from memory; the store keeps them."""
        cutoff = (time.time() if now is None else now) - ttl_s
        old = [
            j.id
            for j in self._jobs.values()
            if j.status in TERMINAL
            and j.completed_at is not None
            and j.completed_at.timestamp() < cutoff
            and j.id not in self._dirty
        ]
        for job_id in old:
            del self._jobs[job_id]
            self._result_stored.discard(job_id)
            log.info(
                "job %s swept from memory (the store keeps it)", job_id, extra=about_job(job_id)
            )
        return len(old)
