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

from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from supervisor.settings import Settings


class Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Start no job from this instant: the platform is stopping every
        # process, and a child that exits now must not free a slot for a
        # pending job before the lifespan's shutdown begins. Only a flag.
        runtime = getattr(self._app.state, "runtime", None)
        if runtime is not None:
            runtime.scheduler.stop_admissions()
        super().handle_exit(sig, frame)

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()  # handled: do not re-raise


def make_server(app: Starlette, settings: Settings, log_level: str | None = None) -> Server:
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level or settings.log_level,
        access_log=settings.access_log,
        # Open streams must not hold a shutdown hostage: jobs get their own grace.
        timeout_graceful_shutdown=5,
    )
    return Server(config, app)
