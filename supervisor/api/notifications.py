"""/admin/notifications: each notification's delivery and its outcome, newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from supervisor.api.access import Role, needs
from supervisor.api.common import json
from supervisor.api.contract import contract
from supervisor.api.errors import ApiError
from supervisor.api.jobs import MAX_LIST_LIMIT
from supervisor.api.query import query_int
from supervisor.settings import redact_url
from supervisor.store import Store, outbox
from workers.times import from_ms, opt_from_ms

_MAX_ID = 2**63 - 1


class Delivery(msgspec.Struct, rename="camel"):
    id: str  # the list's cursor
    delivery: str  # X-Jobsup-Delivery: the same on every attempt
    job_id: str
    event: str
    url: str  # without the password of a user part
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    created_at: datetime
    give_up_at: datetime
    next_at: datetime | None  # pending: the next attempt (or a lease's end)
    ended_at: datetime | None  # delivered or failed: when
    last_status: int | None  # the receiver's last HTTP status, if it answered
    last_error: str | None  # what went wrong last, if it did


def _delivery(row: outbox.Row) -> Delivery:
    pending = row.state == outbox.PENDING
    return Delivery(
        id=str(row.id),
        delivery=row.delivery,
        job_id=row.job_id,
        event=row.event,
        url=redact_url(row.url),
        state=row.state,  # type: ignore[arg-type]
        attempts=row.attempts,
        created_at=from_ms(row.created_at),
        give_up_at=from_ms(row.give_up_at),
        next_at=from_ms(row.next_at) if pending else None,
        ended_at=opt_from_ms(row.ended_at),
        last_status=row.last_status,
        last_error=row.last_error or None,
    )


def _filter(request: Request) -> outbox.OutboxFilter:
    params = request.query_params
    state = params.get("state")
    if state is not None and state not in outbox.STATES:
        raise ApiError(
            400, "invalid_field", f"state: must be one of {', '.join(outbox.STATES)}", "state"
        )
    before = params.get("before")
    return outbox.OutboxFilter(
        state=state,
        job_id=params.get("jobId"),
        before=None if before is None else query_int(request, "before", 0, 1, _MAX_ID),
        limit=query_int(request, "limit", 50, 1, MAX_LIST_LIMIT),
    )


_QUERY = {
    "state": Literal["pending", "delivered", "failed"],
    "jobId": str,
    "before": str,
    "limit": Annotated[int, msgspec.Meta(ge=1, le=MAX_LIST_LIMIT)],
}


@needs(Role.ADMIN)
@contract(
    query=_QUERY,
    returns=list[Delivery],
    headers={"X-Next-Before": "the cursor of the next page, when there is one"},
)
async def list_notifications(request: Request) -> Response:
    """Each notification to each URL, newest first, with its outcome.

    Filters: ``state`` (pending, delivered, failed), ``jobId``;
    ``X-Next-Before`` names the cursor of the next page.
    """
    f = _filter(request)
    store: Store = request.app.state.store
    rows = await store.call(outbox.list_rows, f)
    page = rows[: f.limit]
    response = json([_delivery(r) for r in page])
    if len(rows) > f.limit:
        response.headers["X-Next-Before"] = str(page[-1].id)
    return response


routes = [Route("/admin/notifications", list_notifications, methods=["GET"])]
