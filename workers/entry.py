"""A job child's main: signals, the cancel watch, run, report, exit code.

Runs in a process forked from the forkserver. A child is started before it
has a job: it prepares (own process group, signals, the parent watch, its
nice level), then waits for its ``ChildSpec`` on ``spec_conn``. The
supervisor keeps one such spare ready, so a job starts without waiting for
a fork; each child still runs exactly one job.

The parent holds the write end of ``cancel_conn``: one byte on it is a
request (cancel, pause or resume: ``protocol.CANCEL``, ``PAUSE``,
``RESUME``), and EOF means the parent is gone (crashed or killed), which
the child treats as a cancel before exiting on its own, so no job outlives
its supervisor.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import resource
import select
import signal
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import Any

import msgspec

from workers import limits as limits_
from workers import protocol, registry
from workers.context import CancelPipe, Channel, JobCancelled, JobContext

# After the parent disappears: how long the job gets to stop at a cancel
# point or through SIGTERM before the child exits regardless.
ORPHAN_EXIT_S = 1.0


class ChildSpec(msgspec.Struct, array_like=True, frozen=True):
    job_id: str
    job_type: str
    config_json: bytes
    database_url: str
    # The run's fencing token: the instance that claimed the job and the
    # attempt number the claim stored (workers.fence).
    owner: str
    attempt: int
    job_modules: tuple[str, ...] = ()
    # A resumed run: the job's saved place (JSON) and how many resumes this is.
    saved_json: bytes | None = None
    resumes: int = 0
    limits_json: bytes | None = None  # workers.limits.Limits as JSON; None: no limits


spec_encoder = msgspec.msgpack.Encoder()
_spec_decoder = msgspec.msgpack.Decoder(ChildSpec)


class _SignalState:
    def __init__(self, cancel: CancelPipe) -> None:
        self.cancel = cancel
        self.ctx: JobContext | None = None
        self.in_job = False
        self.raised = False
        self.limits: limits_.Limits | None = None
        self.cpu_over = False  # SIGXCPU came: the job's CPU limit is spent

    def on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        # SIGTERM is the second step of cancellation. Recording alone would
        # leave a job stuck inside a batch stuck, so this handler, alone in
        # the code base, raises: once, only while the job's code runs, and
        # not inside a shielded section (the context defers it to its end).
        self.cancel.set()
        if self.in_job and not self.raised and self.ctx is not None:
            self.raised = True
            self.ctx.interrupt()

    def on_sigxcpu(self, signum: int, frame: FrameType | None) -> None:
        # The soft CPU limit: the job is stopped as a SIGTERM stops it, so
        # it ends through child_main (its partial result and the sweep of
        # its descendants); the hard limit's SIGKILL follows if it does not.
        self.cpu_over = True
        self.on_sigterm(signum, frame)


def _hung_up(signum: int, frame: FrameType | None) -> None:
    pass


def _watch_parent(cancel_conn: Connection, cancel: CancelPipe) -> None:
    # Reads the pipe beside the job's sleepers (CancelPipe.read: whoever
    # reads a byte acts on it); _parent_alive only looks for POLLHUP.
    while True:
        wait([cancel_conn])
        if not cancel.read():  # a request is acted on there; EOF: the parent is gone
            _orphaned()


def _orphaned() -> None:
    """The supervisor is gone: stop the job and all it spawned, and exit."""
    # The job leads its own process group: SIGTERM reaches the job (which
    # turns it into JobCancelled) and anything it spawned.
    os.killpg(0, signal.SIGTERM)
    time.sleep(ORPHAN_EXIT_S)
    limits_.sweep(os.getpid())  # those that left the group (setsid) too: we are their subreaper
    # Whatever is left, this process included (the exit code has no reader).
    os.killpg(0, signal.SIGKILL)


def child_main(
    spec_conn: Connection,
    cancel_conn: Connection,
    progress_conn: Connection,
    nice: int = 0,
    outputs: tuple[Connection, Connection] | None = None,
) -> None:
    # Own process group: the supervisor stops the job's whole tree with
    # killpg, and signals meant for the front process's group miss the job.
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # If the forkserver dies while the job is frozen, the job's process group
    # is orphaned with a stopped member, and the kernel sends it SIGHUP (then
    # SIGCONT): a job lives on past its forkserver, so SIGHUP must not kill
    # it. A handler, not SIG_IGN, so that what the job executes gets the default.
    signal.signal(signal.SIGHUP, _hung_up)
    if nice:
        os.nice(nice)  # jobs yield the CPU to the API when both want it
    cancel = CancelPipe(cancel_conn.fileno())
    state = _SignalState(cancel)
    # A spare has no job to stop cleanly: SIGTERM simply ends it, and the
    # front, seeing a spare (or a child that never began its job) die of it,
    # starts no job. A spare must never take a job after a SIGTERM.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threading.Thread(
        target=_watch_parent, args=(cancel_conn, cancel), name="jobsup-parent-watch", daemon=True
    ).start()
    try:
        spec = _spec_decoder.decode(spec_conn.recv_bytes())
    except EOFError:
        os._exit(0)  # a spare nobody needed, or its supervisor is gone
    signal.signal(signal.SIGTERM, state.on_sigterm)
    signal.signal(signal.SIGXCPU, state.on_sigxcpu)
    spec_conn.close()
    # Output first: dup2 onto fds 1 and 2 fails (EBADF) once an openFiles
    # limit of 1 or 2 holds, and the child would die before its job began.
    if outputs is not None:
        _capture_output(*outputs)
    if spec.limits_json is not None:
        state.limits = limits_.decoder.decode(spec.limits_json)
    limits_.apply(state.limits)  # rlimits, and a subreaper for every descendant
    channel = Channel(progress_conn, cancel)
    ctx = JobContext(
        spec.job_id,
        spec.database_url,
        channel,
        cancel,
        owner=spec.owner,
        attempt=spec.attempt,
        saved=None if spec.saved_json is None else msgspec.json.decode(spec.saved_json),
        resumes=spec.resumes,
    )
    state.ctx = ctx
    code, message = _run(spec, ctx, state)
    try:
        ctx.flush()
        killed = limits_.sweep(os.getpid())  # setsid escapees too: they are ours
        if killed:
            channel.send(protocol.Swept(killed))
        # Output is flushed after the final message (in _exit): a stuck stdout
        # must not hold the job's end. The front reads the pipes to their end
        # once the child is gone, before it keeps their last lines.
        channel.send(usage(code))
        channel.send(message)
    except MemoryError:
        _exit(protocol.EXIT_MEMORY)  # the job still holds it all: the exit code says why
    progress_conn.close()
    if not _parent_alive(cancel_conn):
        _orphaned()  # the job ended on its own, but its spawn must not outlive it
    _exit(code)


def _capture_output(stdout_conn: Connection, stderr_conn: Connection) -> None:
    """Send fds 1 and 2 to the supervisor's pipes: the job's own prints, its
    libraries' writes to the descriptors, and (inherited) every grandchild's.

    At the descriptor level, not only ``sys.stdout``: a subprocess writes to
    fd 1 whatever Python object is there. Each line is sent as written
    (line buffering), so the job's log follows it while it runs; a full pipe
    blocks the writer until the supervisor reads, never the supervisor.
    """
    for conn, fd in ((stdout_conn, 1), (stderr_conn, 2)):
        os.dup2(conn.fileno(), fd)
        conn.close()
    with contextlib.suppress(Exception):
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    # A segfault (or a hung job sent SIGABRT) writes the Python stack to fd 2:
    # the job's stderr tail then says where it died.
    with contextlib.suppress(Exception):
        faulthandler.enable()


def _flush_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def usage(code: int) -> protocol.Usage:
    """The child's CPU and peak memory, its own and its reaped children's."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return protocol.Usage(
        exit_code=code,
        user_cpu_s=own.ru_utime + children.ru_utime,
        system_cpu_s=own.ru_stime + children.ru_stime,
        peak_rss_kib=max(own.ru_maxrss, children.ru_maxrss),  # KiB on Linux
    )


