"""The uvicorn server that runs jobsup.

uvicorn owns SIGINT/SIGTERM in the front process and shuts down through the
lifespan (where running jobs are cancelled). After a graceful shutdown it
re-raises the signal, so the process would end "killed by SIGTERM", which
platforms report as a crash; jobsup exits 0 instead once its shutdown is
done (final states saved, or given up at the grace deadline if the database
is down: the next start rescues those jobs). From the signal on, the
instance starts no job.
"""

from __future__ import annotations

import gc
import logging
import resource
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.config import LOGGING_CONFIG

from supervisor.connection import Limits, protocol_for
from supervisor.settings import Settings, SettingsError
from supervisor.startup import (
    EXIT_FAILED,
    EXIT_IN_USE,
    StartupFailed,
    database_failure,
    is_database_error,
    port_failure,
)

log = logging.getLogger("jobsup.server")

# Descriptors kept out of the connections' reach: the process's own (stdio,
# logs, the listening socket, the event loop, database connections, the
# forkserver), and per job slot (and the spare child) its pipes, sentinel and
# pidfd, with room for a launch's short-lived extra pipe ends.
BASE_FDS = 64
FDS_PER_JOB = 8
# What a WebSocket client may send in one message: the streams read none but a close.
WS_MAX_MESSAGE_BYTES = 64 * 1024


class StartupErrors:
    """ASGI wrapper: keeps the lifespan's startup error, and its traceback out of the log.

    A startup that fails for a reason a user can fix (an instance id in use,
    a database gone) ends with one line and an exit code (``StartupFailed``),
    not with the traceback Starlette hands uvicorn to print.
    """

    def __init__(self, app: Starlette, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.failure: StartupFailed | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def quiet(message: Any) -> None:
            # Starlette sends this from inside its ``except``: the error is at hand.
            if message["type"] == "lifespan.startup.failed":
                self.failure = self._classify(sys.exc_info()[1])
                if self.failure.code != EXIT_FAILED:  # a bug keeps its traceback
                    message = {**message, "message": ""}
            elif message["type"] == "lifespan.startup.complete":
                freeze_startup_objects()  # before the port opens: nobody waits on this pass
            await send(message)

        await self.app(scope, receive, quiet)

    def _classify(self, exc: BaseException | None) -> StartupFailed:
        if isinstance(exc, SettingsError):
            return StartupFailed(EXIT_IN_USE, str(exc))
        if is_database_error(exc):
            return database_failure(self.settings.database_url, exc)
        return StartupFailed(EXIT_FAILED, f"startup failed: {type(exc).__name__}: {exc}")


class Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: Starlette, errors: StartupErrors) -> None:
        super().__init__(config)
        self._app = app
        self._errors = errors

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's startup, its ``sys.exit(3)`` turned into a ``StartupFailed`` that says why."""
        try:
            await super().startup(sockets)
        except SystemExit as exc:
            failure = self._errors.failure
            if failure is None:  # the lifespan went well: the listening socket failed
                cause = exc.__context__ or OSError("address unavailable")
                failure = port_failure(self.config.host, self.config.port, cause)
            raise failure from None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Start no job from this instant: the platform is stopping every
        # process, and a child that exits now must not free a slot for a
        # pending job before the lifespan's shutdown begins. Only a flag.
        runtime = getattr(self._app.state, "runtime", None)
        if runtime is not None:
            runtime.scheduler.stop_admissions()
            # Open event streams end now: uvicorn waits for every open
            # response before the lifespan's shutdown (which stops the jobs).
            runtime.end_streams_soon()
        super().handle_exit(sig, frame)

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()  # handled: do not re-raise


def freeze_startup_objects() -> None:
    """Keep what startup made (modules, routes, settings: ~60,000 objects) out of the
    garbage collector's full passes.

    Those live as long as the process, yet a full pass walks them all, and
    under load one comes every second or so: a request's objects that live
    through two young collections count towards the next one, even once
    freed. Each pass stopped the event loop for 20-50 ms on a busy 2-core
    machine, the API's p99 tail. Frozen, a full pass walks only what came
    since. Startup's cyclic garbage goes first, so none of it is kept.
    """
    gc.collect()
    gc.freeze()


def raise_file_limit() -> int:
    """Raise the soft limit on open files to the hard one; returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:  # a platform that refuses: live with it
            log.warning("could not raise the open-file limit to %d: %s", hard, exc)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def limits_for(settings: Settings, file_limit: int) -> Limits:
    """Connections get what the file limit leaves once every job slot has its share."""
    fd_cap = file_limit - BASE_FDS - FDS_PER_JOB * (settings.max_concurrent_jobs + 1)
    if fd_cap < 1:
        raise SystemExit(
            f"jobsup: the open-file limit ({file_limit}) is too low for "
            f"JOBSUP_MAX_CONCURRENT_JOBS={settings.max_concurrent_jobs}"
        )
    if settings.max_connections > fd_cap:
        log.warning(
            "JOBSUP_MAX_CONNECTIONS=%d does not fit the open-file limit (%d): "
            "connections past %d are closed unanswered",
            settings.max_connections,
            file_limit,
            fd_cap,
        )
    return Limits(
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        max_connections=min(settings.max_connections, fd_cap),
        fd_cap=fd_cap,
    )


def make_server(
    app: Starlette,
    settings: Settings,
    log_level: str | None = None,
    log_config: dict[str, Any] | None = LOGGING_CONFIG,
) -> Server:
    """``log_config=None`` when the caller configured logging (``supervisor.logs``)."""
    limits = limits_for(settings, raise_file_limit())
    errors = StartupErrors(app, settings)
    config = uvicorn.Config(
        errors,
        host=settings.host,
        port=settings.port,
        log_level=log_level or settings.log_level,
        log_config=log_config,
        access_log=settings.access_log,
        # Open streams must not hold a shutdown hostage: jobs get their own grace.
        timeout_graceful_shutdown=5,
        http=protocol_for(limits),
        server_header=False,
        # The event stream's WebSocket routes (api/websocket.py): websockets'
        # sans-I/O protocol, whose send waits while the client's buffers are
        # full (flow control); small client messages; no compression (its
        # per-connection memory is not ours to give).
        ws="websockets-sansio",
        ws_max_size=WS_MAX_MESSAGE_BYTES,
        ws_per_message_deflate=False,
        # The peer and scheme from X-Forwarded-For and -Proto only behind a
        # proxy we were told to trust; else anyone could claim any address.
        proxy_headers=settings.trust_proxy,
        forwarded_allow_ips="*",
    )
    return Server(config, app, errors)
