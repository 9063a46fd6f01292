"""Request parsing and response encoding shared by the route modules.

A body that does not decode raises the domain's ``Invalid`` (``supervisor.parsing``),
mapped to its 400 like every domain error.
"""

from __future__ import annotations

from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from supervisor.api.edge import check_body
from supervisor.api.errors import ApiError
from supervisor.api.query import query_int
from supervisor.parsing import decode
from supervisor.wire import encode, wire

T = TypeVar("T")

__all__ = ["json", "parse", "query_int", "read_json", "wire"]


async def read_json(request: Request, max_bytes: int | None = None) -> bytes:
    """The body of a JSON request, refusing other content types and bodies over ``max_bytes``
    (at most ``JOBSUP_MAX_BODY_BYTES``, kept in ``app.state.max_body_bytes``)."""
    limit: int = request.app.state.max_body_bytes
    max_bytes = limit if max_bytes is None else min(max_bytes, limit)
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    # A body announced too large is refused before a byte of it is awaited:
    # otherwise a client trickling it would hold the request until its deadline.
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, "body_too_large", f"body over {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise ApiError(413, "body_too_large", f"body over {max_bytes} bytes")
    if not body:
        raise ApiError(400, "invalid_json", "the body is empty; send a JSON object")
    check_body(body)
    return bytes(body)


async def parse(request: Request, type_: type[T]) -> T:
    return decode(await read_json(request), type_)


def json(value: Any, status: int = 200) -> Response:
    return Response(encode(value), status_code=status, media_type="application/json")
