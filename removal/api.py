"""/admin/groups: the WhatsApp groups the removal jobs work on."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from removal.directory import GroupIn, WhitelistIn
from removal.groups import DEFAULT_WINDOW_MS, MAX_WINDOW_MS, GroupService
from supervisor.api.access import Role, audited, needs
from supervisor.api.common import json, parse, query_int
from supervisor.api.errors import ApiError


def _service(request: Request) -> GroupService:
    return GroupService(request.app.state.store)


@needs(Role.ADMIN)
@audited("group.put", target="groupWaId")
async def put_group(request: Request) -> Response:
    group_wa_id = request.path_params["groupWaId"]
    body = await parse(request, GroupIn)
    return json(await _service(request).upsert(group_wa_id, body))


@needs(Role.VIEWER)
async def get_group(request: Request) -> Response:
    group_wa_id = request.path_params["groupWaId"]
    window = query_int(request, "inactivityWindowMs", DEFAULT_WINDOW_MS, 1, MAX_WINDOW_MS)
    return json(await _service(request).summary(group_wa_id, window))


@needs(Role.VIEWER)
async def list_members(request: Request) -> Response:
    group_wa_id = request.path_params["groupWaId"]
    raw = request.query_params.get("includeRemoved", "false").lower()
    if raw not in ("true", "false"):
        raise ApiError(
            400, "invalid_field", "includeRemoved must be true or false", "includeRemoved"
        )
    return json(await _service(request).members(group_wa_id, raw == "true"))


@needs(Role.ADMIN)
@audited("whitelist.put", target="groupWaId")
async def put_whitelist(request: Request) -> Response:
    group_wa_id = request.path_params["groupWaId"]
    body = await parse(request, WhitelistIn)
    ids = await _service(request).set_whitelist(group_wa_id, body.whatsapp_ids)
    return json({"groupWaId": group_wa_id, "whatsappIds": ids})


@needs(Role.VIEWER)
async def list_removals(request: Request) -> Response:
    group_wa_id = request.path_params["groupWaId"]
    limit = query_int(request, "limit", 100, 1, 1000)
    job_id = request.query_params.get("jobId")
    return json(await _service(request).removals(group_wa_id, limit, job_id))


routes = [
    Route("/admin/groups/{groupWaId}", put_group, methods=["PUT"]),
    Route("/admin/groups/{groupWaId}", get_group, methods=["GET"]),
    Route("/admin/groups/{groupWaId}/members", list_members, methods=["GET"]),
    Route("/admin/groups/{groupWaId}/whitelist", put_whitelist, methods=["PUT"]),
    Route("/admin/groups/{groupWaId}/removals", list_removals, methods=["GET"]),
]
