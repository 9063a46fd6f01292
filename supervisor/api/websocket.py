"""WebSocket: /admin/jobs/ws (every job) and /admin/jobs/{jobId}/ws.

The same events as the SSE routes, from the same place (``api/streams.py``):
a snapshot first (or, given ``?lastEventId=``, what followed that event if
the ring buffer still holds it), then the changes, at most one batch per
``events_interval_s`` with progress coalesced. Each event is one text
message, ``{"event": <kind>, "id": <id>, "data": <the SSE data>}``.

Authentication is the Guard's, as for every route: a bearer header, or the
session cookie, which browsers send on a WebSocket (they cannot set a
header on one); with the cookie the handshake must carry the server's own
``Origin`` (or one of ``JOBSUP_CORS_ORIGINS``). A refused or failed
handshake is answered in HTTP with the error envelope (401, 403, 404).

How a stream ends, told by its close code:

- 1000 ``finished``: the one-job stream's job has finished;
- 1001 ``going away``: the server is shutting down;
- 1013 ``overflow``: the client fell ``events_queue`` events behind; the
  stream is dropped, and reconnecting with the last id it got resumes it;
- a client that takes no message for ``events_keepalive_s`` (its buffers
  full) is dropped without a close frame (it sees 1006): nothing more is
  written to it, so what it costs the server stays bounded.

Messages the client sends are read and ignored (at most 64 KiB each); a
client that goes away ends the stream at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.routing import WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from supervisor.api import streams
from supervisor.api.access import Role, needs
from supervisor.api.contract import Deferred, Text, contract
from supervisor.api.errors import error_response
from supervisor.api.events import events_query, stream_filter
from supervisor.api.streams import JobStream
from supervisor.events import Event
from supervisor.runtime import Runtime

log = logging.getLogger("jobsup.events")

FINISHED = (1000, "finished")
GOING_AWAY = (1001, "going away: the server is shutting down")
OVERFLOW = (1013, "overflow: this stream fell too far behind; reconnect with lastEventId")
# How long the closing handshake may take before the connection is simply dropped.
CLOSE_WAIT_S = 1.0

_WS = Text("application/json", "a WebSocket: one JSON text message per event")


def _message(event: Event) -> str:
    """The event as one text message; ``data`` is the JSON the bus encoded once."""
    return f'{{"event":"{event.kind.value}","id":"{event.id}","data":{event.data.decode()}}}'


async def _serve(websocket: WebSocket, stream: JobStream, runtime: Runtime) -> None:
    """Accept, send the stream's events, close with the code that says why it ended."""
    deadline = runtime.settings.events_keepalive_s
    gone = False

    async def watch() -> None:
        nonlocal gone
        with contextlib.suppress(Exception):
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass  # nothing a client says changes its stream
        gone = True
        stream.close()

    try:
        await websocket.accept()
    except BaseException:
        stream.close()
        raise
    watcher = asyncio.ensure_future(watch())
    try:
        async for events in stream.batches():
            for event in events:
                if gone:
                    return
                # The send waits while the client's buffers are full; past the
                # deadline the client is too slow to keep.
                await asyncio.wait_for(websocket.send_text(_message(event)), deadline)
        if gone:
            return
        code, reason = (
            OVERFLOW if stream.overflowed else FINISHED if stream.finished else GOING_AWAY
        )
        with contextlib.suppress(Exception):
            await asyncio.wait_for(websocket.close(code, reason), CLOSE_WAIT_S)
    except TimeoutError:
        log.info(
            "dropped a WebSocket client that took no message for %g s: %s",
            deadline,
            websocket.url.path,
        )
    except WebSocketDisconnect:
        pass  # the client went away mid-send, before its disconnect was read
    finally:
        stream.close()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """The router's answer to a WebSocket handshake on a path that serves none: 404."""
    response = error_response(404, "not_found", "no WebSocket is served at this path")
    await response(scope, receive, send)


def _runtime(websocket: WebSocket) -> Runtime:
    runtime: Runtime = websocket.app.state.runtime
    return runtime


@needs(Role.VIEWER)
@contract(query={"lastEventId": str}, responses={101: _WS}, errors=(404,))
async def job_socket(websocket: WebSocket) -> None:
    """One job's events over a WebSocket: a snapshot, then its changes, until it finishes."""
    runtime = _runtime(websocket)
    job_id = websocket.path_params["jobId"]
    last_id = websocket.query_params.get("lastEventId")
    stream = await streams.one_job(runtime, job_id, last_id)  # 404 before the handshake
    await _serve(websocket, stream, runtime)


def _socket_query() -> dict[str, object]:
    return {"lastEventId": str} | events_query()


@needs(Role.VIEWER)
@contract(query=Deferred(_socket_query), responses={101: _WS})
async def all_socket(websocket: WebSocket) -> None:
    """Every job's events over a WebSocket (``?status=``, ``?type=``, labels)."""
    runtime = _runtime(websocket)
    last_id = websocket.query_params.get("lastEventId")
    where = stream_filter(websocket)  # type: ignore[arg-type]  # reads only the query
    stream = await streams.every_job(runtime, *where, last_id)
    await _serve(websocket, stream, runtime)


routes = [
    WebSocketRoute("/admin/jobs/ws", all_socket),
    WebSocketRoute("/admin/jobs/{jobId}/ws", job_socket),
]
