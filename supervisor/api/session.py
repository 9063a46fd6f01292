"""/admin/session: a token typed once, exchanged for a session cookie (browsers).

``POST`` with ``{"token": "..."}`` answers ``{"name", "role"}`` and sets
``jobsup_session`` (``HttpOnly; SameSite=Strict; Path=/``, plus ``Secure``
over https); ``GET`` says who the cookie (or bearer token) is; ``DELETE``
logs out. The cookie is signed (``supervisor.keys.Sessions``) and lasts
``JOBSUP_SESSION_TTL_S``.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from supervisor.api.access import Role, audited, needs, public
from supervisor.api.common import json, read_json
from supervisor.api.contract import NO_CONTENT, contract
from supervisor.api.errors import ApiError
from supervisor.api.guard import COOKIE, caller_of, peer_of, set_caller
from supervisor.credentials import Caller
from supervisor.keys import Keys
from supervisor.parsing import decode

MAX_LOGIN_BYTES = 4096


class Login(msgspec.Struct, forbid_unknown_fields=True):
    token: str


class SessionView(msgspec.Struct):
    """Who a session (or a bearer token) is: the token's name and role."""

    name: str
    role: str


def _keys(request: Request) -> Keys:
    keys: Keys = request.app.state.keys
    return keys


def _who(caller: Caller) -> SessionView:
    return SessionView(caller.name, caller.role)


@public
@audited("session.login")
@contract(body=Login, returns=SessionView, errors=(401, 404, 429))
async def login(request: Request) -> Response:
    """Exchange a token for a session cookie (browsers)."""
    keys = _keys(request)
    if not keys.enabled:
        raise ApiError(404, "not_found", "authentication is off: there are no sessions")
    body = decode(await read_json(request, MAX_LOGIN_BYTES), Login)
    peer = peer_of(request.scope)
    token = keys.book.check(body.token)
    if token is None:
        retry = keys.failures.take(f"peer:{peer}")
        if retry:
            message = "too many failed authentications"
            raise ApiError(429, "rate_limited", message, headers={"Retry-After": str(retry)})
        raise ApiError(401, "unauthorized", "token: not a token this server accepts", "token")
    caller = Caller.of(token, peer)
    set_caller(request, caller)
    response = json(_who(caller))
    response.set_cookie(
        COOKIE,
        keys.sessions.issue(token),
        max_age=int(keys.sessions.ttl_s),
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


@needs(Role.VIEWER)
@contract(returns=SessionView)
async def whoami(request: Request) -> Response:
    """Who the session cookie (or the bearer token) is."""
    caller = caller_of(request)
    assert caller is not None
    return json(_who(caller))


@needs(Role.VIEWER)
@audited("session.logout")
@contract(responses={204: NO_CONTENT})
async def logout(request: Request) -> Response:
    """End the session: the cookie is cleared."""
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


routes = [
    Route("/admin/session", login, methods=["POST"]),
    Route("/admin/session", whoami, methods=["GET"]),
    Route("/admin/session", logout, methods=["DELETE"]),
]
