"""How a job's child ended and what it used: the job's ``resources``.

Three sources, best first:

1. The forkserver, the child's parent, reaps it with ``wait4`` and writes
   its peak RSS and CPU times after the exit code on the child's status
   pipe (``workers.forkserver_init``): exact for every ending, a SIGKILL or
   a segfault included. ``exit_usage`` reads them once the exit code is in.
2. A child that ends on its own sends ``protocol.Usage`` (its getrusage,
   self plus reaped children) just before its final message.
3. For a child that is signalled, ``launcher.JobProcess`` reads
   ``/proc/<pid>/status`` VmHWM just before each signal it sends.

How it ended (``Ending``) is a pure function of the exit status, the final
message, the cancel escalation and a limit, like ``state.classify_exit``.
"""

from __future__ import annotations

import contextlib
import os
import signal
from enum import StrEnum

import msgspec

from supervisor.state import Escalation
from workers import protocol

# The last bytes of a job's stderr kept with its resources.
STDERR_TAIL_BYTES = 8 * 1024


class Ending(StrEnum):
    EXITED = "exited"  # the job returned or raised: completed, or failed with an exception
    COOPERATIVE = "cooperative"  # it saw its cancel request and stopped
    TERMINATED = "terminated"  # SIGTERM: raised JobCancelled in it, or ended it
    KILLED = "killed"  # SIGKILL from the supervisor (the last cancel step, or fencing)
    LIMIT = "limit"  # stopped by one of its limits (time, CPU, memory, ...)
    CRASH = "crash"  # died without telling how: os._exit, a segfault, an outside signal


class Resources(msgspec.Struct, rename="camel"):
    """A run's end: its exit status, how it ended, and what it used.

    ``None`` fields are unknown. Of a retried or resumed job, the last run's.
    """

    ended: Ending
    exit_code: int | None = None  # when it exited
    signal: str | None = None  # when a signal ended it (SIGKILL, SIGSEGV, ...)
    peak_rss_kib: int | None = msgspec.field(default=None, name="peakRssKiB")
    user_cpu_s: float | None = None
    system_cpu_s: float | None = None
    wall_s: float | None = None  # from its start (the Started message) to its end
    stderr_tail: str = ""  # the last lines it wrote to stderr, at most STDERR_TAIL_BYTES
    limit: str | None = None  # which limit stopped it (``ended`` is ``limit``)


def ending(
    exitcode: int | None,
    final: protocol.Message | None,
    escalation: Escalation | None,
    limit: str | None = None,
) -> Ending:
    """How a child ended: its exit code (negative: a signal), its final message,
    how far a cancel went, and the limit that stopped it, if one did."""
    if limit is not None:
        return Ending.LIMIT
    if isinstance(final, protocol.Done | protocol.Failed):
        return Ending.EXITED
    if isinstance(final, protocol.Cancelled):
        return Ending.TERMINATED if final.by_signal else Ending.COOPERATIVE
    if exitcode == -signal.SIGKILL and escalation is Escalation.KILL:
        return Ending.KILLED
    if exitcode == -signal.SIGTERM and escalation is not None:
        return Ending.TERMINATED
    return Ending.CRASH


def exit_status(exitcode: int | None) -> tuple[int | None, str | None]:
    """``(exitCode, signal)`` from a multiprocessing exit code (negative: killed by a signal)."""
    if exitcode is None:
        return None, None
    if exitcode >= 0:
        return exitcode, None
    try:
        return None, signal.Signals(-exitcode).name
    except ValueError:
        return None, f"signal {-exitcode}"


def exit_usage(status_fd: int) -> tuple[int, float, float] | None:
    """What the forkserver wrote after a reaped child's exit code: (peak KiB, user s, system s).

    Called once the exit code has been read from ``status_fd``: the rest is
    there already (one write) or the pipe is at EOF. Never blocks.
    """
    try:
        os.set_blocking(status_fd, False)
        data = os.read(status_fd, protocol.EXIT_USAGE.size)
    except OSError:
        return None
    if len(data) != protocol.EXIT_USAGE.size:
        return None
    peak, user_us, system_us = protocol.EXIT_USAGE.unpack(data)
    return peak, user_us / 1e6, system_us / 1e6


def peak_rss_kib(pid: int) -> int | None:
    """VmHWM of a live process (procfs: memory, not disk), None if it is gone."""
    with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1])
    return None


def tail(lines: list[str], limit: int = STDERR_TAIL_BYTES) -> str:
    """The last whole lines of ``lines`` that fit in ``limit`` bytes (UTF-8), joined."""
    kept: list[str] = []
    size = 0
    for line in reversed(lines):
        size += len(line.encode()) + 1
        if size > limit:
            break
        kept.append(line)
    return "\n".join(reversed(kept))
