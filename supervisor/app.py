"""create_app(settings): routes, error handlers, lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from supervisor.api import groups, jobs
from supervisor.api.common import json
from supervisor.errors import ApiError, error_response, handle_api_error, handle_unexpected
from supervisor.runtime import Runtime
from supervisor.settings import Settings
from workers.db import DatabaseUnavailable


async def healthz(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    return json(
        {
            "status": "ok",
            "instance": runtime.settings.instance_id,
            "runningJobs": runtime.scheduler.running(),
            "jobsInMemory": len(runtime.table),
            "databaseAvailable": runtime.store.available,
        }
    )


async def readyz(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    if not runtime.scheduler.accepting:
        return error_response(503, "shutting_down", "the server is shutting down")
    if not runtime.store.available:
        return error_response(503, "database_unavailable", "the database is unavailable")
    return json({"status": "ready"})


async def handle_unavailable(request: Request, exc: Exception) -> Response:
    return error_response(503, "database_unavailable", "the database is unavailable; retry shortly")


async def handle_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), exc.detail)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings if settings is not None else Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime = await Runtime.start(settings)
        app.state.runtime = runtime
        app.state.jobs = runtime.service
        app.state.store = runtime.store
        try:
            yield
        finally:
            await runtime.stop()

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            *jobs.routes,
            *groups.routes,
        ],
        exception_handlers={
            ApiError: handle_api_error,
            HTTPException: handle_http,
            DatabaseUnavailable: handle_unavailable,
            Exception: handle_unexpected,
        },
        lifespan=lifespan,
    )
