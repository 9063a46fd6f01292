"""/webhooks/evolution: Evolution API v2's webhook deliveries, and the /admin import routes.

The webhook routes are public at the token layer: the gateway proves itself
with the secret it was configured with, not with a jobsup token.

- ``JOBSUP_WEBHOOK_SECRET``: the request's ``X-Webhook-Secret`` header must
  equal it (compared in constant time).
- ``JOBSUP_WEBHOOK_JWT_KEY``: ``Authorization: Bearer <JWT>``, HS256, signed
  with it, with an ``exp`` not past (Evolution signs one per delivery when its
  webhook ``headers`` hold ``jwt_key``).

When both are set, a delivery must pass both. When neither is, the routes
answer 404 ``webhooks_not_configured`` (the feature is off; a gateway does
not retry a 404): an open endpoint would let anyone make a member look
active. A refused delivery writes nothing.

A delivery is answered 200 once its facts are committed (or with what it
ignored); 400 naming the field for a body that is not what Evolution sends;
429 when too many deliveries wait (Evolution retries it).
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import jwt
import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from removal.activity import ActivitiesImport, ActivityService, ImportResult, MembersImport
from removal.evolution_events import read_delivery
from supervisor.api.access import Role, needs, public
from supervisor.api.common import json, parse, read_json
from supervisor.api.contract import contract
from supervisor.api.errors import ApiError
from supervisor.parsing import decode
from workers.times import now_ms

SECRET_HEADER = "x-webhook-secret"
JWT_LEEWAY_S = 10  # clock difference tolerated between Evolution's host and ours
# Deliveries handled at once (the rest wait, cheaply). Measured by bench/
# (the webhooks figure): more lets a burst slow GET status; fewer, the burst.
MAX_HANDLING = 4


class DeliveryAnswer(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What a delivery changed: facts applied, or why it changed nothing by design."""

    event: str
    applied: int
    ignored: str | None = None


def _service(request: Request) -> ActivityService:
    state = request.app.state
    service: ActivityService | None = getattr(state, "activity", None)
    if service is None:
        service = state.activity = ActivityService(state.store)
    return service


def _unauthorized(message: str, field: str) -> ApiError:
    return ApiError(401, "unauthorized", message, field)


def authenticate(request: Request) -> None:
    """Raise unless the request carries the configured secret(s)."""
    policy = request.app.state.jobs.policy
    secret: str = policy.webhook_secret.value
    key: str = policy.webhook_jwt_key.value
    if not secret and not key:
        raise ApiError(
            404,
            "webhooks_not_configured",
            "webhooks are not configured: set JOBSUP_WEBHOOK_SECRET or JOBSUP_WEBHOOK_JWT_KEY",
        )
    if secret:
        # Starlette decodes header bytes as latin-1: encoding back gives them as sent.
        given = request.headers.get(SECRET_HEADER, "").encode("latin-1")
        if not secrets.compare_digest(given, secret.encode()):
            raise _unauthorized("missing or wrong X-Webhook-Secret", "X-Webhook-Secret")
    if key:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("missing Authorization: Bearer token", "Authorization")
        try:
            jwt.decode(
                token.strip(),
                key,
                algorithms=["HS256"],
                options={"require": ["exp"]},
                leeway=JWT_LEEWAY_S,
            )
        except jwt.ExpiredSignatureError:
            raise _unauthorized("the token has expired", "Authorization") from None
        except jwt.InvalidTokenError:
            raise _unauthorized("the token is not valid", "Authorization") from None


async def _receive(request: Request, path_event: str | None) -> Response:
    authenticate(request)  # before a byte of the body is read
    state = request.app.state
    slots: asyncio.Semaphore | None = getattr(state, "webhook_slots", None)
    if slots is None:
        slots = state.webhook_slots = asyncio.Semaphore(MAX_HANDLING)
    # A few deliveries at a time: under a burst the others wait here, parked,
    # instead of each taking its turn on the event loop ahead of the job API.
    async with slots:
        return await _handle(request, path_event)


async def _handle(request: Request, path_event: str | None) -> Response:
    payload: Any = decode(await read_json(request), Any)  # type: ignore[arg-type]
    delivery = read_delivery(payload, path_event, now_ms())
    applied = await _service(request).apply(delivery.facts) if delivery.facts else 0
    ignored = delivery.ignored if not applied else None
    return json(DeliveryAnswer(event=delivery.event, applied=applied, ignored=ignored))


@public  # the gateway's secret, checked in authenticate()
@contract(body=dict[str, Any], returns=DeliveryAnswer, errors=(401, 404, 429))
async def evolution(request: Request) -> Response:
    """An Evolution API webhook delivery (secret or JWT, not a jobsup token)."""
    return await _receive(request, None)


@public  # the gateway's secret, checked in authenticate()
@contract(body=dict[str, Any], returns=DeliveryAnswer, errors=(401, 404, 429))
async def evolution_by_event(request: Request) -> Response:
    """An Evolution API webhook delivery, byEvents form (the event in the path)."""
    return await _receive(request, request.path_params["event"])


@needs(Role.ADMIN)
@contract(body=MembersImport, returns=ImportResult)
async def import_members(request: Request) -> Response:
    """Merge members into a group (created if unknown), one transaction."""
    group_wa_id = request.path_params["groupWaId"]
    body = await parse(request, MembersImport)
    return json(await _service(request).import_members(group_wa_id, body))


@needs(Role.ADMIN)
@contract(body=ActivitiesImport, returns=ImportResult)
async def import_activity(request: Request) -> Response:
    """Move members' last activity forward, one transaction; unknown ones are listed."""
    body = await parse(request, ActivitiesImport)
    return json(await _service(request).import_activity(body))


routes = [
    Route("/webhooks/evolution", evolution, methods=["POST"]),
    Route("/webhooks/evolution/{event}", evolution_by_event, methods=["POST"]),
    Route("/admin/groups/{groupWaId}/members/import", import_members, methods=["POST"]),
    Route("/admin/activity/import", import_activity, methods=["POST"]),
]
