"""What each endpoint takes and answers: one declaration beside it, read for the OpenAPI document.

Every endpoint declares itself with ``@contract(...)``, next to its role::

    @needs(Role.VIEWER)
    @contract(query={"limit": Limit}, returns=list[RemovalRecord], errors=(404,))
    async def list_removals(request): ...

- ``body``: the msgspec type the handler decodes its JSON body into.
- ``query``: query parameter name -> type (``Annotated[int, Meta(ge=1)]`` for
  bounds); all optional. These are also the names the route takes
  (``supervisor.api.query.takes``): any other parameter is refused.
- ``path``: path parameter name -> type, where the route holds it to more
  than a non-empty id (``Annotated[str, Meta(pattern=...)]``).
- ``Deferred(fn)`` for ``body``, ``query`` or a query type known only once
  the job modules are loaded (the start body is the union of their configs).
- ``returns``: the success answer's type (status 200), or ``responses`` for
  several statuses (``{202: StartAnswer}``); ``Text(media_type)`` for an
  answer that is not JSON, ``NO_CONTENT`` for none (204).
- ``errors``: the statuses the endpoint itself may answer besides the ones
  every endpoint may (``COMMON_ERRORS``, plus 401/403 unless it is public and
  408/413/415 when it takes a body), all in the error envelope.
- ``headers``: response headers the success answer may carry.

The schemas come from the very types that decode requests and encode
answers (``msgspec.json.schema_components``), so the document cannot drift
from the code. An endpoint without a declaration is a test failure
(``undeclared``), never a silent gap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from supervisor.api.query import takes

F = TypeVar("F", bound=Callable[..., Any])

_ATTRIBUTE = "__jobsup_contract__"

# Answers any endpoint may give: the edge refuses a bad path or query (400),
# the database is unavailable or busy, the server is stopping (503).
COMMON_ERRORS = (400, 503)
# With a credential check in front: no or an unknown credential, a role that may not.
AUTH_ERRORS = (401, 403, 429)  # 429: failed authentications past the per-address limit
# With a body: too slow, too large, not JSON.
BODY_ERRORS = (408, 413, 415)


@dataclass(frozen=True)
class Text:
    """An answer that is not JSON (``text/plain`` and the like)."""

    media_type: str
    description: str = ""


NO_CONTENT = Text("", "No content")


@dataclass(frozen=True)
class Deferred:
    """Known only once the job modules are loaded (the start body, the label filters)."""

    resolve: Callable[[], Any]


@dataclass(frozen=True)
class Contract:
    summary: str
    body: Any = None
    query: Any = field(default_factory=dict)  # Mapping[str, type] or Deferred
    responses: Mapping[int, Any] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    path: Mapping[str, Any] = field(default_factory=dict)


def contract(
    *,
    body: Any = None,
    query: Mapping[str, Any] | Deferred | None = None,
    returns: Any = None,
    responses: Mapping[int, Any] | None = None,
    errors: Iterable[int] = (),
    headers: Mapping[str, str] | None = None,
    path: Mapping[str, Any] | None = None,
) -> Callable[[F], F]:
    """Declare what the endpoint takes and answers (see the module's docstring)."""
    answers = dict(responses or {})
    if returns is not None:
        answers[200] = returns
    if not answers:
        raise ValueError("a contract needs returns= or responses=")

    def mark(endpoint: F) -> F:
        doc = (endpoint.__doc__ or endpoint.__name__.replace("_", " ")).strip()
        summary = doc.splitlines()[0]
        params = query if isinstance(query, Deferred) else dict(query or {})
        declared = Contract(
            summary, body, params, answers, tuple(errors), dict(headers or {}), dict(path or {})
        )
        setattr(endpoint, _ATTRIBUTE, declared)
        if isinstance(params, Deferred):
            return takes(more=lambda: _now(params).keys())(endpoint)
        return takes(*params)(endpoint)

    return mark


def contract_of(endpoint: Callable[..., Any]) -> Contract | None:
    """The endpoint's declaration, with what was deferred resolved now."""
    declared: Contract | None = getattr(endpoint, _ATTRIBUTE, None)
    if declared is None:
        return None
    query = _now(declared.query)
    return Contract(
        declared.summary,
        _now(declared.body),
        {name: _now(t) for name, t in query.items()},
        declared.responses,
        declared.errors,
        declared.headers,
        declared.path,
    )


def _now(value: Any) -> Any:
    return value.resolve() if isinstance(value, Deferred) else value


def schema_types(declared: Contract) -> list[Any]:
    """Every msgspec type the declaration names, for ``schema_components``."""
    types = list(declared.path.values())
    types += [] if declared.body is None else [declared.body]
    types += list(declared.query.values())
    types += [t for _, t in sorted(declared.responses.items()) if not isinstance(t, Text)]
    return types


def encode_schema(types: list[Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    return msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
