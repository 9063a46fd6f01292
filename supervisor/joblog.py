"""One running job's captured output: its stdout and stderr pipes and its ctx.log lines.

The child's fds 1 and 2 are pipes (``workers.entry``), so whatever the job
and anything it spawned write there arrives here. The event loop reads each
pipe when it is readable, at most ``READ_BUDGET`` bytes per turn; the bytes
are cut into lines (at most ``MAX_LINE_BYTES`` each), held in a bounded
batch and written to the store (``store.job_logs.append``) about once a second,
or at once past ``BATCH_BYTES``, one write in flight at a time. A job that
writes faster than the store takes it loses its oldest lines here, counted:
memory held per job stays below its log bound plus one read. The last
stderr lines are kept apart for the job's ``resources.stderrTail``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import Callable
from typing import Any

from supervisor.forensics import STDERR_TAIL_BYTES, tail
from supervisor.store import job_logs as sql
from supervisor.store.job_logs import Line
from workers.times import now_ms

log = logging.getLogger("jobsup.joblog")

READ_BUDGET = 64 * 1024  # bytes read from one pipe per turn of the loop
MAX_LINE_BYTES = 8 * 1024  # a longer line is cut into pieces of this size
BATCH_BYTES = 256 * 1024  # a batch this large is written without waiting for the timer
FLUSH_S = 1.0  # lines wait at most about this long to be written


class JobLog:
    def __init__(self, job_id: str, write: Callable[..., asyncio.Future[Any]], limit: int) -> None:
        """``write(fn, *args)`` runs ``fn(db, *args)`` in the store's ordered writer
        (``JobTable.write``)."""
        self.job_id = job_id
        self._write = write
        self._limit = limit
        self._loop = asyncio.get_running_loop()
        self._partial: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self._batch: deque[Line] = deque()
        self._batch_bytes = 0
        self._skipped_lines = 0  # dropped here before being written
        self._skipped_bytes = 0
        self._stderr: deque[str] = deque()  # the latest stderr lines, for the tail
        self._stderr_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._writing: asyncio.Future[None] | None = None
        self._fds: dict[int, str] = {}
        self.closed = False

    # -- reading the pipes -------------------------------------------------------

    def watch(self, stdout_fd: int, stderr_fd: int) -> None:
        for fd, stream in ((stdout_fd, "stdout"), (stderr_fd, "stderr")):
            self._fds[fd] = stream
            self._loop.add_reader(fd, self._on_readable, fd)

    def _on_readable(self, fd: int) -> None:
        self._read(fd, READ_BUDGET)

    def _read(self, fd: int, budget: int) -> None:
        stream = self._fds[fd]
        while budget > 0:
            try:
                data = os.read(fd, min(budget, READ_BUDGET))
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._unwatch(fd)
                self._end_partial(stream)
                return
            budget -= len(data)
            self._feed(stream, data)

    def drain(self, budget: int = 4 * 1024 * 1024) -> None:
        """The child is gone: take what its pipes still hold (bounded: a grandchild may
        still be writing), then stop reading them."""
        for fd in list(self._fds):
            self._read(fd, budget)
            self._unwatch(fd)
        for stream in ("stdout", "stderr"):
            self._end_partial(stream)

    def _unwatch(self, fd: int) -> None:
        if self._fds.pop(fd, None) is not None:
            self._loop.remove_reader(fd)

    def _feed(self, stream: str, data: bytes) -> None:
        buf = self._partial[stream]
        buf += data
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            self._cut(stream, buf, start, end)
            start = end + 1
        del buf[:start]
        while len(buf) >= MAX_LINE_BYTES:  # a line too long to wait for its end
            self._add(stream, bytes(buf[:MAX_LINE_BYTES]))
            del buf[:MAX_LINE_BYTES]

    def _cut(self, stream: str, buf: bytearray, start: int, end: int) -> None:
        for piece in range(start, end, MAX_LINE_BYTES):
            self._add(stream, bytes(buf[piece : min(piece + MAX_LINE_BYTES, end)]))
        if start == end:
            self._add(stream, b"")

    def _end_partial(self, stream: str) -> None:
        buf = self._partial[stream]
        if buf:
            self._add(stream, bytes(buf))
            buf.clear()

    def _add(self, stream: str, raw: bytes) -> None:
        text = raw.decode(errors="replace").rstrip("\r")
        self.add(stream, text)

    # -- lines ----------------------------------------------------------------------

    def add(self, stream: str, text: str, level: str | None = None) -> None:
        """One line of the job's log (``stream``: stdout, stderr, or log for ctx.log)."""
        if "\x00" in text:  # neither database stores a NUL
            text = text.replace("\x00", "\ufffd")
        line = Line(now_ms(), stream, level, text)
        size = line.size
        self._batch.append(line)
        self._batch_bytes += size
        while self._batch_bytes > self._limit and len(self._batch) > 1:
            old = self._batch.popleft()
            self._batch_bytes -= old.size
            self._skipped_lines += 1
            self._skipped_bytes += old.size
        if stream == "stderr":
            self._stderr.append(text)
            self._stderr_bytes += size
            while self._stderr_bytes > STDERR_TAIL_BYTES and len(self._stderr) > 1:
                self._stderr_bytes -= len(self._stderr.popleft().encode()) + 1
        if self._batch_bytes >= BATCH_BYTES:
            self.flush()
        elif self._timer is None and not self.closed:
            self._timer = self._loop.call_later(FLUSH_S, self.flush)

    def stderr_tail(self) -> str:
        return tail(list(self._stderr))

    # -- writing -----------------------------------------------------------------

    def flush(self) -> None:
        """Write the batch, unless a write is under way (its end writes the rest)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writing is not None or not (self._batch or self._skipped_lines):
            return
        lines = list(self._batch)
        skipped = (self._skipped_lines, self._skipped_bytes)
        self._batch.clear()
        self._batch_bytes = self._skipped_lines = self._skipped_bytes = 0
        self._writing = self._write(sql.append, self.job_id, lines, *skipped, self._limit)
        self._writing.add_done_callback(self._written)

    def _written(self, write: asyncio.Future[None]) -> None:
        self._writing = None
        if not write.cancelled() and write.exception() is not None:
            log.error(
                "job %s: its log lines could not be written",
                self.job_id,
                exc_info=write.exception(),
            )
        left = self._batch or self._skipped_lines
        if self._batch_bytes >= BATCH_BYTES or (self.closed and left):
            self.flush()
        elif self._batch and self._timer is None:
            self._timer = self._loop.call_later(FLUSH_S, self.flush)

    def close(self) -> None:
        """The run is over: write what is left (now and as writes finish), read no more."""
        self.drain()
        self.closed = True
        self.flush()

    async def written(self) -> None:
        """Wait for the writes under way (tests, shutdown)."""
        while self._writing is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._writing)