def _exit(code: int) -> None:
    """Exit now that the supervisor has the final message.

    Straight to ``os._exit``, past multiprocessing's own exit steps: they
    would join threads and processes the job left running, which the job's
    end does not wait for (the supervisor kills its process group's
    leftovers once the child is gone). Only buffered output is written first.
    """
    _flush_output()
    os._exit(code)


def _parent_alive(cancel_conn: Connection) -> bool:
    """False once the parent has closed (by dying) its end of the cancel pipe.

    Looks for POLLHUP rather than reading EOF: reading here would race the
    watch thread for a cancel byte.
    """
    poll = select.poll()
    poll.register(cancel_conn.fileno(), select.POLLIN)
    try:
        events = poll.poll(0)
    except OSError:
        return False
    return not any(mask & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, mask in events)


def _run(spec: ChildSpec, ctx: JobContext, state: _SignalState) -> tuple[int, protocol.Message]:
    try:
        registry.load(spec.job_modules)  # already imported by the forkserver: cheap
        job = registry.get(spec.job_type)
        config = msgspec.json.decode(spec.config_json, type=job.config)
        ctx._channel.send(protocol.Started(os.getpid(), time.time()))
        state.in_job = True
        ctx.checkpoint()
        result: Any = job.run(ctx, config)
        state.in_job = False
        protocol.encoder.encode(result)  # fail here, as the job's error, if it cannot travel
        return protocol.EXIT_OK, protocol.Done(result)
    except JobCancelled:
        state.in_job = False
        if state.cpu_over:
            cpu_s = state.limits.cpu_s if state.limits else None
            failed = protocol.Failed("CpuLimit", limits_.cpu_message(cpu_s), "", "cpu_limit")
            return protocol.EXIT_FAILED, failed
        return protocol.EXIT_CANCELLED, protocol.Cancelled(ctx.last_partial, state.raised)
    except Exception as exc:
        state.in_job = False
        mib = state.limits.memory_mib if state.limits else None
        if isinstance(exc, MemoryError) and mib is not None:  # under our RLIMIT_DATA
            return protocol.EXIT_MEMORY, protocol.Failed(
                "MemoryLimit", limits_.memory_message(mib), traceback.format_exc(), "memory_limit"
            )
        return protocol.EXIT_FAILED, protocol.Failed(
            type(exc).__qualname__, str(exc), traceback.format_exc()
        )
