"""Imported by the forkserver only (as a preload module), never by jobs.

The forkserver is the parent of every job child. It must survive a SIGTERM
sent to the whole process group or session (Procfile platforms do that): if
it died, multiprocessing would report every running child as exited with
255. So it does not die of SIGTERM; it passes it on to the front process,
its parent, which then stops the server gracefully (and at once starts no
new job). A SIGTERM to any process of the server's own machinery is a
request to stop the server. Children replace this handler in
``workers.entry``; until they do, their parent is the forkserver, not the
front, and nothing is passed on.
"""

import contextlib
import os
import signal
import sys
import warnings
from types import FrameType

from workers.limits import make_subreaper, signal_at_parent_death

_FRONT = os.getppid()

# httpx imports its command-line client (rich, click, pygments: about 80
# modules) whenever those are installed, and jobsup's dependencies install
# them; no job uses it. Marked absent here, before any job module imports
# httpx, httpx takes its own fallback (a ``main`` that says the CLI is not
# installed), and every job child forks from a template smaller by about a
# fifth: fewer page tables copied at each fork and torn down at each exit.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def _pass_on(signum: int, frame: FrameType | None) -> None:
    # Only while the front is still our parent: once it is gone, the
    # forkserver belongs to init (or a subreaper) and exits on its own.
    if os.getppid() == _FRONT:
        os.kill(_FRONT, signal.SIGTERM)


signal.signal(signal.SIGTERM, _pass_on)


# A job's child that dies on its own (a crash, a SIGKILL from outside) leaves
# its descendants to the closest subreaper: us rather than init, so the front
# still finds them below us and kills them (``JobProcess.sweep_orphans``).
# Our loop reaps them when they die, as it reaps its own children, and warns
# of each one it did not fork: expected here, so not worth a line each.
make_subreaper()
warnings.filterwarnings("ignore", message="forkserver: waitpid returned unexpected pid")


# A job frozen by a pause (SIGSTOP to its process group) cannot see the
# front die: it would stay stopped forever, holding its memory (and we with
# it: each child holds our end-of-life pipe). So the kernel tells us of the
# front's death (PR_SET_PDEATHSIG) and we send SIGCONT to every child's group
# (nothing to one that is not stopped); a thawed child then reads its cancel
# pipe's end and stops as any orphaned child does (SIGTERM to its group, then
# SIGKILL). The signal also comes when the front's thread that started us
# ends, so it acts only once our parent is no longer the front.
_FORKSERVER = os.getpid()


def _thaw_children() -> None:
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                pids = [int(pid) for pid in f.read().split()]
        except OSError:
            continue
        for pid in pids:
            with contextlib.suppress(OSError):  # gone meanwhile
                os.killpg(os.getpgid(pid), signal.SIGCONT)


def _front_gone(signum: int, frame: FrameType | None) -> None:
    # Children inherit this handler until child_main replaces it: only the
    # forkserver thaws, and only once the front is really gone.
    if os.getpid() == _FORKSERVER and os.getppid() != _FRONT:
        _thaw_children()


signal.signal(signal.SIGUSR1, _front_gone)
signal_at_parent_death(signal.SIGUSR1)
if os.getppid() != _FRONT:  # it died before we asked
    _thaw_children()


# -- what each child used, told with its exit code -----------------------------
#
# The forkserver, not the front, is every job child's parent, so only it can
# wait4() a child and learn its peak memory and CPU time, whatever the way it
# ended (a SIGKILL or a segfault leaves the child no chance to report them).
# multiprocessing's forkserver loop reaps with os.waitpid and writes the exit
# code to the client's status pipe with write_signed; here both are wrapped,
# in that module's globals only: the reap uses wait4, and the exit code's
# write carries the child's usage after it, in the same write. The front
# reads those bytes after the exit code (supervisor.forensics.exit_usage);
# without them (another Python's loop) it falls back on what the child reported.

import multiprocessing.forkserver as _forkserver  # noqa: E402
import types  # noqa: E402

from workers.protocol import EXIT_USAGE  # noqa: E402

_reaped: list[bytes] = []  # the usage of the child reaped last, until its code is written


class _Os(types.ModuleType):
    """The forkserver module's ``os``: waitpid through wait4, the rest as is."""

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)

    @staticmethod
    def waitpid(pid: int, options: int) -> tuple[int, int]:
        _reaped.clear()
        pid, status, usage = os.wait4(pid, options)
        if pid:
            _reaped.append(
                EXIT_USAGE.pack(
                    usage.ru_maxrss, round(usage.ru_utime * 1e6), round(usage.ru_stime * 1e6)
                )
            )
        return pid, status


_write_signed = _forkserver.write_signed


def _write_signed_with_usage(fd: int, n: int) -> None:
    if not _reaped:  # a pid sent after a fork, not an exit code
        _write_signed(fd, n)
        return
    message = _forkserver.SIGNED_STRUCT.pack(n) + _reaped.pop()
    while message:  # one write in practice: 32 bytes are below PIPE_BUF
        message = message[os.write(fd, message) :]


_forkserver.os = _Os("os")  # type: ignore[attr-defined]
_forkserver.write_signed = _write_signed_with_usage  # type: ignore[attr-defined]
