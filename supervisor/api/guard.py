"""Access at the edge: who is calling, whether their role may, and the audit trail.

``Guard`` is pure ASGI middleware. For each request it finds the endpoint
the router will pick and reads its declarations (``supervisor.api.access``):

1. The role it needs. ``@public`` endpoints pass untouched. A path no route
   matches needs ``viewer``: an unauthenticated client gets 401 for every
   path under the API, whether it exists or not, so it cannot map the
   routes; an authenticated one gets its 404 or 405.
2. The credential: ``Authorization: Bearer <token>``, else the
   ``jobsup_session`` cookie. None, or one not accepted: 401 with
   ``WWW-Authenticate: Bearer`` (past the peer's failure budget: 429).
   A role below the endpoint's: 403.
3. A state-changing request made with the cookie must carry an ``Origin``
   that is the server's own or one of ``JOBSUP_CORS_ORIGINS``: else 403
   ``csrf``. So must a WebSocket handshake made with the cookie (a page on
   any site can open one, and the browser sends the cookie along: CSWSH).
   Bearer clients are not asked (a browser cannot add the header
   cross-site without CORS allowing it).
4. ``@limited`` endpoints (starts and cancels) take a token from the
   caller's bucket: 429 ``rate_limited`` with ``Retry-After`` when empty.
5. ``@audited`` endpoints get an audit entry with the status answered,
   written before the answer's last byte is sent (so a client that has its
   answer finds the entry), unless the handler wrote it itself (a start's
   entry is written in the job insert's transaction).

WebSocket handshakes go through the same steps; a refusal is sent as an
HTTP answer to the handshake (the ASGI ``websocket.http.response``
extension), in the same error envelope.

The handler finds the caller with ``caller_of(request)``, as data
(``supervisor.credentials.Caller``) to hand to the service.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from starlette.requests import Request
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from supervisor.api.access import Role, audit_of, is_limited, role_of
from supervisor.api.errors import error_response
from supervisor.api.matching import MATCHED, endpoint_of, first_match
from supervisor.audit import AuditEntry, entry
from supervisor.credentials import Caller
from supervisor.keys import Keys
from supervisor.store import Store
from supervisor.store import access as sql

log = logging.getLogger("jobsup.auth")

CALLER = "jobsup.caller"
NOTE = "jobsup.audit"
COOKIE = "jobsup_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ROLES = {"viewer": Role.VIEWER, "operator": Role.OPERATOR, "admin": Role.ADMIN}
# With authentication off, every request is this caller.
ANONYMOUS = "anonymous"


@dataclass
class AuditNote:
    """The audit entry an ``@audited`` request will get, unless ``recorded`` already."""

    action: str
    target: str | None
    recorded: bool = False


def caller_of(request: Request) -> Caller | None:
    caller: Caller | None = request.scope.get(CALLER)
    return caller


def set_caller(request: Request, caller: Caller) -> None:
    """For the routes that authenticate by themselves (a session login)."""
    request.scope[CALLER] = caller


def recorded(request: Request, target: str) -> None:
    """The handler's service wrote the request's audit entry itself, on ``target``."""
    note: AuditNote | None = request.scope.get(NOTE)
    if note is not None:
        note.target, note.recorded = target, True


def peer_of(scope: Scope) -> str | None:
    """The client's address (X-Forwarded-For's, when JOBSUP_TRUST_PROXY lets uvicorn read it)."""
    client = scope.get("client")
    return str(client[0]) if client else None


async def record(store: Store, audit: AuditEntry) -> None:
    """Write an audit entry; a database that cannot take it is logged, not raised."""
    try:
        await store.call(sql.insert_audit, audit, write=True, queue_timeout=5)
    except Exception as exc:  # the answer is sent; the log keeps what the trail lost
        log.warning(
            "audit entry not written (%s): %s %s by %s from %s -> %d",
            type(exc).__name__,
            audit.action,
            audit.target,
            audit.who,
            audit.peer,
            audit.outcome,
        )


def _headers(scope: Scope) -> tuple[str | None, str | None, str | None, str | None]:
    """authorization, cookie, origin, host (the first of each)."""
    found: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name in (b"authorization", b"cookie", b"origin", b"host") and name not in found:
            found[name] = value.decode("latin-1")
    get = found.get
    return get(b"authorization"), get(b"cookie"), get(b"origin"), get(b"host")


def _cookie(header: str) -> str | None:
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value
    return None


class Guard:
    def __init__(self, app: ASGIApp, cors_origins: tuple[str, ...] = ()) -> None:
        self.app = app
        self.cors_origins = frozenset(o.lower() for o in cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        app = scope["app"]
        keys: Keys = app.state.keys
        store: Store = app.state.store
        first = first_match(app.router.routes, scope)
        found = None if first is None else endpoint_of(first[0], first[2], scope)
        endpoint, child = found if found is not None else (None, {})
        needed = role_of(endpoint) if endpoint is not None else Role.VIEWER
        peer = peer_of(scope)
        refuse = _Refusal(scope, receive, send, store, peer)
        caller: Caller | None = None
        if needed is not Role.PUBLIC:
            caller = await self._admit(scope, keys, needed, peer, refuse)
            if caller is None:
                return
            scope[CALLER] = caller

        declared = audit_of(endpoint) if endpoint is not None else None
        note: AuditNote | None = None
        if declared is not None:
            params = child.get("path_params", {})
            target = params.get(declared.target) if declared.target else None
            note = AuditNote(declared.action, None if target is None else str(target))
            scope[NOTE] = note
        if caller is not None and is_limited(endpoint):
            # Per credential; with authentication off, per peer address.
            retry = keys.starts.take(caller.fingerprint or f"peer:{peer}")
            if retry:
                if note is not None:
                    await record(store, entry(caller, peer, note.action, note.target, 429))
                await refuse.rate_limited(retry, "too many starts and cancels; slow down")
                return
        if first is not None and first[1] is Match.FULL:
            scope[MATCHED] = (first[0], first[2])
        if note is None:
            await self.app(scope, receive, send)
        else:
            await self._audited(scope, receive, send, store, peer, note)

    async def _admit(
        self, scope: Scope, keys: Keys, needed: Role, peer: str | None, refuse: _Refusal
    ) -> Caller | None:
        """The caller, if it may; else None, the refusal sent."""
        if not keys.enabled:
            return Caller(ANONYMOUS, "admin", "", peer)
        authorization, cookie, origin, host = _headers(scope)
        caller, by_cookie = self._authenticate(keys, authorization, cookie, peer, scope["path"])
        if caller is None:
            retry = keys.failures.take(f"peer:{peer}")
            if retry:  # not recorded: the trail's writes stay bounded
                await refuse.rate_limited(retry, "too many failed authentications")
            else:
                await refuse(401, "unauthorized", "a valid bearer token is required")
            return None
        if ROLES[caller.role] < needed:
            message = f"the {caller.role} role may not do this; it needs {needed.name.lower()}"
            await refuse(403, "forbidden", message, caller, "auth.forbidden")
            return None
        # A WebSocket's handshake is a GET, but what it opens reads on and on
        # with the cookie a browser sends from any page: the Origin is checked.
        unsafe = scope["type"] == "websocket" or scope["method"] not in SAFE_METHODS
        if by_cookie and unsafe and not self._same_origin(scope, origin, host):
            message = "a request made with the session cookie needs a matching Origin"
            await refuse(403, "csrf", message, caller, "auth.csrf")
            return None
        return caller

    async def _audited(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        store: Store,
        peer: str | None,
        note: AuditNote,
    ) -> None:
        """Run the route, recording the status it answered (unless it recorded itself)
        before the answer's last byte: a client that has its answer finds the entry."""
        status = 500
        written = False

        async def write() -> None:
            nonlocal written
            written = True
            if not note.recorded:
                caller = scope.get(CALLER)
                await record(store, entry(caller, peer, note.action, note.target, status))

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif not message.get("more_body", False) and not written:
                await write()
            await send(message)

        try:
            await self.app(scope, receive, capture)
        except Exception:
            if not written:
                status = 500
                await write()
            raise
        if not written:
            await write()

    @staticmethod
    def _authenticate(
        keys: Keys, authorization: str | None, cookie: str | None, peer: str | None, path: str
    ) -> tuple[Caller | None, bool]:
        """The caller, and whether it came by the session cookie."""
        if authorization is not None:  # a bad header is not made good by a cookie
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer":
                return None, False
            found = keys.book.check(token.strip())
            if found is None and path in keys.by_path:
                found = keys.by_path[path].check(token.strip())
            return (None if found is None else Caller.of(found, peer)), False
        session = _cookie(cookie) if cookie is not None else None
        if session:
            found = keys.sessions.check(session)
            return (None if found is None else Caller.of(found, peer)), True
        return None, False

    def _same_origin(self, scope: Scope, origin: str | None, host: str | None) -> bool:
        if not origin or not host:
            return False
        origin = origin.lower()
        # A WebSocket's scope says ws or wss; its page's Origin says http or https.
        scheme = {"ws": "http", "wss": "https"}.get(scope["scheme"], scope["scheme"])
        return origin == f"{scheme}://{host}".lower() or origin in self.cors_origins


class _Refusal:
    """Answer a refused request in the error envelope, and record it."""

    def __init__(
        self, scope: Scope, receive: Receive, send: Send, store: Store, peer: str | None
    ) -> None:
        self.scope, self.receive, self.send = scope, receive, send
        self.store, self.peer = store, peer

    async def __call__(
        self,
        status: int,
        code: str,
        message: str,
        caller: Caller | None = None,
        action: str = "auth.failed",
    ) -> None:
        target = f"{self.scope.get('method', 'GET')} {self.scope['path']}"
        await record(self.store, entry(caller, self.peer, action, target[:300], status))
        response = error_response(status, code, message)
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="jobsup"'
        await response(self.scope, self.receive, self.send)

    async def rate_limited(self, retry_after: int, message: str) -> None:
        response = error_response(429, "rate_limited", message)
        response.headers["Retry-After"] = str(retry_after)
        await response(self.scope, self.receive, self.send)
