"""/admin/audit: the audit trail, newest first, paged like the job list."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from supervisor.api.access import Role, needs
from supervisor.api.common import json
from supervisor.api.contract import contract
from supervisor.api.jobs import MAX_LIST_LIMIT
from supervisor.api.query import query_int, query_time
from supervisor.audit import AuditEntry, AuditFilter
from supervisor.store import Store
from supervisor.store import access as sql


def _filter(request: Request) -> AuditFilter:
    params = request.query_params
    return AuditFilter(
        action=params.get("action"),
        who=params.get("who"),
        since=query_time(request, "since"),
        until=query_time(request, "until"),
        before=params.get("before"),
        limit=query_int(request, "limit", 50, 1, MAX_LIST_LIMIT),
    )


_Time = Annotated[datetime, msgspec.Meta(tz=True)]  # ISO 8601 with a zone
_QUERY = {
    "action": str,
    "who": str,
    "since": _Time,
    "until": _Time,
    "before": str,
    "limit": Annotated[int, msgspec.Meta(ge=1, le=MAX_LIST_LIMIT)],
}


@needs(Role.ADMIN)
@contract(
    query=_QUERY,
    returns=list[AuditEntry],
    headers={"X-Next-Before": "the cursor of the next page, when there is one"},
)
async def list_audit(request: Request) -> Response:
    """The audit trail, newest first; ``X-Next-Before`` names the cursor of the next page.

    Filters: ``action`` (``job.start``), ``who`` (a token's name or
    fingerprint), ``since`` and ``until`` (ISO 8601 times).
    """
    f = _filter(request)
    store: Store = request.app.state.store
    entries = await store.call(sql.list_audit, f)
    page = entries[: f.limit]
    response = json(page)
    if len(entries) > f.limit:
        response.headers["X-Next-Before"] = page[-1].id
    return response


routes = [Route("/admin/audit", list_audit, methods=["GET"])]
