"""/admin/schedules: recurring start requests, fired by cron in a time zone."""

from __future__ import annotations

from base64 import b64decode, b64encode
from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from supervisor.api.access import Role, needs
from supervisor.api.common import json, read_json
from supervisor.api.contract import NO_CONTENT, contract
from supervisor.api.errors import ApiError
from supervisor.api.query import query_int
from supervisor.schedules import NAME, ScheduleIn, ScheduleService, ScheduleView

MAX_PAGE = 1000
# A schedule is a start request and a few fields: bounded like a start's body.
MAX_SCHEDULE_BYTES = 80 * 1024


_NAME = {"name": Annotated[str, msgspec.Meta(pattern=f"^{NAME.pattern}$")]}
_Limit = Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE)]


def _service(request: Request) -> ScheduleService:
    service: ScheduleService = request.app.state.schedules
    return service


def _cursor(request: Request) -> str | None:
    """The page cursor (a schedule's name), as unpadded base64url, as the other lists send it."""
    raw = request.query_params.get("before")
    if raw is None:
        return None
    try:
        return b64decode(raw + "=" * (-len(raw) % 4), b"-_", validate=True).decode()
    except ValueError:  # not base64 (binascii.Error), not ASCII, not UTF-8 once decoded
        raise ApiError(
            400, "invalid_field", "before: not a cursor from X-Next-Before", "before"
        ) from None


@needs(Role.ADMIN)
@contract(path=_NAME, body=ScheduleIn, responses={200: ScheduleView, 201: ScheduleView})
async def put_schedule(request: Request) -> Response:
    """Create (201) or replace (200) a schedule: a start request fired by cron in a zone."""
    body = await read_json(request, MAX_SCHEDULE_BYTES)
    view, created = await _service(request).put(request.path_params["name"], body)
    return json(view, 201 if created else 200)


@needs(Role.VIEWER)
@contract(path=_NAME, returns=ScheduleView, errors=(404,))
async def get_schedule(request: Request) -> Response:
    """A schedule, its upcoming ticks and its recent ones."""
    return json(await _service(request).get(request.path_params["name"]))


@needs(Role.VIEWER)
@contract(
    query={"before": str, "limit": _Limit},
    returns=list[ScheduleView],
    headers={"X-Next-Before": "the cursor (``before``) of the next page, when there is one"},
)
async def list_schedules(request: Request) -> Response:
    """Schedules sorted by name; ``X-Next-Before`` is the next page's cursor."""
    limit = query_int(request, "limit", 100, 1, MAX_PAGE)
    items, cursor = await _service(request).list(_cursor(request), limit)
    response = json(items)
    if cursor is not None:
        response.headers["X-Next-Before"] = b64encode(cursor.encode(), b"-_").decode().rstrip("=")
    return response


@needs(Role.ADMIN)
@contract(path=_NAME, responses={204: NO_CONTENT}, errors=(404,))
async def delete_schedule(request: Request) -> Response:
    """Delete a schedule; the jobs it started stay."""
    await _service(request).delete(request.path_params["name"])
    return Response(status_code=204)


routes = [
    Route("/admin/schedules", list_schedules, methods=["GET"]),
    Route("/admin/schedules/{name}", get_schedule, methods=["GET"]),
    Route("/admin/schedules/{name}", put_schedule, methods=["PUT"]),
    Route("/admin/schedules/{name}", delete_schedule, methods=["DELETE"]),
]
