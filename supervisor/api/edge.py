"""The API's edge: what every request passes before routing, and every answer after.

Neither database stores a NUL character (PostgreSQL refuses it in text and
JSON; SQLite would cut strings at it in places), and a path or query string
that is not valid UTF-8 would otherwise be decoded with replacement
characters, so that two different requests name the same group. Both are
refused here, once, with a 400 naming the field, before any handler or
database sees them. Request bodies get the same NUL check in
``check_body``, called by ``read_json``.

Path parameters (ids) are also held to ``MAX_ID_LENGTH``: ids are indexed,
and PostgreSQL refuses an index entry over about 2.7 KB.

Every answer also gets the headers an API answer should carry, and the body
of a request has a deadline (``body_timeout_s``): a client that sends its
body slower than that gets 408 and the connection is closed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import unquote_to_bytes

import msgspec
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from supervisor.api.errors import SECURITY_HEADERS, ApiError, error_response
from workers.db import MAX_ID_LENGTH

NUL = "\x00"
_NUL_ESCAPE = b"\\u0000"  # the only way a NUL can appear in valid JSON


def _text(raw: bytes) -> str | None:
    """Percent-decoded UTF-8, or None when it is not valid UTF-8."""
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _refuse(field: str, problem: str) -> ApiError:
    return ApiError(400, "invalid_field", f"{field}: {problem}", field)


def check_path(scope: Scope) -> None:
    """Refuse a path that is not UTF-8, or whose parameters hold a NUL or are too long."""
    raw = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
    if _text(raw) is None:
        raise _refuse("path", "the path is not valid UTF-8")
    path = scope["path"]
    if NUL not in path and len(path) <= MAX_ID_LENGTH:
        return  # no parameter can be at fault
    for route in scope["app"].router.routes:
        match, child = route.matches(scope)
        if match is not Match.NONE:
            for name, value in child.get("path_params", {}).items():
                _check_id(name, str(value))
    if NUL in path:
        raise _refuse("path", "must not contain the NUL character (U+0000)")


def _check_id(name: str, value: str) -> None:
    if NUL in value:
        raise _refuse(name, "must not contain the NUL character (U+0000)")
    if len(value) > MAX_ID_LENGTH:
        raise _refuse(name, f"longer than {MAX_ID_LENGTH} characters")


def check_query(query: bytes) -> None:
    """Refuse query parameters that are not UTF-8 or hold a NUL, naming them."""
    if not query:
        return
    for pair in query.split(b"&"):
        raw_name, _, raw_value = pair.replace(b"+", b" ").partition(b"=")
        name = _text(raw_name)
        if name is None or NUL in name:
            raise _refuse("query", "a parameter name is not valid UTF-8 or holds a NUL")
        value = _text(raw_value)
        if value is None:
            raise _refuse(name, "is not valid UTF-8")
        if NUL in value:
            raise _refuse(name, "must not contain the NUL character (U+0000)")


def check_body(body: bytes) -> None:
    """Refuse a JSON body with a NUL in any string, naming where it is.

    The escape is looked for first, so that a body without one (nearly
    all) costs one scan of its bytes.
    """
    if _NUL_ESCAPE not in body:
        return
    try:
        value = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return  # the typed decode that follows names what is wrong
    field = _nul_path(value)
    if field is not None:
        raise _refuse(field or "body", "must not contain the NUL character (U+0000)")


def _nul_path(value: Any) -> str | None:
    """The JSON path (``members[3].whatsappId``) of the first string holding a NUL.

    Iterative: the body may nest deeper than Python's recursion limit.
    """
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if NUL in item:
                return path
        elif isinstance(item, dict):
            for key, child in item.items():
                if NUL in key:
                    return path
                stack.append((f"{path}.{key}" if path else key, child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", child) for i, child in enumerate(item))
    return None


class Edge:
    """ASGI middleware: refuse unstorable paths and queries, bound the body's time,
    add the API's headers to every answer."""

    def __init__(self, app: ASGIApp, body_timeout_s: float) -> None:
        self.app = app
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        # A refused WebSocket handshake is answered in HTTP too, with its own message type.
        start = "http.response.start" if kind == "http" else "websocket.http.response.start"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == start:
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        try:
            check_path(scope)
            check_query(scope.get("query_string", b""))
        except ApiError as exc:
            response = error_response(exc.status, exc.code, exc.message, exc.field)
            await response(scope, receive, send_with_headers)
            return
        if kind == "http":
            receive = _deadline(receive, self.body_timeout_s)
        await self.app(scope, receive, send_with_headers)


class BodyTimeout(Exception):
    """The client did not finish sending its body in time."""


def _deadline(receive: Receive, timeout_s: float) -> Receive:
    """``receive`` that raises ``BodyTimeout`` if the body is not all in ``timeout_s``
    after the request began; once it is, ``receive`` is passed through as is."""
    deadline = time.monotonic() + timeout_s
    complete = False

    async def bounded() -> Message:
        nonlocal complete
        if complete:
            return await receive()
        remaining = deadline - time.monotonic()
        try:
            message = await asyncio.wait_for(receive(), max(remaining, 0.001))
        except TimeoutError:
            raise BodyTimeout from None
        complete = message["type"] != "http.request" or not message.get("more_body", False)
        return message

    return bounded
