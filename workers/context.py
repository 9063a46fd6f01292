"""The context a job's run function receives: cancel points, sleep, progress."""

from __future__ import annotations

import math
import os
import select
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any, Protocol

import msgspec

from workers import protocol
from workers.fence import Fence

# Progress calls closer together than this are merged before they are sent.
PROGRESS_INTERVAL_S = 0.02
# poll() takes a C int of milliseconds; longer waits take several.
MAX_POLL_MS = 2**31 - 1
# A saved place is a cursor, not the job's data: it travels in every resume.
MAX_SAVED_BYTES = 64 * 1024


class SavedStateTooLarge(ValueError):
    """``ctx.save`` was given more than ``MAX_SAVED_BYTES`` of JSON."""


class JobCancelled(BaseException):
    """Raised inside a job at a cancel point, or by SIGTERM while it runs.

    A ``BaseException`` so that a job's ``except Exception`` cannot swallow it.
    """


class CancelFlag(Protocol):
    """What a context needs of its cancel flag (``threading.Event`` will do)."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class CancelPipe:
    """The cancel flag of a job's child, woken straight from the cancel pipe.

    The supervisor writes a byte to the pipe to cancel, and closes it when it
    dies; either makes the pipe readable (this class never reads it).
    ``wait`` polls the pipe itself, so a job sleeping between steps wakes as
    soon as the byte lands, without a hop through another thread. The
    child's watch thread reads the pipe (it must notice the supervisor's
    death while the job is busy): when it takes the byte first, ``set``
    makes a private wake pipe readable, so a sleeper that checked the flag
    just before can still not miss it.
    """

    def __init__(self, cancel_fd: int) -> None:
        # A plain bool, not a threading.Event: the SIGTERM handler sets it,
        # and an Event's lock taken by the interrupted main thread would
        # deadlock the handler. Assigning a bool is atomic and lock-free.
        self._set = False
        self._cancel_fd = cancel_fd
        self._wake_r, self._wake_w = os.pipe()

    def set(self) -> None:
        if not self._set:
            self._set = True
            os.write(self._wake_w, b"!")  # never drained: a cancel is for good

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        poll = select.poll()  # one per call: a job's threads may all sleep at once
        poll.register(self._cancel_fd, select.POLLIN)
        poll.register(self._wake_r, select.POLLIN)
        while not self._set:
            ms = MAX_POLL_MS
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                ms = min(ms, math.ceil(remaining * 1000))
            if poll.poll(ms):  # a byte, the supervisor's death, or a set()
                self._set = True
        return True

    def close(self) -> None:
        """Close the wake pipe (a child never needs to: it ends with its process)."""
        os.close(self._wake_r)
        os.close(self._wake_w)


class Channel:
    """The child's end of the progress pipe."""

    def __init__(self, conn: Connection, on_broken: CancelFlag) -> None:
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
        cancel: CancelFlag,
        *,
        owner: str | None = None,
        attempt: int = 0,
        saved: Any = None,
        resumes: int = 0,
    ) -> None:
        self.job_id = job_id
        self.database_url = database_url
        # The run's fencing token (workers.fence); a context made outside the
        # supervisor (a script, a unit test) has no owner and so no fence.
        self.owner = owner
        self.attempt = attempt
        # What the job saved before it was interrupted (None on a first run),
        # and how many times it has resumed from a saved place.
        self.state: Any = saved
        self.resumed = saved is not None
        self.resumes = resumes
        self._channel = channel
        self._cancel = cancel
        self.last_partial: Any = None
        self._pending: list[Any] | None = None  # progress not sent yet
        self.progress_interval_s = PROGRESS_INTERVAL_S
        self._sent_at = -math.inf  # the first progress goes at once
        self._shield = 0
        self._deferred = False

    @property
    def fence(self) -> Fence | None:
        """What a write that acts on the world checks first; None without an owner."""
        if self.owner is None:
            return None
        return Fence(self.job_id, self.owner, self.attempt)

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def checkpoint(self) -> None:
        due = time.monotonic() - self._sent_at >= self.progress_interval_s
        if self._pending is not None and due:
            self.flush()
        if self._cancel.is_set():
            raise JobCancelled

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, waking at once (with ``JobCancelled``) on cancel."""
        self.flush()
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
        """Report progress; fields left None keep their last value.

        Progress is state, not a stream of events: calls closer together than
        ``PROGRESS_INTERVAL_S`` are merged here and the latest value is sent
        (at the next call past the interval, or at the next checkpoint,
        sleep, partial, log or the job's end), so a job may report as often
        as it likes without costing the supervisor a message each time.
        """
        self._pending = protocol.merge_progress([processed, total, message, phase], self._pending)
        if time.monotonic() - self._sent_at >= self.progress_interval_s:
            self.flush()

    def flush(self) -> None:
        """Send the progress merged so far, if any."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._sent_at = time.monotonic()
            self._channel.send(protocol.Progress(*pending))

    def partial(self, result: Any) -> None:
        """Record what the job has done so far; kept even if it is cancelled."""
        self.flush()
        self.last_partial = result
        self._channel.send(protocol.Partial(result))

    def save(self, state: Any) -> None:
        """Save the job's place, to resume from if it is interrupted (deploy, crash).

        ``state`` is anything msgspec encodes as JSON, at most
        ``MAX_SAVED_BYTES`` of it: a cursor, not data. The supervisor keeps
        the latest; a resumed run finds it in ``ctx.state`` (``ctx.resumed``
        is True). Only job types declared ``resumable`` are resumed.
        """
        encoded = msgspec.json.encode(state)
        if len(encoded) > MAX_SAVED_BYTES:
            raise SavedStateTooLarge(
                f"saved state is {len(encoded)} bytes of JSON; at most {MAX_SAVED_BYTES}"
                " may be saved"
            )
        self.flush()
        self.state = state
        self._channel.send(protocol.Saved(encoded))

    def log(self, message: str, level: str = "info") -> None:
        self.flush()
        self._channel.send(protocol.Log(level, message))
