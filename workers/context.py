"""The context a job's run function receives: cancel points, sleep, progress."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any

from workers import protocol


class JobCancelled(BaseException):
    """Raised inside a job at a cancel point, or by SIGTERM while it runs.

    A ``BaseException`` so that a job's ``except Exception`` cannot swallow it.
    """


class Channel:
    """The child's end of the progress pipe."""

    def __init__(self, conn: Connection, on_broken: threading.Event) -> None:
        self._conn = conn
        self._on_broken = on_broken

    def send(self, message: protocol.Message) -> None:
        try:
            self._conn.send_bytes(protocol.encoder.encode(message))
        except (BrokenPipeError, ConnectionResetError):
            # The parent is gone: nobody will read what we did, so stop.
            self._on_broken.set()


class JobContext:
    """What a job may do with its supervisor.

    ``checkpoint()`` and ``sleep()`` are the cancel points: a job that calls
    them between steps stops within milliseconds of a cancel request.
    """

    def __init__(
        self,
        job_id: str,
        database_url: str,
        channel: Channel,
        cancel: threading.Event,
    ) -> None:
        self.job_id = job_id
        self.database_url = database_url
        self._channel = channel
        self._cancel = cancel
        self.last_partial: Any = None
        self._shield = 0
        self._deferred = False

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def checkpoint(self) -> None:
        if self._cancel.is_set():
            raise JobCancelled

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, waking at once (with ``JobCancelled``) on cancel."""
        if self._cancel.wait(max(0.0, seconds)):
            raise JobCancelled

    @contextmanager
    def shielded(self) -> Iterator[None]:
        """A section that SIGTERM does not cut in half.

        Use it around a side effect and its bookkeeping (remove members, then
        record the removal). A SIGTERM that arrives inside is raised as
        ``JobCancelled`` when the section ends; SIGKILL still applies to a
        section that never ends.
        """
        self._shield += 1
        try:
            yield
        finally:
            self._shield -= 1
        if self._shield == 0 and self._deferred:
            self._deferred = False
            raise JobCancelled

    def interrupt(self) -> None:
        """Called by the child's SIGTERM handler while the job runs."""
        self._cancel.set()
        if self._shield:
            self._deferred = True
            return
        raise JobCancelled

    def progress(
        self,
        processed: int | None = None,
        total: int | None = None,
        message: str | None = None,
        phase: str | None = None,
    ) -> None:
        self._channel.send(protocol.Progress(processed, total, message, phase))

    def partial(self, result: Any) -> None:
        """Record what the job has done so far; kept even if it is cancelled."""
        self.last_partial = result
        self._channel.send(protocol.Partial(result))

    def log(self, message: str, level: str = "info") -> None:
        self._channel.send(protocol.Log(level, message))
