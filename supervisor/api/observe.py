"""Every request's id, and what the metrics count of it: the outermost middleware.

Each request gets an id: the client's own ``X-Request-ID`` when it is sane
(1 to 128 characters of ``A-Z a-z 0-9 . _ -``), a fresh one otherwise. It is
set in ``supervisor.logs.request_id`` for every line logged while the request
is served, and sent back in ``X-Request-ID`` on the answer (error answers
made outside this middleware add it from the same variable: ``request_id_header``).

When the request is over, ``on_done(method, route, status, seconds)`` is
called: ``route`` is the path template the router matched
(``/admin/jobs/{jobId}/status``), never the raw path, so that the metrics'
labels stay few.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from supervisor import logs

HEADER = b"x-request-id"
_SANE = re.compile(rb"[A-Za-z0-9._-]{1,128}")
UNMATCHED = "unmatched"

OnDone = Callable[[str, str, int, float], None]


def request_id_for(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == HEADER and _SANE.fullmatch(value):
            return value.decode("ascii")
    return secrets.token_hex(8)


def request_id_header() -> list[tuple[bytes, bytes]]:
    """The header for an answer made outside the middleware (an unexpected error's 500)."""
    value = logs.request_id.get()
    return [] if value is None else [(HEADER, value.encode("ascii"))]


def route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class Observe:
    def __init__(self, app: ASGIApp, on_done: OnDone | None = None) -> None:
        self.app = app
        self.on_done = on_done

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_for(scope)
        # Not reset afterwards: the handler for an unexpected error runs
        # after this returns, in the same task (one per request), and needs it.
        logs.request_id.set(request_id)
        header = (HEADER, request_id.encode("ascii"))
        status = 500  # unless an answer starts
        began = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [h for h in message.get("headers", []) if h[0].lower() != HEADER]
                message["headers"] = [*headers, header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.on_done is not None:
                self.on_done(scope["method"], route_of(scope), status, time.perf_counter() - began)
