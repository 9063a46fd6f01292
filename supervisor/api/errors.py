"""API errors: ``{"error": {"code", "message", "field"?}}`` with the right status.

``ApiError`` is for what only HTTP knows (a wrong content type, a body too
large, a bad query parameter). The domain's errors (``supervisor.errors``)
are mapped here to their status and code, in one table.
"""

from __future__ import annotations

import logging

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from supervisor import errors
from supervisor.api.observe import request_id_header

log = logging.getLogger("jobsup.api")

# On every answer (the edge middleware adds them; answers made outside it add
# them themselves): nothing is cached, nothing is sniffed as another type.
SECURITY_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
]

# The most specific class first: a subclass is looked up along its MRO.
DOMAIN_STATUS: dict[type[errors.JobsupError], tuple[int, str]] = {
    errors.MalformedJson: (400, "invalid_json"),
    errors.Invalid: (400, "invalid_field"),
    errors.NotFound: (404, "not_found"),
    errors.Conflict: (409, "conflict"),
    errors.NotCancellable: (400, "not_cancellable"),
    errors.NotRunning: (400, "not_running"),
    errors.NotPaused: (400, "not_paused"),
    errors.QueueFull: (429, "queue_full"),
    errors.ShuttingDown: (503, "shutting_down"),
    errors.Unavailable: (503, "unavailable"),
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}


class ErrorBody(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    field: str | None = None


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody


# A refusal quotes what the client sent (an unknown field's name, an unknown
# type): clipped, so that an 8 MiB name is not sent back twice over.
MAX_ECHO = 1024


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ECHO else text[: MAX_ECHO - 1] + "…"


def error_response(status: int, code: str, message: str, field: str | None = None) -> Response:
    if code == "invalid_field" and field and not message.startswith(field):
        message = f"{field}: {message}"  # every invalid_field message starts with its field
    clipped = ErrorBody(code, _clip(message), None if field is None else _clip(field))
    body = msgspec.json.encode(ErrorEnvelope(clipped))
    return Response(body, status_code=status, media_type="application/json")


def status_of(exc: errors.JobsupError) -> tuple[int, str]:
    if isinstance(exc, errors.Rejected):
        return exc.status, {404: "not_found", 403: "forbidden"}.get(exc.status, "invalid_field")
    for cls in type(exc).__mro__:
        if cls in DOMAIN_STATUS:
            return DOMAIN_STATUS[cls]  # type: ignore[index]
    return 500, "internal"


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    response = error_response(exc.status, exc.code, exc.message, exc.field)
    response.headers.update(exc.headers)
    return response


async def handle_domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.JobsupError)
    status, code = status_of(exc)
    return error_response(status, code, exc.message, exc.field)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    # Answered by Starlette's outermost middleware, outside the edge.
    response = error_response(500, "internal", "internal error; the server log has the details")
    response.raw_headers.extend([*SECURITY_HEADERS, *request_id_header()])
    return response
