"""create_app(settings): routes, the edge middleware, error handlers, lifespan.

Middleware, outermost first: the edge (paths, queries, headers on every
answer), the Host check, CORS (only when origins are named), the access
guard; then the router.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from supervisor import keys
from supervisor.api import (
    audit,
    chains,
    dashboard,
    events,
    jobs,
    notifications,
    openapi,
    schedules,
    session,
    websocket,
)
from supervisor.api import metrics as metrics_api
from supervisor.api.access import public
from supervisor.api.common import json
from supervisor.api.contract import contract
from supervisor.api.edge import BodyTimeout, Edge
from supervisor.api.errors import (
    ApiError,
    error_response,
    handle_api_error,
    handle_domain_error,
    handle_unexpected,
)
from supervisor.api.guard import Guard
from supervisor.api.hosts import TrustedHosts
from supervisor.api.matching import reuse_matches
from supervisor.api.observe import Observe
from supervisor.api.query import checked
from supervisor.errors import JobsupError
from supervisor.metrics import Metrics
from supervisor.runtime import Runtime
from supervisor.settings import Settings
from supervisor.store import DatabaseBusy
from workers import registry
from workers.db import DatabaseUnavailable

log = logging.getLogger("jobsup.api")


class Health(msgspec.Struct, rename="camel"):
    status: str
    instance: str
    running_jobs: int
    jobs_in_memory: int
    database_available: bool
    auth: str  # "on", or "off" when JOBSUP_AUTH=off runs the server open


class Ready(msgspec.Struct):
    status: str


@public
@contract(returns=Health)
async def healthz(request: Request) -> Response:
    """The process is up: its instance, running jobs, jobs in memory, the database's state."""
    runtime: Runtime = request.app.state.runtime
    return json(
        Health(
            "ok",
            runtime.settings.instance_id,
            runtime.scheduler.running(),
            len(runtime.table),
            runtime.store.available,
            "on" if runtime.settings.auth else "off",
        )
    )


@public
@contract(returns=Ready)
async def readyz(request: Request) -> Response:
    """Ready for work: accepting jobs and the database available (503 otherwise)."""
    runtime: Runtime = request.app.state.runtime
    if not runtime.scheduler.accepting:
        return error_response(503, "shutting_down", "the server is shutting down")
    if not runtime.store.available:
        return error_response(503, "database_unavailable", "the database is unavailable")
    return json(Ready("ready"))


async def handle_unavailable(request: Request, exc: Exception) -> Response:
    return error_response(503, "database_unavailable", "the database is unavailable; retry shortly")


async def handle_busy(request: Request, exc: Exception) -> Response:
    response = error_response(503, "busy", "the database is busy; retry in a moment")
    response.headers["Retry-After"] = "1"
    return response


async def handle_body_timeout(request: Request, exc: Exception) -> Response:
    log.info("%s %s: body not received in time; closing", request.method, request.url.path)
    response = error_response(408, "request_timeout", "the request body did not arrive in time")
    response.headers["Connection"] = "close"
    return response


async def handle_disconnect(request: Request, exc: Exception) -> Response:
    # Nobody is left to read the answer; not an error of ours.
    log.info("%s %s: client went away mid-request", request.method, request.url.path)
    return Response(status_code=400)


def _allowed(request: Request) -> str:
    """Every method the path takes, across all the routes that match it."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if (
            isinstance(route, Route)
            and route.methods
            and route.path_regex.match(request.scope["path"])
        ):
            methods |= route.methods
    return ", ".join(sorted(methods))


async def handle_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    response = error_response(exc.status_code, codes.get(exc.status_code, "http_error"), exc.detail)
    if exc.status_code == 405:
        response.headers["Allow"] = _allowed(request)
    return response


def _not_found(http: ASGIApp) -> ASGIApp:
    """The router's default: Starlette's for HTTP; for a WebSocket handshake, the envelope."""

    async def default(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await websocket.not_found(scope, receive, send)
        else:
            await http(scope, receive, send)

    return default


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings if settings is not None else Settings.from_env()
    # Job modules bring their own routes (/admin/groups, say).
    registry.load(settings.job_modules)
    metrics = Metrics()  # this app's own registry

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime = await Runtime.start(settings)
        try:
            app.state.keys = await keys.load(settings, runtime.store)
        except BaseException:
            await runtime.stop()
            raise
        app.state.runtime = runtime
        app.state.jobs = runtime.service
        app.state.schedules = runtime.schedules
        app.state.store = runtime.store
        metrics.attach(runtime)
        try:
            yield
        finally:
            await runtime.stop()
            metrics.detach()

    middleware = [
        Middleware(Observe, on_done=metrics.on_request),
        Middleware(Edge, body_timeout_s=settings.body_timeout_s),
        Middleware(TrustedHosts, allowed_hosts=settings.host_names()),
    ]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "PUT", "DELETE"],
                allow_headers=["authorization", "content-type"],
                expose_headers=["Retry-After", "X-Next-Before", "X-Next-Offset"],
                max_age=600,
            )
        )
    middleware.append(Middleware(Guard, cors_origins=settings.cors_origins))
    app = Starlette(
        # Each route refuses the query parameters its endpoint does not declare.
        routes=checked(
            [
                Route("/healthz", healthz, methods=["GET"]),
                Route("/readyz", readyz, methods=["GET"]),
                Route("/openapi.json", openapi.openapi, methods=["GET"]),
                Route("/metrics", metrics_api.metrics, methods=["GET"]),
                *events.routes,
                *websocket.routes,
                *jobs.routes,
                *chains.routes,
                *session.routes,
                *audit.routes,
                *notifications.routes,
                *schedules.routes,
                *registry.routes(),
                *dashboard.routes,
            ]
        ),
        middleware=middleware,
        exception_handlers={
            ApiError: handle_api_error,
            JobsupError: handle_domain_error,
            HTTPException: handle_http,
            DatabaseUnavailable: handle_unavailable,
            DatabaseBusy: handle_busy,
            BodyTimeout: handle_body_timeout,
            ClientDisconnect: handle_disconnect,
            Exception: handle_unexpected,
        },
        lifespan=lifespan,
    )
    app.state.max_body_bytes = settings.max_body_bytes
    app.router.default = _not_found(app.router.default)
    reuse_matches(app.router)
    app.state.metrics = metrics
    return app
