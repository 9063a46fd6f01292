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

Jobs another instance owns stream too (``supervisor.follow``). What the
stream sends, and when, is ``api/streams.py``'s, shared with the WebSocket
routes; this module writes it as SSE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from supervisor.api import streams
from supervisor.api.access import Role, needs
from supervisor.api.contract import Deferred, Text, contract
from supervisor.api.query import query_label, query_status
from supervisor.api.streams import JobStream
from supervisor.events import Subscription
from supervisor.runtime import Runtime
from supervisor.state import JobStatus
from workers import registry

log = logging.getLogger("jobsup.events")

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


async def _frames(stream: JobStream) -> AsyncIterator[bytes]:
    """The stream's batches as SSE: one chunk per batch, keep-alives, the overflow notice."""
    async for events in stream.batches():
        yield b"".join(e.frame for e in events) if events else _KEEP_ALIVE
    if stream.overflowed:
        yield _OVERFLOW


_SSE = Text("text/event-stream", "Server-Sent Events")


def events_query() -> dict[str, object]:
    return {"status": JobStatus, "type": str} | {n: str for n in sorted(registry.label_names())}


@needs(Role.VIEWER)
@contract(returns=_SSE, errors=(404,))
async def job_events(request: Request) -> EventStream:
    """One job's events: a snapshot first, then its changes; ends after ``finished``."""
    job_id = request.path_params["jobId"]
    last_id = request.headers.get("last-event-id")
    stream = await streams.one_job(_runtime(request), job_id, last_id)
    return EventStream(stream.sub, _frames(stream))


def stream_filter(request: Request) -> tuple[JobStatus | None, str | None, str | None]:
    """The every-job stream's filters: ``?status=``, ``?type=``, a label."""
    return query_status(request), request.query_params.get("type"), query_label(request)


@needs(Role.VIEWER)
@contract(query=Deferred(events_query), returns=_SSE)  # labels too (?groupWaId=)
async def all_events(request: Request) -> EventStream:
    """Every job's events (``?status=``, ``?type=``, labels): live jobs' snapshots first."""
    last_id = request.headers.get("last-event-id")
    stream = await streams.every_job(_runtime(request), *stream_filter(request), last_id)
    return EventStream(stream.sub, _frames(stream))


routes = [
    Route("/admin/jobs/events", all_events, methods=["GET"]),
    Route("/admin/jobs/{jobId}/events", job_events, methods=["GET"]),
]
