"""/admin/groups: the groups the removal jobs work on; /admin/gateway: how they reach them."""

from __future__ import annotations

from base64 import b64decode, b64encode
from typing import Annotated, Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from removal import webhooks
from removal.directory import GroupIn, GroupSummary, MemberView, RemovalRecord, WhitelistIn
from removal.gateways.status import GatewayView, gateway_status
from removal.groups import DEFAULT_WINDOW_MS, MAX_WINDOW_MS, GroupService
from supervisor.api.access import Role, needs
from supervisor.api.common import json, parse
from supervisor.api.contract import NO_CONTENT, contract
from supervisor.api.errors import ApiError
from supervisor.api.query import query_bool, query_int

MAX_PAGE = 1000


class WhitelistAnswer(msgspec.Struct, rename="camel"):
    group_wa_id: str
    whatsapp_ids: list[str]


_Window = Annotated[int, msgspec.Meta(ge=1, le=MAX_WINDOW_MS)]
_Limit = Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE)]
_NEXT = {"X-Next-Before": "the cursor (``before``) of the next page, when there is one"}


def _service(request: Request) -> GroupService:
    return GroupService(request.app.state.store)


def _paged(items: Any, cursor: str | None) -> Response:
    """A page of a list; ``X-Next-Before`` names the next page's cursor, as in the jobs list.

    The cursor is an id, which may hold any character: it travels as
    unpadded base64url, which fits a header and a query string unescaped.
    """
    response = json(items)
    if cursor is not None:
        response.headers["X-Next-Before"] = b64encode(cursor.encode(), b"-_").decode().rstrip("=")
    return response


def _cursor(request: Request) -> str | None:
    raw = request.query_params.get("before")
    if raw is None:
        return None
    try:
        return b64decode(raw + "=" * (-len(raw) % 4), b"-_", validate=True).decode()
    except ValueError:  # not base64 (binascii.Error), not ASCII, not UTF-8 once decoded
        raise ApiError(
            400, "invalid_field", "before: not a cursor from X-Next-Before", "before"
        ) from None


@needs(Role.VIEWER)
@contract(
    query={"before": str, "limit": _Limit, "inactivityWindowMs": _Window},
    returns=list[GroupSummary],
    headers=_NEXT,
)
async def list_groups(request: Request) -> Response:
    """Groups sorted by groupWaId, each with its counts."""
    window = query_int(request, "inactivityWindowMs", DEFAULT_WINDOW_MS, 1, MAX_WINDOW_MS)
    limit = query_int(request, "limit", 50, 1, MAX_PAGE)
    return _paged(*await _service(request).list(_cursor(request), limit, window))


@needs(Role.ADMIN)
@contract(responses={204: NO_CONTENT}, errors=(404, 409))
async def delete_group(request: Request) -> Response:
    """Delete a group, its members, whitelist and history."""
    await _service(request).delete(request.path_params["groupWaId"])
    return Response(status_code=204)


@needs(Role.ADMIN)
@contract(returns=WhitelistAnswer, errors=(404,))
async def get_whitelist(request: Request) -> Response:
    """A group's whitelist."""
    group_wa_id = request.path_params["groupWaId"]
    ids = await _service(request).whitelist(group_wa_id)
    return json(WhitelistAnswer(group_wa_id, ids))


@needs(Role.ADMIN)
@contract(body=GroupIn, returns=GroupSummary)
async def put_group(request: Request) -> Response:
    """Create or replace a group and its members."""
    group_wa_id = request.path_params["groupWaId"]
    body = await parse(request, GroupIn)
    return json(await _service(request).upsert(group_wa_id, body))


@needs(Role.VIEWER)
@contract(query={"inactivityWindowMs": _Window}, returns=GroupSummary, errors=(404,))
async def get_group(request: Request) -> Response:
    """A group's summary: members, admins, whitelisted, inactive, queued, removed."""
    group_wa_id = request.path_params["groupWaId"]
    window = query_int(request, "inactivityWindowMs", DEFAULT_WINDOW_MS, 1, MAX_WINDOW_MS)
    return json(await _service(request).summary(group_wa_id, window))


@needs(Role.VIEWER)
@contract(
    query={"includeRemoved": bool, "before": str, "limit": _Limit},
    returns=list[MemberView],
    errors=(404,),
    headers=_NEXT,
)
async def list_members(request: Request) -> Response:
    """A group's members (those removed too, on request), a page at a time."""
    group_wa_id = request.path_params["groupWaId"]
    include_removed = query_bool(request, "includeRemoved", False)
    limit = query_int(request, "limit", MAX_PAGE, 1, MAX_PAGE)
    page = await _service(request).members(group_wa_id, include_removed, _cursor(request), limit)
    return _paged(*page)


@needs(Role.ADMIN)
@contract(body=WhitelistIn, returns=WhitelistAnswer, errors=(404,))
async def put_whitelist(request: Request) -> Response:
    """Replace a group's whitelist: these members are never removed."""
    group_wa_id = request.path_params["groupWaId"]
    body = await parse(request, WhitelistIn)
    ids = await _service(request).set_whitelist(group_wa_id, body.whatsapp_ids)
    return json(WhitelistAnswer(group_wa_id, ids))


@needs(Role.VIEWER)
@contract(
    query={"limit": _Limit, "jobId": str, "before": str},
    returns=list[RemovalRecord],
    errors=(404,),
    headers=_NEXT,
)
async def list_removals(request: Request) -> Response:
    """A group's removal history, newest first, a page at a time."""
    group_wa_id = request.path_params["groupWaId"]
    limit = query_int(request, "limit", 100, 1, MAX_PAGE)
    job_id = request.query_params.get("jobId")
    page = await _service(request).removals(group_wa_id, limit, job_id, _cursor(request))
    return _paged(*page)


@needs(Role.ADMIN)
@contract(returns=GatewayView)
async def get_gateway(request: Request) -> Response:
    """Which gateway the removals use, its connection state and its last error."""
    policy = request.app.state.jobs.policy
    return json(await run_in_threadpool(gateway_status, policy))


routes = [
    Route("/admin/gateway", get_gateway, methods=["GET"]),
    Route("/admin/groups", list_groups, methods=["GET"]),
    Route("/admin/groups/{groupWaId}", put_group, methods=["PUT"]),
    Route("/admin/groups/{groupWaId}", get_group, methods=["GET"]),
    Route("/admin/groups/{groupWaId}", delete_group, methods=["DELETE"]),
    Route("/admin/groups/{groupWaId}/members", list_members, methods=["GET"]),
    Route("/admin/groups/{groupWaId}/whitelist", put_whitelist, methods=["PUT"]),
    Route("/admin/groups/{groupWaId}/whitelist", get_whitelist, methods=["GET"]),
    Route("/admin/groups/{groupWaId}/removals", list_removals, methods=["GET"]),
]
# Webhook deliveries and imports: the directory's other sources (removal.webhooks).
routes += webhooks.routes
