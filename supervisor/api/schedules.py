"""/admin/schedules: recurring start requests, fired by cron in a time zone."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from supervisor.api.access import Role, needs
from supervisor.api.common import json, read_json
from supervisor.api.query import encode_cursor, query_cursor, query_int, takes
from supervisor.schedules import ScheduleService

MAX_PAGE = 1000
# A schedule is a start request and a few fields: bounded like a start's body.
MAX_SCHEDULE_BYTES = 80 * 1024


def _service(request: Request) -> ScheduleService:
    service: ScheduleService = request.app.state.schedules
    return service


@needs(Role.ADMIN)
async def put_schedule(request: Request) -> Response:
    body = await read_json(request, MAX_SCHEDULE_BYTES)
    view, created = await _service(request).put(request.path_params["name"], body)
    return json(view, 201 if created else 200)


@needs(Role.VIEWER)
async def get_schedule(request: Request) -> Response:
    return json(await _service(request).get(request.path_params["name"]))


@needs(Role.VIEWER)
@takes("before", "limit")
async def list_schedules(request: Request) -> Response:
    """Schedules sorted by name; ``X-Next-Before`` is the next page's cursor."""
    limit = query_int(request, "limit", 100, 1, MAX_PAGE)
    items, cursor = await _service(request).list(query_cursor(request), limit)
    response = json(items)
    if cursor is not None:
        response.headers["X-Next-Before"] = encode_cursor(cursor)
    return response


@needs(Role.ADMIN)
async def delete_schedule(request: Request) -> Response:
    await _service(request).delete(request.path_params["name"])
    return Response(status_code=204)


routes = [
    Route("/admin/schedules", list_schedules, methods=["GET"]),
    Route("/admin/schedules/{name}", get_schedule, methods=["GET"]),
    Route("/admin/schedules/{name}", put_schedule, methods=["PUT"]),
    Route("/admin/schedules/{name}", delete_schedule, methods=["DELETE"]),
]
