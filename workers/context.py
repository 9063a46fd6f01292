"""The context a job's run function receives: cancel points, sleep, progress."""

from __future__ import annotations

import contextlib
import math
import os
import select
import threading
import time
from collections.abc import Callable, Iterator
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
    """The cancel flag of a job's child, and its pause switch, fed by the cancel pipe.

    The supervisor writes one byte per request on the pipe (``protocol.CANCEL``,
    ``PAUSE``, ``RESUME``; any other byte cancels) and closes it when it dies,
    which cancels too. ``wait`` and ``hold`` poll the pipe themselves and read
    what lands, so a job sleeping between steps wakes as soon as the byte
    does, without a hop through another thread. The child's watch thread
    reads it too (it must notice the supervisor's death while the job is
    busy): the pipe is non-blocking and each read is taken whole under a
    lock, so every byte is acted on once and in order, by whoever reads it.
    When the watch thread takes a byte, a private pipe wakes the sleeper:
    the cancel one is never drained (a cancel is for good), the pause one is.
    """

    def __init__(self, cancel_fd: int) -> None:
        # A plain bool, not a threading.Event: the SIGTERM handler sets it,
        # and an Event's lock taken by the interrupted main thread would
        # deadlock the handler. Assigning a bool is atomic and lock-free.
        self._set = False
        self._cancel_fd = cancel_fd
        os.set_blocking(cancel_fd, False)
        self._read_lock = threading.Lock()
        # A pause asked and not resumed yet; how many pauses were asked so far
        # (each one is reported, even one asked again before a hold saw the resume).
        self.pause_asked = False
        self.pauses = 0
        self._wake_r, self._wake_w = os.pipe()
        self._nudge_r, self._nudge_w = os.pipe()
        os.set_blocking(self._nudge_r, False)
        os.set_blocking(self._nudge_w, False)

    def set(self) -> None:
        if not self._set:
            self._set = True
            os.write(self._wake_w, b"!")  # never drained: a cancel is for good

    def is_set(self) -> bool:
        return self._set

    def read(self) -> bool:
        """Act on what the supervisor wrote; False once it is gone (EOF)."""
        with self._read_lock:
            try:
                data = os.read(self._cancel_fd, 64)
            except (BlockingIOError, InterruptedError):
                return True  # another reader took it first
            if not data:
                self.set()
                return False
            for byte in data:
                if byte == protocol.PAUSE[0]:
                    self.pause_asked = True
                    self.pauses += 1
                elif byte == protocol.RESUME[0]:
                    self.pause_asked = False
                else:
                    self.set()
            with contextlib.suppress(BlockingIOError):  # full: a wake-up is waiting already
                os.write(self._nudge_w, b"!")
        return True

    def _poll(self, pause_too: bool) -> select.poll:
        poll = select.poll()  # one per call: a job's threads may all sleep at once
        poll.register(self._cancel_fd, select.POLLIN)
        poll.register(self._wake_r, select.POLLIN)
        if pause_too:
            poll.register(self._nudge_r, select.POLLIN)
        return poll

    def _woken(self, poll: select.poll, ms: int) -> None:
        for fd, _ in poll.poll(ms):
            if fd == self._cancel_fd:  # a byte, or the supervisor's death
                self.read()
            elif fd == self._nudge_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._nudge_r, 64)

    def wait(self, timeout: float | None = None, *, or_pause: bool = False) -> bool:
        """True once cancelled; False when ``timeout`` passes, or (``or_pause``) on a pause."""
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        poll = self._poll(or_pause)
        while not self._set:
            if or_pause and self.pause_asked:
                return False
            ms = MAX_POLL_MS
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                ms = min(ms, math.ceil(remaining * 1000))
            self._woken(poll, ms)
        return True

    def hold(self, on_paused: Callable[[], None]) -> bool:
        """Block while a pause is asked, calling ``on_paused`` for each pause; True if cancelled."""
        poll = self._poll(pause_too=True)
        reported = -1
        while self.pause_asked and not self._set:
            if reported != self.pauses:
                reported = self.pauses
                on_paused()
            self._woken(poll, MAX_POLL_MS)
        return self._set

    def close(self) -> None:
        """Close the wake pipes (a child never needs to: it ends with its process)."""
        for fd in (self._wake_r, self._wake_w, self._nudge_r, self._nudge_w):
            os.close(fd)


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
        self._pause_point()

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, waking at once (with ``JobCancelled``) on cancel.

        A pause asked meanwhile holds the sleep; the time held does not
        count, so the sleep ends the rest of ``seconds`` after the resume.
        """
        self.flush()
        remaining = max(0.0, seconds)
        pausable = isinstance(self._cancel, CancelPipe)
        while True:
            self._pause_point()
            began = time.monotonic()
            woken = (
                self._cancel.wait(remaining, or_pause=True)
                if pausable
                else (self._cancel.wait(remaining))
            )
            if woken:
                raise JobCancelled
            remaining -= time.monotonic() - began
            if remaining <= 0 or not self.pause_asked:
                return

    @property
    def pause_asked(self) -> bool:
        """The supervisor asked this job to pause: it holds at its next context call."""
        return isinstance(self._cancel, CancelPipe) and self._cancel.pause_asked

    def _pause_point(self) -> None:
        """Hold here while a pause is asked (keeping the job's place); a cancel ends the hold."""
        if not self.pause_asked:
            return
        assert isinstance(self._cancel, CancelPipe)
        self.flush()
        if self._cancel.hold(self._report_paused):
            raise JobCancelled

    def _report_paused(self) -> None:
        self._channel.send(protocol.Paused(time.time()))

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
        self._pause_point()  # a pause point too: a cancel that ends the hold raises here

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
