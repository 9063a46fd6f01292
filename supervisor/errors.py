"""API errors: ``{"error": {"code", "message", "field"?}}`` with the right status."""

from __future__ import annotations

import logging
import re

import msgspec
from starlette.requests import Request
from starlette.responses import Response

log = logging.getLogger("jobsup.api")

_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`$")
# On every answer (the edge middleware adds them; answers made outside it add
# them themselves): nothing is cached, nothing is sniffed as another type.
SECURITY_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


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
    clipped = ErrorBody(code, _clip(message), None if field is None else _clip(field))
    body = msgspec.json.encode(ErrorEnvelope(clipped))
    return Response(body, status_code=status, media_type="application/json")


def from_validation(exc: msgspec.ValidationError) -> ApiError:
    """msgspec says ``Expected `int`, got `str` - at `$.batchSize```: name the field."""
    text = str(exc)
    field = None
    match = _AT_PATH.search(text)
    if match:
        field = match.group(1) or None
        text = text[: match.start()]
    missing = re.match(r"Object missing required field `([^`]+)`", text)
    unknown = re.match(r"Object contains unknown field `([^`]+)`", text)
    if missing or unknown:
        name = (missing or unknown).group(1)  # type: ignore[union-attr]
        field = f"{field}.{name}" if field else name
    message = f"{field}: {text}" if field and not (missing or unknown) else text
    return ApiError(400, "invalid_field", message, field)


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.field)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    # Answered by Starlette's outermost middleware, outside the edge.
    response = error_response(500, "internal", "internal error; the server log has the details")
    response.raw_headers.extend(SECURITY_HEADERS)
    return response
