"""Query parameters: which ones each endpoint takes, declared once, and how they read.

Every endpoint that takes query parameters declares their names with
``@takes("limit", "before")``, as it declares its role with ``@needs``; an
endpoint that declares nothing takes none. ``checked(routes)`` makes each
route refuse, before its endpoint runs, a parameter it does not take or one
given twice (400 ``invalid_field`` naming it): a misspelt ``limit`` would otherwise be ignored
in silence. ``accepted(endpoint)`` is the declared set, for whoever documents
the routes.

The readers give every route the same answers: integers within a range,
booleans spelt exactly ``true`` or ``false``, times in ISO 8601 with a zone.
"""

from __future__ import annotations

import binascii
import re
from base64 import b64decode, b64encode
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar

from starlette.requests import HTTPConnection, Request
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from supervisor.api.errors import ApiError
from supervisor.state import JobStatus
from supervisor.store.jobs import label_of
from workers import registry
from workers.times import in_range

F = TypeVar("F", bound=Callable[..., Any])

_ATTRIBUTE = "__jobsup_query__"
# A "+" left unescaped in a query string arrives as a space: "…T09:00:00 02:00".
# A space before a trailing offset can only have been that "+", so it is read
# as one; any other space gets the hint to escape it.
_INTEGER = re.compile(r"-?[0-9]+")
_PLUS_AS_SPACE = re.compile(r" (\d\d(?::?\d\d)?)$")
PLUS_HINT = "a '+' in a query string must be sent as %2B (a bare '+' reads as a space)"
# A list's cursor is the id of its last item: ids are at most this long.
MAX_CURSOR_CHARS = 256


class _Declared:
    """The names an endpoint takes; ``more`` adds names known only once job types load."""

    def __init__(self, names: Iterable[str], more: Callable[[], Iterable[str]] | None) -> None:
        self.names = frozenset(names)
        self.more = more

    def all(self) -> frozenset[str]:
        return self.names if self.more is None else self.names | frozenset(self.more())


def takes(*names: str, more: Callable[[], Iterable[str]] | None = None) -> Callable[[F], F]:
    declared = _Declared(names, more)

    def mark(endpoint: F) -> F:
        setattr(endpoint, _ATTRIBUTE, declared)
        return endpoint

    return mark


def accepted(endpoint: Callable[..., Any]) -> frozenset[str]:
    declared: _Declared | None = getattr(endpoint, _ATTRIBUTE, None)
    return frozenset() if declared is None else declared.all()


def refuse_unknown(request: HTTPConnection, names: frozenset[str]) -> None:
    """Refuse a parameter the route does not take, and one given twice: every
    reader takes one value, and which of two it took would be a guess."""
    params = request.query_params
    unknown = set(params) - names
    if unknown:
        name = sorted(unknown)[0]
        takes_ = ", ".join(sorted(names)) or "none"
        message = f"{name}: unknown query parameter (this route takes: {takes_})"
        raise ApiError(400, "invalid_field", message, name)
    repeated = sorted(name for name in params if len(params.getlist(name)) > 1)
    if repeated:
        raise _invalid(repeated[0], "given more than once")


class _Checked:
    """A route's app behind the check of its endpoint's declared parameters."""

    def __init__(self, app: ASGIApp, endpoint: Callable[..., Any]) -> None:
        self.app = app
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("query_string"):
            refuse_unknown(HTTPConnection(scope), accepted(self.endpoint))
        await self.app(scope, receive, send)


def checked(routes: Iterable[BaseRoute]) -> list[BaseRoute]:
    """The routes, each refusing the query parameters its endpoint does not declare."""
    out = list(routes)
    for route in out:
        if isinstance(route, Route | WebSocketRoute) and not isinstance(route.app, _Checked):
            route.app = _Checked(route.app, route.endpoint)
    return out


def _invalid(name: str, problem: str) -> ApiError:
    return ApiError(400, "invalid_field", f"{name}: {problem}", name)


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    # ASCII digits only: int() also reads "+5", " 5", "1_0" and other scripts' digits.
    if _INTEGER.fullmatch(raw) is None:
        raise _invalid(name, "must be an integer")
    # Past 20 digits no bound fits, and int() refuses over 4300 of them.
    value = int(raw) if len(raw) <= 20 else (high + 1 if raw[0] != "-" else low - 1)
    if not low <= value <= high:
        raise _invalid(name, f"must be between {low} and {high}")
    return value


def query_bool(request: Request, name: str, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if raw not in ("true", "false"):
        raise _invalid(name, "must be true or false")
    return raw == "true"


def query_time(request: Request, name: str) -> datetime | None:
    """An ISO 8601 time with a zone (``Z`` or ``+hh:mm``, which must be sent as ``%2B``)."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(_PLUS_AS_SPACE.sub(r"+\1", raw).replace("Z", "+00:00"))
    except ValueError:
        hint = f"; {PLUS_HINT}" if " " in raw else ""
        raise _invalid(name, f"must be an ISO 8601 time{hint}") from None
    if value.tzinfo is None:
        raise _invalid(name, "needs a time zone (e.g. Z)")
    if not in_range(value):
        raise _invalid(name, "outside years 1 to 9999 in UTC")
    return value


def encode_cursor(cursor: str) -> str:
    """A page cursor (an id, which may hold any character) as unpadded base64url,
    which fits a header and a query string unescaped."""
    return b64encode(cursor.encode(), b"-_").decode().rstrip("=")


def query_cursor(request: Request, name: str = "before") -> str | None:
    """The cursor ``encode_cursor`` gave, decoded; anything no list can have given is a 400.

    That is text that is not base64url (a non-ASCII character included), bytes that
    are not UTF-8, and text holding NUL or longer than an id: no id is either, and
    PostgreSQL cannot compare with a NUL.
    """
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        value = b64decode(raw + "=" * (-len(raw) % 4), b"-_", validate=True).decode()
    except (binascii.Error, ValueError):  # ValueError: non-ASCII input, or not UTF-8
        value = None
    if value is None or "\x00" in value or len(value) > MAX_CURSOR_CHARS:
        raise _invalid(name, "not a cursor from X-Next-Before")
    return value


def query_status(request: Request) -> JobStatus | None:
    """``?status=``: one of the job statuses, or absent."""
    raw = request.query_params.get("status")
    try:
        return JobStatus(raw) if raw is not None else None
    except ValueError:
        allowed = ", ".join(s.value for s in JobStatus)
        raise ApiError(
            400, "invalid_field", f"status: must be one of {allowed}", "status"
        ) from None


def query_label(request: Request) -> str | None:
    """The job types' label filter (``?groupWaId=``): one at a time, as jobs carry one."""
    for name in sorted(registry.label_names() & set(request.query_params)):
        return label_of(name, request.query_params[name])
    return None
