"""A job's limits, and their enforcement inside its child.

``Limits`` is what a job type declares (``@job_type(..., limits=Limits(...))``)
and a start request may lower or set (``"limits": {"timeoutS", "cpuS",
"memoryMiB", "openFiles"}``); the supervisor checks it against its caps and
stores it with the job. Inside the child, when its spec arrives (a spare is
forked before it has a job), ``apply`` sets the kernel's rlimits and makes
the child a subreaper, so that every descendant, even one that leaves the
job's process group with ``setsid``, stays below it; ``sweep`` kills them
all at the job's end.

Memory is ``RLIMIT_DATA`` (private writable memory: heap and anonymous
mappings), not ``RLIMIT_AS``: the address space counts what Python merely
reserves (thread stacks, malloc arenas), so a small ``RLIMIT_AS`` would fail
jobs that use little memory. Each process counts on its own: a descendant
gets its own allowance (a cgroup would cover the tree; see
docs/operations.md). The timeout is the supervisor's (a timer in its run).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
from typing import Annotated

import msgspec

_Positive = Annotated[float, msgspec.Meta(gt=0)]
_Count = Annotated[int, msgspec.Meta(ge=1)]

# After the soft CPU limit (SIGXCPU, which the job sees as an interrupt and
# reports), the kernel's SIGKILL comes this much CPU time later.
CPU_HARD_MARGIN_S = 2
MIB = 1024 * 1024


class Limits(msgspec.Struct, rename="camel", forbid_unknown_fields=True, omit_defaults=True):
    """What one job may use; None: no limit of that kind."""

    timeout_s: _Positive | None = None  # wall-clock seconds of one run
    cpu_s: _Positive | None = None  # CPU seconds (user + system) of the job's child
    # Private writable memory of each process, in MiB.
    memory_mib: _Count | None = msgspec.field(default=None, name="memoryMiB")
    open_files: _Count | None = None  # open file descriptors of each process

    def over(self, asked: Limits | None) -> Limits:
        """These (a job type's defaults) with each value the start ``asked`` for in their place."""
        if asked is None:
            return self
        return Limits(
            *(
                mine if theirs is None else theirs
                for mine, theirs in zip(_values(self), _values(asked), strict=True)
            )
        )

    @property
    def empty(self) -> bool:
        return all(v is None for v in _values(self))


def _values(limits: Limits) -> tuple[float | int | None, ...]:
    return (limits.timeout_s, limits.cpu_s, limits.memory_mib, limits.open_files)


# The words a person reads in the job's error, one home for each.
def memory_message(mib: int | None) -> str:
    return f"used more than {mib} MiB of memory" if mib else "ran out of memory"


def cpu_message(seconds: float | None) -> str:
    return f"used more than {seconds:g} s of CPU" if seconds else "used too much CPU"


def timeout_message(seconds: float | None) -> str:
    return f"ran longer than its {seconds:g} s timeout"


decoder = msgspec.json.Decoder(Limits)


def apply(limits: Limits | None) -> None:
    """Set the rlimits in this child (before the job's code runs) and become a subreaper."""
    make_subreaper()
    if limits is None:
        return
    if limits.memory_mib is not None:
        size = limits.memory_mib * MIB
        _lower(resource.RLIMIT_DATA, size, size)
    if limits.cpu_s is not None:
        # RLIMIT_CPU counts the process's whole life: a spare waited (and
        # imported) before it had a job, so the job's budget starts from now.
        used = resource.getrusage(resource.RUSAGE_SELF)
        soft = int(used.ru_utime + used.ru_stime + limits.cpu_s + 0.999)
        _lower(resource.RLIMIT_CPU, soft, soft + CPU_HARD_MARGIN_S)
    if limits.open_files is not None:
        # The hard limit stays: the sweep at the job's end needs descriptors
        # to read /proc, and lifts the soft one back first.
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        _lower(resource.RLIMIT_NOFILE, limits.open_files, hard)


def _lower(kind: int, soft: int, hard: int) -> None:
    """Never above the limit the child already has (only root could raise it)."""
    _, old_hard = resource.getrlimit(kind)
    if old_hard != resource.RLIM_INFINITY:
        hard = min(hard, old_hard)
    resource.setrlimit(kind, (min(soft, hard), hard))


PR_SET_CHILD_SUBREAPER = 36


def make_subreaper() -> bool:
    """Orphaned descendants are re-parented to this process instead of init (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


PR_SET_PDEATHSIG = 1


def signal_at_parent_death(signum: int) -> bool:
    """The kernel sends ``signum`` to this process when its parent dies (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def processes() -> dict[int, tuple[int, int, int]]:
    """Every live process (zombies left out: they are dead): pid -> (parent, group, session)."""
    found: dict[int, tuple[int, int, int]] = {}
    with contextlib.suppress(OSError):  # no /proc, or no descriptor left to read it
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue  # gone meanwhile
            # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
            fields = stat[stat.rfind(b")") + 2 :].split()
            if len(fields) > 3 and fields[0] != b"Z":
                found[int(name)] = (int(fields[1]), int(fields[2]), int(fields[3]))
    return found


def descendants(root: int) -> list[int]:
    """Every live process whose parent chain leads to ``root`` (from /proc), deepest last.

    Under a subreaper ``root``, an orphan is re-parented to it, so the chain
    never breaks while ``root`` lives.
    """
    parents = {pid: ppid for pid, (ppid, _, _) in processes().items()}
    found: list[int] = []
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - set(found)
        found += sorted(frontier)
    return found


def kill_tree(pid: int) -> int:
    """SIGKILL ``pid`` and every process below it; how many there were."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGSTOP)  # it forks no more while its tree is swept
    killed = sweep(pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
        killed += 1
    return killed


SWEEP_ROUNDS = 20


def sweep(root: int) -> int:
    """SIGKILL every descendant of ``root``; how many there were.

    Rounds until none is left: one may fork while the first round kills its
    parent (its orphan then comes to ``root``, the subreaper, and the next
    round finds it). When ``root`` is this process, the dead are reaped too.
    """
    if root == os.getpid():
        if not _has_children():
            return 0  # the common end: nothing spawned, no /proc to read
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        with contextlib.suppress(ValueError, OSError):  # the job's openFiles is spent
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    killed: set[int] = set()
    for _ in range(SWEEP_ROUNDS):
        found = descendants(root)
        if not found:
            break
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        if root == os.getpid():
            _reap_children()
    return len(killed)


def _has_children() -> bool:
    """Whether this process has a live child (zombies are reaped on the way).

    A subreaper has a descendant only if it has a child: an orphan comes to it.
    """
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        return False
    return True


def _reap_children() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def cgroup_v2_usable(root: str = "/sys/fs/cgroup") -> bool:
    """A unified (v2) hierarchy this process could make per-job groups in, with memory and cpu.

    jobsup enforces limits with rlimits either way: this check is all of
    its cgroup support (docs/operations.md), untested on a machine that has one.
    """
    try:
        with open(os.path.join(root, "cgroup.controllers")) as f:
            controllers = set(f.read().split())
        with open("/proc/self/cgroup") as f:
            own = next((line[3:].strip() for line in f if line.startswith("0::")), None)
    except OSError:
        return False
    if own is None or not {"memory", "cpu"} <= controllers:
        return False
    mine = os.path.join(root, own.lstrip("/"))
    return os.access(mine, os.W_OK) and os.access(os.path.join(mine, "cgroup.procs"), os.W_OK)
