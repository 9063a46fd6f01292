"""Bare ``multiprocessing`` baselines: a forkserver child, an Event, a raw pipe.

The forkserver preloads ``__main__`` and this module, as jobsup's preloads its
job code, so the baseline is the best a forkserver child can do on this machine.
"""

from __future__ import annotations

import struct
import time
from multiprocessing import forkserver, get_context
from multiprocessing.connection import Connection
from typing import Any

from bench.servers import uss_bytes
from workers import protocol

_STAMP = struct.Struct("d")


def first_line(conn: Connection) -> None:
    conn.send_bytes(_STAMP.pack(time.time()))
    conn.close()


def wait_for_event(event: Any, conn: Connection) -> None:
    conn.send_bytes(b"ready")
    event.wait()


def pump(conn: Connection, payload: bytes, count: int) -> None:
    conn.send_bytes(_STAMP.pack(time.time()))
    for _ in range(count):
        conn.send_bytes(payload)
    conn.close()


def progress_frame() -> bytes:
    """The same frame a jobsup job sends for ``ctx.progress(processed, message=...)``."""
    return protocol.encoder.encode(protocol.Progress(123_456, None, "flood", None))


class BareForkserver:
    """Children of a plain forkserver, measured from the bench process itself."""

    def __init__(self) -> None:
        self.ctx = get_context("forkserver")
        self.ctx.set_forkserver_preload(["__main__", "bench.forkserver"])
        forkserver.ensure_running()

    def _pipe(self) -> tuple[Connection, Connection]:
        return self.ctx.Pipe(duplex=False)

    def start_latency(self) -> float:
        """Seconds from ``Process.start()`` to the child's first line."""
        reader, writer = self._pipe()
        before = time.time()
        process = self.ctx.Process(target=first_line, args=(writer,))
        process.start()
        writer.close()
        (at,) = _STAMP.unpack(reader.recv_bytes())
        process.join()
        process.close()
        reader.close()
        return float(at - before)

    def _waiting_child(self) -> tuple[Any, Any, Connection]:
        """A bare child blocked on its Event, once it has said it is waiting."""
        event = self.ctx.Event()
        reader, writer = self._pipe()
        process = self.ctx.Process(target=wait_for_event, args=(event, writer))
        process.start()
        writer.close()
        reader.recv_bytes()
        return event, process, reader

    def cancel_latency(self) -> float:
        """Seconds from ``Event.set()`` on a waiting child to its exit, joined."""
        event, process, reader = self._waiting_child()
        before = time.perf_counter()
        event.set()
        process.join()
        elapsed = time.perf_counter() - before
        process.close()
        reader.close()
        return elapsed

    def pipe_rate(self, count: int) -> float:
        """Messages a second through ``Connection.send_bytes`` / ``recv_bytes``."""
        reader, writer = self._pipe()
        process = self.ctx.Process(target=pump, args=(writer, progress_frame(), count))
        process.start()
        writer.close()
        (started,) = _STAMP.unpack(reader.recv_bytes())
        for _ in range(count):
            reader.recv_bytes()
        elapsed = time.time() - started
        process.join()
        process.close()
        reader.close()
        return count / elapsed

    def child_uss(self) -> int:
        """Private memory of a bare child waiting on its Event."""
        event, process, reader = self._waiting_child()
        assert process.pid is not None
        uss = uss_bytes(process.pid)
        event.set()
        process.join()
        process.close()
        reader.close()
        return uss
