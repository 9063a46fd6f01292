"""Child processes: the forkserver that makes them, and one wrapper per job.

``JobProcess`` owns a job's process, its cancel pipe and its progress pipe,
and offers start, cancel, pause, resume, freeze, thaw, terminate, kill and
reap. Nothing else in the code base sends signals to jobs.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import select
import signal
import struct
from multiprocessing import forkserver
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext
from typing import Any

from supervisor import forensics
from workers import limits, protocol, registry
from workers.entry import ChildSpec, child_main, spec_encoder

# A frame larger than this is a protocol error (a job sending huge results
# should store them and send a reference).
MAX_FRAME_BYTES = 8 * 1024 * 1024
READ_CHUNK = 256 * 1024


class ProtocolError(Exception):
    pass


# Our children not yet reaped: the forkserver's own children, as against the
# orphans a dead child left to it (``JobProcess.sweep_orphans``).
_children: set[int] = set()


def _forkserver_pid() -> int | None:
    return getattr(forkserver._forkserver, "_forkserver_pid", None)  # type: ignore[attr-defined]


def forkserver_context(job_modules: tuple[str, ...]) -> ForkServerContext:
    """A forkserver context whose server has the job code imported already.

    Preloading ``__main__`` matters on Python 3.11: otherwise every child
    re-imports the main module's imports before running its job. So does
    ``multiprocessing.popen_forkserver``: each child unpickles its Process
    object, which imports it (and ``popen_fork``) unless the server has.
    """
    ctx = multiprocessing.get_context("forkserver")
    preload = [
        "__main__",
        "multiprocessing.popen_forkserver",
        "workers.forkserver_init",
        "workers.entry",
    ]
    ctx.set_forkserver_preload([*preload, *registry.modules(job_modules)])
    return ctx


def ensure_forkserver() -> None:
    """Start the forkserver now rather than on the first job (blocking: ~0.1-1 s)."""
    forkserver.ensure_running()


def _readable(fd: int) -> bool:
    """``fd`` has bytes or EOF to read now (one poll(2), no selector object)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class FrameReader:
    """Splits a non-blocking pipe's bytes into ``Connection.send_bytes`` frames."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = bytearray()
        self.eof = False

    def read(self, budget: int = READ_CHUNK) -> list[bytes]:
        """Read what is there (up to ``budget`` bytes) and return complete frames."""
        while budget > 0 and not self.eof:
            try:
                chunk = os.read(self.fd, min(budget, READ_CHUNK))
            except BlockingIOError:
                break
            if not chunk:
                self.eof = True
                break
            self._buf += chunk
            budget -= len(chunk)
        return self._frames()

    def _frames(self) -> list[bytes]:
        frames: list[bytes] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= 4:
            (size,) = struct.unpack_from("!i", buf, pos)
            # Negative: send_bytes' marker for frames over 2 GiB, or garbage.
            if size < 0 or size > MAX_FRAME_BYTES:
                raise ProtocolError(f"bad frame size {size}")
            if len(buf) - pos - 4 < size:
                break
            frames.append(bytes(buf[pos + 4 : pos + 4 + size]))
            pos += 4 + size
        del buf[:pos]
        return frames


class JobProcess:
    """A job's child: started unassigned (a spare), then given one job."""

    def __init__(self, ctx: ForkServerContext, nice: int = 0) -> None:
        self._ctx = ctx
        self._nice = nice
        self.spec: ChildSpec | None = None
        self._process: Any = None
        self._spec_w: Connection | None = None
        self._cancel_w: Connection | None = None
        self._progress_r: Connection | None = None
        self.reader: FrameReader | None = None
        self.exitcode: int | None = None
        self.swept = 0  # descendants killed with it by kill()
        # The job's stdout and stderr (fds 1 and 2 of the child and its spawn).
        self._stdout_r: Connection | None = None
        self._stderr_r: Connection | None = None
        # VmHWM read just before each signal this wrapper sends (a killed
        # child cannot report its own); None until then.
        self.peak_rss_kib: int | None = None
        # (peak RSS KiB, user s, system s) as the forkserver's wait4 saw them.
        self.usage: tuple[int, float, float] | None = None
        # The forkserver died before telling this child's exit: no status will
        # come on the sentinel, and the child may still be running.
        self.server_lost = False

    def start(self) -> None:
        """Fork the child (blocking, a few ms: the launcher thread calls this)."""
        spec_r, spec_w = self._ctx.Pipe(duplex=False)
        cancel_r, cancel_w = self._ctx.Pipe(duplex=False)
        progress_r, progress_w = self._ctx.Pipe(duplex=False)
        stdout_r, stdout_w = self._ctx.Pipe(duplex=False)
        stderr_r, stderr_w = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(
            target=child_main,
            args=(spec_r, cancel_r, progress_w, self._nice),
            kwargs={"outputs": (stdout_w, stderr_w)},
            name="jobsup-job",
        )
        try:
            process.start()
            _children.add(process.pid)
            # multiprocessing polls every child it knows of when it starts
            # the next one, reading exit codes off their sentinels from this
            # launcher thread: a race with the event loop, which reaps them.
            multiprocessing.process._children.discard(process)  # type: ignore[attr-defined]
        finally:
            # The parent keeps only its own ends: EOF on the progress pipe then
            # means the child is gone, and on the cancel pipe that we are.
            for end in (spec_r, cancel_r, progress_w, stdout_w, stderr_w):
                end.close()
        os.set_blocking(cancel_w.fileno(), False)
        for end in (progress_r, stdout_r, stderr_r):
            os.set_blocking(end.fileno(), False)
        self._stdout_r = stdout_r
        self._stderr_r = stderr_r
        self._process = process
        self._spec_w = spec_w
        self._cancel_w = cancel_w
        self._progress_r = progress_r
        self.reader = FrameReader(progress_r.fileno())

    @property
    def usable(self) -> bool:
        """Started, not yet given a job, and still alive."""
        return self._spec_w is not None and self.spec is None and not _readable(self.sentinel)

    def assign(self, spec: ChildSpec) -> None:
        """Give the waiting child its job. A spec fits the empty pipe: no wait."""
        assert self._spec_w is not None
        self.spec = spec
        # Broken pipe: it died meanwhile, and its sentinel tells the run how.
        with contextlib.suppress(BrokenPipeError):
            self._spec_w.send_bytes(spec_encoder.encode(spec))
        self._spec_w.close()
        self._spec_w = None

    def discard(self) -> None:
        """Let a spare go: EOF on its spec pipe makes it exit."""
        if self.pid is not None:
            _children.discard(self.pid)  # never reaped here; in our session, never an orphan
        if self._spec_w is not None:
            self._spec_w.close()
            self._spec_w = None
        self.close()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def sentinel(self) -> int:
        return int(self._process.sentinel)

    @property
    def progress_fd(self) -> int:
        assert self._progress_r is not None
        return self._progress_r.fileno()

    @property
    def output_fds(self) -> tuple[int, int]:
        """The read ends of the job's stdout and stderr (non-blocking)."""
        assert self._stdout_r is not None
        assert self._stderr_r is not None
        return self._stdout_r.fileno(), self._stderr_r.fileno()

    def cancel(self) -> None:
        """Ask the job to stop at its next cancel point. Never blocks."""
        self._ask(protocol.CANCEL)

    def pause(self) -> None:
        """Ask the job to hold at its next context call (it reports ``Paused``)."""
        self._ask(protocol.PAUSE)

    def resume(self) -> None:
        """Let a job held at a context call go on."""
        self._ask(protocol.RESUME)

    def _ask(self, request: bytes) -> None:
        if self._cancel_w is None:
            return
        # Full pipe: 64 KiB of requests unread, the job is not reading them.
        # Broken pipe: the child is gone.
        with contextlib.suppress(BlockingIOError, BrokenPipeError):
            os.write(self._cancel_w.fileno(), request)

    def freeze(self) -> None:
        """Stop the job's whole process group where it is (SIGSTOP)."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Let a frozen process group go on (SIGCONT)."""
        self._signal(signal.SIGCONT)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the job's child and every process below it.

        The child is a subreaper (``workers.limits``): while it lives, every
        descendant's parent chain leads to it, even one that left the job's
        process group with ``setsid``. So it is stopped first (it can fork
        no more), its descendants found in /proc and killed, and then its
        group. A read of /proc on the event loop, on this rare last step only.
        """
        pid = self.pid
        if pid is None or self.exitcode is not None:
            return  # never signal a reaped pid: it may belong to someone else now
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
        self.swept += limits.sweep(pid)
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        pid = self.pid
        if pid is None or self.exitcode is not None:
            return  # never signal a reaped pid: it may belong to someone else now
        peak = forensics.peak_rss_kib(pid)  # its last chance to be read
        if peak is not None:
            self.peak_rss_kib = max(peak, self.peak_rss_kib or 0)
        try:
            os.killpg(pid, sig)  # the job and anything it spawned
        except ProcessLookupError:
            # The child has not made its own group yet, or has exited.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def reap(self) -> int | None:
        """The exit code once the sentinel is readable (negative: killed by that signal).

        The sentinel is the forkserver's status pipe: the exit code, then what
        the child used, in one write. They are read here straight off it, as
        ``Popen.poll`` would but without the selector it builds per call.
        """
        if self.exitcode is None:
            popen = self._process._popen
            if popen.returncode is None:
                if self.server_lost or not _readable(self.sentinel):
                    return None
                try:
                    popen.returncode = forkserver.read_signed(self.sentinel)
                except (OSError, EOFError):  # the forkserver is gone: no status will come
                    self.server_lost = True
                    return None
            self.exitcode = popen.returncode
            _children.discard(self._process.pid)
            self.usage = forensics.exit_usage(self.sentinel)  # it follows the exit code
        return self.exitcode

    def ended_unreaped(self, code: int) -> int:
        """The child is gone and its reaper with it: ``code`` stands for its exit status."""
        self._process._popen.returncode = code
        self.exitcode = code
        _children.discard(self._process.pid)
        return code

    def sweep_orphans(self) -> None:
        """The child died without sweeping its descendants (a crash, a SIGKILL from outside).

        They went to the forkserver, a subreaper (``workers.forkserver_init``).
        Its children that are not ours and either left our session (``setsid``)
        or are still in the dead child's group are the dead child's: each is
        killed with its tree. A spare being forked now is in our session and
        group, never taken for one.
        """
        server, dead = _forkserver_pid(), self.pid
        if server is None or dead is None:
            return
        table = limits.processes()
        session = table.get(server, (0, 0, 0))[2]
        for pid, (ppid, group, sid) in table.items():
            if ppid == server and pid not in _children and (sid != session or group == dead):
                self.swept += limits.kill_tree(pid)

    def kill_group_leftovers(self) -> None:
        """Kill what the job spawned and left running in its process group."""
        pid = self.pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)

    def close(self) -> None:
        ends = (self._spec_w, self._cancel_w, self._progress_r, self._stdout_r, self._stderr_r)
        for conn in ends:
            if conn is not None:
                conn.close()
        self._spec_w = self._cancel_w = self._progress_r = None
        self._stdout_r = self._stderr_r = None
        if self._process is not None and self.exitcode is not None:
            self._process.close()
