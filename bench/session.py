"""What the figures share: servers, baselines and counts, started once, stopped at the end.

A resource starts the first time a figure asks for it. After each figure the
runner releases what no later figure needs, so idle RQ or Celery workers do
not run beside the figures that do not use them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench.forkserver import BareForkserver
from bench.redis_baselines import CeleryBaseline, RqBaseline, Unavailable
from bench.servers import BareServer, JobsupServer

log = logging.getLogger("bench")

# Each jobsup server the figures use, with its settings.
SERVERS: dict[str, dict[str, str]] = {
    "jobsup": {"JOBSUP_MAX_CONCURRENT_JOBS": "2"},  # start, cancel, throughput
    "jobsup-submit": {"JOBSUP_MAX_CONCURRENT_JOBS": "2"},  # submit (its slots held)
    "jobsup-api": {"JOBSUP_MAX_CONCURRENT_JOBS": "8"},  # api, progress
    "jobsup-bulk": {"JOBSUP_MAX_CONCURRENT_JOBS": "4"},  # memory, scale (list)
    "jobsup-order": {"JOBSUP_MAX_CONCURRENT_JOBS": "1"},  # scale (admission order)
    "jobsup-results": {},  # results (memory with large results)
    "jobsup-open": {"JOBSUP_MAX_CONCURRENT_JOBS": "8", "JOBSUP_AUTH": "off"},  # auth on vs off
    "jobsup-resume": {},  # resume (restarted between batches)
    "jobsup-events": {"JOBSUP_MAX_CONCURRENT_JOBS": "8"},  # events (SSE subscribers)
    "jobsup-webhooks": {"JOBSUP_WEBHOOK_SECRET": "bench-webhook-secret"},  # webhooks
}

# Served by bench.traced, which logs the event loop's pauses (the API figures).
TRACED = frozenset({"jobsup-api"})


class Session:
    def __init__(self, workdir: Path, quick: bool, redis: bool = True) -> None:
        self.workdir = workdir
        self.quick = quick
        self.redis = redis
        self._open: dict[str, Any] = {}
        self._failed: dict[str, str] = {}
        self._shared: dict[str, Any] = {}

    def count(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def shared(self, name: str, make: Callable[[], Any]) -> Any:
        """A measurement that several figures read, made once."""
        if name not in self._shared:
            self._shared[name] = make()
        return self._shared[name]

    def _get(self, name: str, make: Callable[[], Any]) -> Any:
        if name in self._failed:
            raise Unavailable(self._failed[name])
        if name not in self._open:
            log.info("starting %s", name)
            try:
                self._open[name] = make()
            except Unavailable as exc:
                self._failed[name] = str(exc)
                raise
        return self._open[name]

    def jobsup(self, name: str = "jobsup") -> JobsupServer:
        def make() -> JobsupServer:
            server = JobsupServer(self.workdir, name, name in TRACED, **SERVERS[name])
            server.start()
            return server

        server: JobsupServer = self._get(name, make)
        return server

    def bare_server(self) -> BareServer:
        def make() -> BareServer:
            server = BareServer(self.workdir)
            server.start()
            return server

        server: BareServer = self._get("bare", make)
        return server

    def forkserver(self) -> BareForkserver:
        fs: BareForkserver = self._get("forkserver", BareForkserver)
        return fs

    def rq(self) -> RqBaseline:
        if not self.redis:
            raise Unavailable("skipped: --no-redis")
        rq: RqBaseline = self._get("rq", lambda: RqBaseline(self.workdir))
        return rq

    def celery(self) -> CeleryBaseline:
        if not self.redis:
            raise Unavailable("skipped: --no-redis")
        celery: CeleryBaseline = self._get("celery", lambda: CeleryBaseline(self.workdir))
        return celery

    def release(self, keep: Iterable[str] = ()) -> None:
        """Stop every open resource not named in ``keep``."""
        for name in [n for n in self._open if n not in set(keep)]:
            resource = self._open.pop(name)
            log.info("stopping %s", name)
            for method in ("stop", "close"):
                if hasattr(resource, method):
                    getattr(resource, method)()
