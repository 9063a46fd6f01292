"""The OpenAPI 3.1 document, built from the app's routes and their declarations.

Each endpoint's ``@contract`` (``supervisor.api.contract``) and role
(``supervisor.api.access``) are read off the routes the app really serves:
a route is in the document because it is in the app. ``undeclared`` names
the routes that would be missing from it.
"""

from __future__ import annotations

import json as json_module
from collections.abc import Iterable
from typing import Any

from starlette.convertors import FloatConvertor, IntegerConvertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from supervisor.api.access import Role, needs, role_of
from supervisor.api.common import json
from supervisor.api.contract import (
    AUTH_ERRORS,
    BODY_ERRORS,
    COMMON_ERRORS,
    Contract,
    Text,
    contract,
    contract_of,
    encode_schema,
    schema_types,
)
from supervisor.api.errors import ErrorEnvelope
from workers.db import MAX_ID_LENGTH

TITLE = "jobsup"
VERSION = "1"
REQUEST_ID = "X-Request-ID"

_REASONS = {
    101: "Switching Protocols: a WebSocket follows",
    200: "OK",
    202: "Accepted",
    204: "Done; no content",
    400: "Bad request: the field named in the error is wrong",
    401: "No credential, or an unknown one",
    403: "The credential's role may not do this",
    404: "Not found",
    408: "The body did not arrive in time",
    409: "Conflict",
    413: "Body too large",
    415: "The body is not application/json",
    429: "Too many requests (or a full queue): retry later",
    503: "Unavailable (database, shutdown): retry later",
}


def operations(routes: Iterable[BaseRoute]) -> list[tuple[str, str, Route]]:
    """(path, method, route) for every HTTP operation the app serves."""
    found = []
    for route in routes:
        if isinstance(route, WebSocketRoute):  # its handshake is a GET, answered 101
            found.append((route.path, "GET", route))  # type: ignore[arg-type]
        elif isinstance(route, Route) and route.methods is not None:
            for method in sorted(route.methods - {"HEAD"}):
                found.append((route.path, method, route))
    return found


def undeclared(routes: Iterable[BaseRoute]) -> list[str]:
    """``METHOD path`` of every operation whose endpoint has no ``@contract``."""
    return [f"{m} {p}" for p, m, r in operations(routes) if contract_of(r.endpoint) is None]


def build(routes: Iterable[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes`` (all declared; see ``undeclared``)."""
    ops = operations(routes)
    missing = undeclared(r for _, _, r in ops)
    if missing:
        raise ValueError(f"routes without a @contract: {', '.join(missing)}")
    declared = [(p, m, r, contract_of(r.endpoint)) for p, m, r in ops]
    types: list[Any] = [ErrorEnvelope]
    for *_, c in declared:
        types += schema_types(c)  # type: ignore[arg-type]
    schemas, components = encode_schema(types)
    by_type = iter(schemas)
    error_schema = next(by_type)
    paths: dict[str, dict[str, Any]] = {}
    names = [r.endpoint.__name__ for _, _, r, _ in declared]
    for path, method, route, c in declared:
        assert c is not None
        name = route.endpoint.__name__
        op_id = name if names.count(name) == 1 else f"{route.endpoint.__module__}.{name}"
        op = _operation(route, c, op_id, by_type, error_schema)
        paths.setdefault(path, {})[method.lower()] = op
    for schema in [*components.values(), *_parameter_schemas(paths)]:
        _no_nul(schema)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": VERSION,
            "description": "A job supervisor: one child process per job, live progress, cancel.",
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


# Neither database stores a NUL, so no string the API takes or gives may hold
# one (the edge and ``check_body`` refuse it): said once, on every string.
NO_NUL = "^[^\\x00]*$"


def _parameter_schemas(paths: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        p["schema"]
        for ops in paths.values()
        for op in ops.values()
        for p in op.get("parameters", [])
    ]


def _no_nul(schema: Any) -> None:
    """Add ``pattern: NO_NUL`` to every string schema within ``schema`` (in place)."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if node.get("type") == "string" and "pattern" not in node and "format" not in node:
                node["pattern"] = NO_NUL
            stack.extend(v for k, v in node.items() if k not in ("enum", "const", "default"))


def text(routes: Iterable[BaseRoute]) -> str:
    """The document as ``jobsup openapi`` prints it (and docs/openapi.json holds it)."""
    return json_module.dumps(build(routes), indent=2, ensure_ascii=False) + "\n"


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _headers(extra: dict[str, str]) -> dict[str, Any]:
    headers: dict[str, Any] = {
        REQUEST_ID: {
            "description": "The request's id: the client's own when it sent a sane one",
            "required": True,
            "schema": {"type": "string"},
        }
    }
    for name, description in extra.items():
        headers[name] = {"description": description, "schema": {"type": "string"}}
    return headers


def _path_parameter(name: str, convertor: Any, declared: dict[str, Any] | None) -> dict[str, Any]:
    if declared is not None:
        schema = declared
    elif isinstance(convertor, IntegerConvertor):
        schema: dict[str, Any] = {"type": "integer", "minimum": 0}
    elif isinstance(convertor, FloatConvertor):
        schema = {"type": "number", "minimum": 0}
    else:
        schema = {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH}
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _operation(
    route: Route, c: Contract, op_id: str, schemas: Any, error: dict[str, Any]
) -> dict[str, Any]:
    role = role_of(route.endpoint)
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": c.summary,
        "x-jobsup-role": role.name.lower(),
    }
    declared_path = {name: next(schemas) for name in c.path}
    params = [
        _path_parameter(n, conv, declared_path.get(n)) for n, conv in route.param_convertors.items()
    ]
    body_schema = next(schemas) if c.body is not None else None
    for name in c.query:
        params.append({"name": name, "in": "query", "required": False, "schema": next(schemas)})
    if params:
        op["parameters"] = params
    if body_schema is not None:
        op["requestBody"] = {"required": True, "content": _json(body_schema)}
    responses: dict[str, Any] = {}
    for status, answer in sorted(c.responses.items()):
        response: dict[str, Any] = {"description": _REASONS.get(status, "OK")}
        if status != 101:  # a WebSocket's handshake answer carries no request id
            response["headers"] = _headers(dict(c.headers))
        if not isinstance(answer, Text):
            response["content"] = _json(next(schemas))
        elif answer.media_type:
            response["content"] = {answer.media_type: {"schema": {"type": "string"}}}
        responses[str(status)] = response
    errors = set(COMMON_ERRORS) | set(c.errors)
    if role is not Role.PUBLIC:
        errors |= set(AUTH_ERRORS)
        op["security"] = [{"bearer": []}]
    else:
        op["security"] = []
    if c.body is not None:
        errors |= set(BODY_ERRORS)
    for status in sorted(errors):
        responses[str(status)] = {
            "description": _REASONS.get(status, "Error"),
            "headers": _headers({}),
            "content": _json(error),
        }
    op["responses"] = responses
    return op


@needs(Role.VIEWER)
@contract(returns=dict[str, Any])
async def openapi(request: Request) -> Response:
    """This document: every route, its parameters, bodies, answers and errors."""
    state = request.app.state
    if getattr(state, "openapi", None) is None:
        state.openapi = build(request.app.router.routes)
    return json(state.openapi)
