"""Server-Sent Events: /admin/jobs/events (every job) and /admin/jobs/{jobId}/events.

Each event is ``event: <kind>``, ``id: <id>``, ``data: <json>``; the kinds
and their data are ``supervisor.events``'. A stream starts with a
``snapshot`` (or, given ``Last-Event-ID``, with what followed that event if
the ring buffer still holds it), then sends events as they happen, at most
one write per ``events_interval_s`` (progress in between is coalesced: the
latest wins). ``: keep-alive`` comments keep idle streams open through
proxies. A subscriber that falls ``events_queue`` events behind is sent
``event: overflow`` (no id: resuming from the last event it got works) and
its stream ends. The one-job stream ends after ``finished``. Every stream
ends when the client goes away, or when the server begins shutting down.

Jobs another instance owns stream too (``supervisor.follow``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable

from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from supervisor.api.access import Role, needs
from supervisor.api.contract import Deferred, Text, contract
from supervisor.api.query import query_label, query_status
from supervisor.events import Event, EventBus, Kind, Subscription
from supervisor.job import Job
from supervisor.runtime import Runtime
from supervisor.state import HELD, LIVE, TERMINAL, JobStatus
from supervisor.store.jobs import JobFilter
from workers import registry

log = logging.getLogger("jobsup.events")

# Live jobs sent as snapshots when an every-job stream starts, per status.
SNAPSHOT_LIMIT = 1000
_OVERFLOW = (
    b'event: overflow\ndata: {"message": "this stream fell too far behind and was dropped; '
    b'reconnect with Last-Event-ID"}\n\n'
)
_KEEP_ALIVE = b": keep-alive\n\n"
_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"x-accel-buffering", b"no"),  # nginx: do not buffer the stream
]


class EventStream:
    """An ASGI response streaming ``body``; it ends when the client goes away.

    uvicorn's ``send`` returns silently once the client is gone, so the
    disconnect is watched on ``receive`` and closes the subscription, which
    ends ``body`` at its next wait.
    """

    def __init__(self, sub: Subscription, body: AsyncIterator[bytes]) -> None:
        self.sub = sub
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") == "HEAD":  # the headers only: no stream to hold open
            self.sub.close()
            await _aclose(self.body)
            await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
            await send({"type": "http.response.body", "body": b""})
            return
        gone = False

        async def watch() -> None:
            nonlocal gone
            with contextlib.suppress(Exception):
                while (await receive())["type"] != "http.disconnect":
                    pass
            gone = True
            self.sub.close()

        watcher = asyncio.ensure_future(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
            async for chunk in self.body:
                if gone:
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if not gone:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.sub.close()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await _aclose(self.body)


async def _aclose(body: AsyncIterator[bytes]) -> None:
    close = getattr(body, "aclose", None)
    if close is not None:
        await close()


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _resume(request: Request, bus: EventBus) -> list[Event] | None:
    last = request.headers.get("last-event-id")
    return None if last is None else bus.since(last)


async def _pump(
    runtime: Runtime,
    sub: Subscription,
    first: list[Event],
    ends: Callable[[Event], bool],
) -> AsyncIterator[bytes]:
    """Write ``first``, then the subscription's events; coalesced, with keep-alives."""
    settings = runtime.settings
    events = first
    while True:
        if events:
            chunk = b"".join(e.frame for e in events)
            yield chunk
            if any(ends(e) for e in events):
                return
            if settings.events_interval_s > 0:
                # Give or take a quarter: streams woken by the same event do
                # not all write again in the same instant.
                await sub.pause(settings.events_interval_s * random.uniform(0.75, 1.25))
        events = await sub.get(wait_s=settings.events_keepalive_s)
        if not events:
            if sub.overflowed:
                yield _OVERFLOW
                return
            if sub.closed:
                return
            yield _KEEP_ALIVE


_SSE = Text("text/event-stream", "Server-Sent Events")


def _events_query() -> dict[str, object]:
    return {"status": JobStatus, "type": str} | {n: str for n in sorted(registry.label_names())}


@needs(Role.VIEWER)
@contract(returns=_SSE, errors=(404,))
async def job_events(request: Request) -> EventStream:
    """One job's events: a snapshot first, then its changes; ends after ``finished``."""
    runtime = _runtime(request)
    bus = runtime.events
    job_id = request.path_params["jobId"]
    sub = bus.subscribe(lambda e: e.job_id == job_id)
    try:
        replay = _resume(request, bus)
        job = await runtime.service.get(job_id)  # 404 for an unknown job
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

    async def body() -> AsyncIterator[bytes]:
        # Followed from here, where the finally below is sure to run.
        follow = None
        if runtime.follower is not None and job.status not in TERMINAL:
            follow = runtime.follower.follow(job_id, seen=job)
        try:
            async for chunk in _pump(runtime, sub, first, lambda e: e.kind is Kind.FINISHED):
                yield chunk
        finally:
            if follow is not None:
                follow()

    return EventStream(sub, body())


def _filter(request: Request) -> tuple[JobStatus | None, str | None, str | None]:
    return query_status(request), request.query_params.get("type"), query_label(request)


@needs(Role.VIEWER)
@contract(query=Deferred(_events_query), returns=_SSE)  # labels too (?groupWaId=)
async def all_events(request: Request) -> EventStream:
    """Every job's events (``?status=``, ``?type=``, labels): live jobs' snapshots first."""
    status, job_type, label = _filter(request)
    runtime = _runtime(request)
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
        replay = _resume(request, bus)
        if replay is not None:
            first = [e for e in replay if match(e)]
        else:
            jobs = await _live(runtime, status, job_type, label)
            first = [bus.snapshot(job, with_result=False) for job in jobs]
            sub.drop_through(bus.seq)  # already shown by the snapshots
    except BaseException:
        sub.close()
        raise

    async def body() -> AsyncIterator[bytes]:
        follow = runtime.follower.follow_all(jobs) if runtime.follower else None
        try:
            async for chunk in _pump(runtime, sub, first, lambda e: False):
                yield chunk
        finally:
            if follow is not None:
                follow()

    return EventStream(sub, body())


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


routes = [
    Route("/admin/jobs/events", all_events, methods=["GET"]),
    Route("/admin/jobs/{jobId}/events", job_events, methods=["GET"]),
]
