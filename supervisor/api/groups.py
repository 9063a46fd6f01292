"""/admin/groups: the WhatsApp groups the removal jobs work on."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from supervisor.api.common import json, parse, query_int
from supervisor.errors import ApiError
from supervisor.store import Store
from workers import directory
from workers.directory import GroupIn, WhitelistIn

DEFAULT_WINDOW_MS = 30 * 24 * 3600 * 1000
MAX_WINDOW_MS = 10 * 365 * 24 * 3600 * 1000


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _require_group(store: Store, group_wa_id: str) -> None:
    if not await store.call(directory.group_exists, group_wa_id):
        raise ApiError(404, "not_found", f"no group {group_wa_id!r}", "groupWaId")


async def put_group(request: Request) -> Response:
    group_wa_id = request.path_params["groupWaId"]
    body = await parse(request, GroupIn)
    field = body.time_out_of_range()
    if field is not None:
        raise ApiError(400, "invalid_field", f"{field}: outside years 1 to 9999 in UTC", field)
    try:
        summary = await _store(request).call(
            directory.upsert_group,
            group_wa_id,
            body,
            _now_ms(),
            DEFAULT_WINDOW_MS,
            write=True,
            bulk=True,
        )
    except ValueError as exc:
        raise ApiError(400, "invalid_field", str(exc), "members") from None
    return json(summary)


async def get_group(request: Request) -> Response:
    group_wa_id = request.path_params["groupWaId"]
    window = query_int(request, "inactivityWindowMs", DEFAULT_WINDOW_MS, 1, MAX_WINDOW_MS)
    summary = await _store(request).call(directory.group_summary, group_wa_id, window, _now_ms())
    if summary is None:
        raise ApiError(404, "not_found", f"no group {group_wa_id!r}", "groupWaId")
    return json(summary)


async def list_members(request: Request) -> Response:
    group_wa_id = request.path_params["groupWaId"]
    raw = request.query_params.get("includeRemoved", "false").lower()
    if raw not in ("true", "false"):
        raise ApiError(
            400, "invalid_field", "includeRemoved must be true or false", "includeRemoved"
        )
    store = _store(request)
    await _require_group(store, group_wa_id)
    return json(await store.call(directory.list_members, group_wa_id, raw == "true"))


async def put_whitelist(request: Request) -> Response:
    group_wa_id = request.path_params["groupWaId"]
    body = await parse(request, WhitelistIn)
    store = _store(request)
    await _require_group(store, group_wa_id)
    ids = await store.call(
        directory.set_whitelist, group_wa_id, body.whatsapp_ids, write=True, bulk=True
    )
    return json({"groupWaId": group_wa_id, "whatsappIds": ids})


async def list_removals(request: Request) -> Response:
    group_wa_id = request.path_params["groupWaId"]
    limit = query_int(request, "limit", 100, 1, 1000)
    job_id = request.query_params.get("jobId")
    store = _store(request)
    await _require_group(store, group_wa_id)
    return json(await store.call(directory.removal_history, group_wa_id, limit, job_id))


routes = [
    Route("/admin/groups/{groupWaId}", put_group, methods=["PUT"]),
    Route("/admin/groups/{groupWaId}", get_group, methods=["GET"]),
    Route("/admin/groups/{groupWaId}/members", list_members, methods=["GET"]),
    Route("/admin/groups/{groupWaId}/whitelist", put_whitelist, methods=["PUT"]),
    Route("/admin/groups/{groupWaId}/removals", list_removals, methods=["GET"]),
]
