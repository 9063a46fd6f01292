"""``jobsup worker``: an instance that claims and runs jobs and serves no API.

It is the same ``Runtime`` as ``jobsup serve`` (claims, heartbeats, rescue,
cancel requests through LISTEN/NOTIFY, schedules, graceful SIGTERM through
``supervisor.server.Server``), minus the API: its app answers ``/healthz``
and ``/readyz`` only, on ``JOBSUP_HEALTH_PORT`` (or ``PORT``), for the
platform's probes. Jobs reach it through the shared queue: a web instance
(``jobsup serve``, usually with ``JOBSUP_MAX_CONCURRENT_JOBS=0``) accepts
them, any worker claims them. So it needs PostgreSQL; ``check_database``
refuses SQLite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route

from supervisor.app import handle_http, healthz, readyz
from supervisor.runtime import Runtime
from supervisor.settings import Settings
from supervisor.startup import EXIT_USAGE, StartupFailed


def check_database(settings: Settings) -> None:
    """A worker shares its queue with web instances: that takes PostgreSQL."""
    if settings.database_url.startswith("sqlite:///"):
        raise StartupFailed(
            EXIT_USAGE,
            "jobsup worker needs PostgreSQL (DATABASE_URL=postgresql://...): a SQLite"
            " database serves one process, so run jobsup serve alone, which runs jobs itself",
        )
    if settings.max_concurrent_jobs == 0:
        raise StartupFailed(
            EXIT_USAGE, "JOBSUP_MAX_CONCURRENT_JOBS=0: a worker with no job slot would run nothing"
        )


def create_worker_app(settings: Settings) -> Starlette:
    """The worker's app: the runtime in its lifespan, the two probes as routes."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime = await Runtime.start(settings, role="worker")
        app.state.runtime = runtime
        try:
            yield
        finally:
            await runtime.stop()

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        lifespan=lifespan,
        # A probe sent to the wrong path or with the wrong method gets the
        # error envelope every jobsup answer has, not Starlette's plain text.
        exception_handlers={HTTPException: handle_http},
    )
