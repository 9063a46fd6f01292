"""One subscriber's job events, whatever carries them: SSE (``api/events.py``) or WebSocket
(``api/websocket.py``).

Opening a stream subscribes first, then reads the snapshot (or, given the
last event id a client saw, the ring buffer's events after it), so no change
falls between the two, and drops the queued events the snapshot already
shows. ``JobStream.batches()`` then yields the first batch and the
subscription's events, at most one batch per ``events_interval_s`` (progress
in between is coalesced), an empty batch when the stream was idle for
``events_keepalive_s`` (a keep-alive's turn), and ends when the one-job
stream's job has finished, when the subscription is dropped (``overflowed``:
its queue passed ``events_queue``), or when it is closed (the client went
away, the server is shutting down). Jobs another instance owns are followed
(``supervisor.follow``) while the batches are read.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable

from supervisor.events import Event, EventBus, Kind, Subscription
from supervisor.job import Job
from supervisor.runtime import Runtime
from supervisor.state import HELD, LIVE, TERMINAL, JobStatus
from supervisor.store.jobs import JobFilter

# Live jobs sent as snapshots when an every-job stream starts, per status.
SNAPSHOT_LIMIT = 1000


class JobStream:
    """A subscription with its first batch; read it with ``batches()``, end it with ``close()``."""

    def __init__(
        self,
        runtime: Runtime,
        sub: Subscription,
        first: list[Event],
        ends: Callable[[Event], bool],
        follow: Callable[[], Callable[[], None] | None],
    ) -> None:
        self.runtime = runtime
        self.sub = sub
        self.first = first
        self.ends = ends
        self._follow = follow
        self.finished = False  # the one-job stream saw its job finish

    @property
    def overflowed(self) -> bool:
        return self.sub.overflowed

    def close(self) -> None:
        self.sub.close()

    async def batches(self) -> AsyncIterator[list[Event]]:
        settings = self.runtime.settings
        unfollow = self._follow()  # here, where the finally below is sure to run
        try:
            events = self.first
            while True:
                if events:
                    yield events
                    if any(self.ends(e) for e in events):
                        self.finished = True
                        return
                    if settings.events_interval_s > 0:
                        # Give or take a quarter: streams woken by the same
                        # event do not all write again in the same instant.
                        pause = settings.events_interval_s * random.uniform(0.75, 1.25)
                        await self.sub.pause(pause)
                events = await self.sub.get(wait_s=settings.events_keepalive_s)
                if not events:
                    if self.sub.closed:
                        return
                    yield []  # idle: a keep-alive's turn
        finally:
            self.sub.close()
            if unfollow is not None:
                unfollow()


def _resume(bus: EventBus, last_id: str | None) -> list[Event] | None:
    return None if last_id is None else bus.since(last_id)


async def one_job(runtime: Runtime, job_id: str, last_id: str | None) -> JobStream:
    """One job's events: a snapshot (or the replay after ``last_id``), then its changes.

    Raises the service's NotFound for an unknown job. Ends after ``finished``.
    """
    bus = runtime.events
    sub = bus.subscribe(lambda e: e.job_id == job_id)
    try:
        replay = _resume(bus, last_id)
        job = await runtime.service.get(job_id)  # NotFound for an unknown job
        if replay is not None:
            first = [e for e in replay if e.job_id == job_id]
            if job.status in TERMINAL and all(e.kind is not Kind.FINISHED for e in first):
                first.append(bus.finished_copy(bus.snapshot(job, with_result=True)))
        else:
            snapshot = bus.snapshot(job, with_result=True)
            first = [snapshot]
            sub.drop_through(snapshot.seq)  # already shown by the snapshot
            if job.status in TERMINAL:
                first.append(bus.finished_copy(snapshot))
    except BaseException:
        sub.close()
        raise

    def follow() -> Callable[[], None] | None:
        if runtime.follower is None or job.status in TERMINAL:
            return None
        return runtime.follower.follow(job_id, seen=job)

    return JobStream(runtime, sub, first, lambda e: e.kind is Kind.FINISHED, follow)


async def every_job(
    runtime: Runtime,
    status: JobStatus | None,
    job_type: str | None,
    label: str | None,
    last_id: str | None,
) -> JobStream:
    """Every job's events the filters accept: live jobs' snapshots first (or the replay)."""
    bus = runtime.events

    def match(e: Event) -> bool:
        return (
            (status is None or e.status is status)
            and (job_type is None or e.job_type == job_type)
            and (label is None or e.label == label)
        )

    sub = bus.subscribe(match)
    jobs: list[Job] = []
    try:
        replay = _resume(bus, last_id)
        if replay is not None:
            first = [e for e in replay if match(e)]
        else:
            jobs = await _live(runtime, status, job_type, label)
            first = [bus.snapshot(job, with_result=False) for job in jobs]
            sub.drop_through(bus.seq)  # already shown by the snapshots
    except BaseException:
        sub.close()
        raise

    def follow() -> Callable[[], None] | None:
        return runtime.follower.follow_all(jobs) if runtime.follower else None

    return JobStream(runtime, sub, first, lambda e: False, follow)


async def _live(
    runtime: Runtime, status: JobStatus | None, job_type: str | None, label: str | None
) -> list[Job]:
    """The live and held jobs the filters accept (without results), oldest first."""
    unfinished = LIVE | HELD  # held: waiting for a job or an approval, still to come
    statuses = [status] if status is not None else sorted(unfinished)
    jobs: dict[str, Job] = {}
    for s in statuses:
        if s not in unfinished:
            continue
        f = JobFilter(status=s, type=job_type, label=label, limit=SNAPSHOT_LIMIT, with_result=False)
        for job in await runtime.service.list(f):
            jobs[job.id] = job
    return [jobs[i] for i in sorted(jobs)]
