"""The spare child: one child forked ahead of need, so that a job starts without a fork.

It waits, blocked reading its empty spec pipe, until the scheduler gives it
a job (``take``). A new one is forked in the background (``refill``) on the
launcher thread, because the exchange with the forkserver blocks. A spare
that dies while it waits is seen at once on its sentinel: killed by SIGTERM
(its default action until it has a job), it means a stop is probably coming.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from concurrent.futures import Executor
from multiprocessing.context import ForkServerContext

from supervisor.launcher import JobProcess

log = logging.getLogger("jobsup.scheduler")


class SparePool:
    """At most one waiting child; ``wanted()`` says whether one should wait now."""

    def __init__(
        self,
        ctx: ForkServerContext,
        nice: int,
        launcher: Executor,
        wanted: Callable[[], bool],
        on_sigterm: Callable[[str], None],
    ) -> None:
        self._ctx = ctx
        self._nice = nice
        self._launcher = launcher
        self._wanted = wanted
        self._on_sigterm = on_sigterm
        self._spare: JobProcess | None = None
        self._forking: asyncio.Future[None] | None = None

    @property
    def waiting(self) -> bool:
        return self._spare is not None

    def take(self) -> JobProcess | None:
        """The waiting child, if it is still usable; the pool is empty after."""
        spare, self._spare = self._spare, None
        if spare is not None:
            asyncio.get_running_loop().remove_reader(spare.sentinel)
            if not spare.usable:
                spare.discard()  # it died waiting (OOM killer, a stray signal)
                return None
        return spare

    def drop(self) -> None:
        """Let the waiting child go (shutdown, or a SIGTERM it may have had too)."""
        spare = self.take()
        if spare is not None:
            spare.discard()

    def refill(self) -> None:
        """Fork the next spare in the background, if one is wanted and none waits."""
        if self._wanted() and self._spare is None and self._forking is None:
            self._forking = asyncio.ensure_future(self._fork())

    async def _fork(self) -> None:
        process = JobProcess(self._ctx, self._nice)
        try:
            await asyncio.get_running_loop().run_in_executor(self._launcher, process.start)
        except Exception:
            log.exception("could not fork a spare child")
            return
        finally:
            self._forking = None
        if self._wanted() and self._spare is None:
            self._spare = process
            asyncio.get_running_loop().add_reader(process.sentinel, self._died)
        else:
            process.discard()

    def _died(self) -> None:
        """The waiting spare exited. Killed by SIGTERM (its default there): a stop is coming."""
        spare, self._spare = self._spare, None
        if spare is None:
            return
        asyncio.get_running_loop().remove_reader(spare.sentinel)
        code = spare.reap()
        spare.discard()
        if code == -signal.SIGTERM:
            self._on_sigterm("the spare child got SIGTERM")
        elif spare.server_lost:  # the spare itself exits at its spec pipe's EOF
            log.warning("the forkserver is gone; the next child starts a new one")
        else:
            log.warning("the spare child exited with %s", code)
