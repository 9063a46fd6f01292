"""/admin/groups: the groups the removal jobs work on; /admin/gateway: how they reach them."""

from __future__ import annotations

import re
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
from supervisor.api.access import Role, audited, needs
from supervisor.api.common import json, parse
from supervisor.api.contract import NO_CONTENT, contract
from supervisor.api.guard import caller_of
from supervisor.api.query import encode_cursor, query_bool, query_cursor, query_int
from supervisor.chains import ChainIn, Chains
from supervisor.errors import JobsupError
from workers.times import iso

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
    """A page of a list; ``X-Next-Before`` names the next page's cursor, as in the jobs list."""
    response = json(items)
    if cursor is not None:
        response.headers["X-Next-Before"] = encode_cursor(cursor)
    return response


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
    return _paged(*await _service(request).list(query_cursor(request), limit, window))


@needs(Role.ADMIN)
@audited("group.delete", target="groupWaId")
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
@audited("group.put", target="groupWaId")
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
    page = await _service(request).members(
        group_wa_id, include_removed, query_cursor(request), limit
    )
    return _paged(*page)


@needs(Role.ADMIN)
@audited("whitelist.put", target="groupWaId")
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
    page = await _service(request).removals(group_wa_id, limit, job_id, query_cursor(request))
    return _paged(*page)


class PlanIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """A removal plan: the removal_workflow's fields, without dryRun."""

    batch_size: Annotated[int, msgspec.Meta(gt=0, le=10_000)]
    delay_ms: Annotated[int, msgspec.Meta(ge=0, le=86_400_000)]
    inactivity_window_ms: _Window


class PlanAnswer(msgspec.Struct, rename="camel"):
    plan_id: str  # the chain's id: GET /admin/chains/{planId}
    dry_run_job_id: str
    removal_job_id: str  # approve or reject this one once the dry run has completed
    expires_at: str | None


_STEP = re.compile(r"^steps\[\d+\]\.")


def _plan_steps(group_wa_id: str, plan: PlanIn) -> ChainIn:
    """The dry run, then the real run behind an approval, pinned to the dry run's list.

    The real run starts with nobody pinned (``onlyWhatsappIds: []``), so it
    can never remove anyone it was not given; the dry run's completion
    copies its ``wouldRemoveWhatsappIds`` into it, in the same write that
    makes it await approval (``after.resultToConfig``), and the reviewer
    approves exactly that list.
    """
    common = {
        "type": "removal_workflow",
        "groupWaId": group_wa_id,
        "batchSize": plan.batch_size,
        "delayMs": plan.delay_ms,
        "inactivityWindowMs": plan.inactivity_window_ms,
    }
    dry = {**common, "dryRun": True}
    real = {
        **common,
        "dryRun": False,
        "onlyWhatsappIds": [],
        "approval": True,
        "after": {
            "when": "completed",
            "resultToConfig": {"onlyWhatsappIds": "wouldRemoveWhatsappIds"},
        },
    }
    return ChainIn([msgspec.Raw(msgspec.json.encode(step)) for step in (dry, real)])


@needs(Role.OPERATOR)
@audited("removal.plan", target="groupWaId")
@contract(body=PlanIn, responses={202: PlanAnswer}, errors=(404, 409, 429))
async def create_plan(request: Request) -> Response:
    """Run a dry run now, and the real removal of exactly whom it finds once approved."""
    group_wa_id = request.path_params["groupWaId"]
    plan = await parse(request, PlanIn)
    chains = Chains(request.app.state.jobs)
    try:
        dry, real = await chains.start(_plan_steps(group_wa_id, plan), caller_of(request))
    except JobsupError as exc:  # named as the plan's own fields, not the chain's steps
        exc.message = _STEP.sub("", exc.message)
        exc.field = None if exc.field is None else _STEP.sub("", exc.field)
        raise
    expires = real.approval.expires_at if real.approval is not None else None
    answer = PlanAnswer(
        dry.chain_id or "", dry.id, real.id, None if expires is None else iso(expires)
    )
    return json(answer, 202)


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
    Route("/admin/groups/{groupWaId}/removal-plans", create_plan, methods=["POST"]),
]
# Webhook deliveries and imports: the directory's other sources (removal.webhooks).
routes += webhooks.routes
