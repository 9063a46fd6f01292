"""Job types for the tests, loaded by test servers through JOBSUP_JOB_MODULES=tests.jobs."""

from __future__ import annotations

import ctypes
import io
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Literal

from workers.context import JobContext
from workers.limits import Limits
from workers.registry import JobConfig, Retry, job_type


class QuickConfig(JobConfig, tag="quick"):
    value: int = 0


@job_type(QuickConfig)
def quick(ctx: JobContext, config: QuickConfig) -> dict[str, Any]:
    return {"value": config.value}


class SleepyConfig(JobConfig, tag="sleepy"):
    """Cooperative: a step, a partial result, then a cancellable sleep."""

    steps: int = 3
    step_ms: int = 50
    key: str | None = None


@job_type(SleepyConfig, exclusive_key=lambda c: c.key)
def sleepy(ctx: JobContext, config: SleepyConfig) -> dict[str, Any]:
    for step in range(config.steps):
        ctx.checkpoint()
        ctx.partial({"steps": step})
        ctx.progress(processed=step, total=config.steps, phase="sleeping")
        ctx.sleep(config.step_ms / 1000)
    return {"steps": config.steps}


class StubbornConfig(JobConfig, tag="stubborn"):
    """Never reaches a cancel point; optionally ignores SIGTERM and spawns a grandchild."""

    seconds: float = 60
    ignore_term: bool = False
    spawn_child: bool = False


@job_type(StubbornConfig)
def stubborn(ctx: JobContext, config: StubbornConfig) -> dict[str, Any]:
    if config.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    partial: dict[str, Any] = {"started": True}
    if config.spawn_child:
        child = subprocess.Popen(["sleep", "600"])
        partial["grandchildPid"] = child.pid
    ctx.partial(partial)
    ctx.progress(message="stuck inside a batch")
    deadline = time.monotonic() + config.seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)  # deliberately not ctx.sleep: this job ignores the Event
    return {"finished": True}


class LingerConfig(JobConfig, tag="linger"):
    """Ends (at once, or when cancelled during ``wait_ms``), then hangs writing its output."""

    wait_ms: int = 0


class _StuckOutput(io.StringIO):
    def flush(self) -> None:
        threading.Event().wait()  # as if stdout were a pipe nobody reads


@job_type(LingerConfig)
def linger(ctx: JobContext, config: LingerConfig) -> dict[str, Any]:
    sys.stdout = _StuckOutput()
    ctx.partial({"pid": os.getpid()})
    ctx.sleep(config.wait_ms / 1000)
    return {"pid": os.getpid()}


class CrashConfig(JobConfig, tag="crash"):
    how: Literal["exception", "exit", "segfault", "sigkill"] = "exception"


@job_type(CrashConfig)
def crash(ctx: JobContext, config: CrashConfig) -> None:
    ctx.partial({"before": "crash"})
    if config.how == "exception":
        raise RuntimeError("the job broke")
    if config.how == "exit":
        os._exit(7)
    if config.how == "segfault":
        ctypes.string_at(0)
    os.kill(os.getpid(), signal.SIGKILL)


class RecordConfig(JobConfig, tag="record"):
    """Writes one row per execution, to prove each job runs exactly once."""

    step_ms: int = 30


@job_type(RecordConfig)
def record(ctx: JobContext, config: RecordConfig) -> dict[str, Any]:
    from workers.db import connect

    db = connect(ctx.database_url)
    try:
        db.execute("INSERT INTO executions (job_id, pid) VALUES (?, ?)", (ctx.job_id, os.getpid()))
    finally:
        db.close()
    ctx.sleep(config.step_ms / 1000)
    return {"pid": os.getpid()}


class ChattyConfig(JobConfig, tag="chatty"):
    """Progress (and optionally a partial result) as fast as it goes, ``count`` times."""

    count: int = 1000
    message_bytes: int = 0
    partial_bytes: int = 0
    step_ms: int = 0


@job_type(ChattyConfig)
def chatty(ctx: JobContext, config: ChattyConfig) -> dict[str, Any]:
    filler = "x" * config.message_bytes
    blob = "y" * config.partial_bytes
    for i in range(config.count):
        ctx.progress(processed=i + 1, total=config.count, message=filler or None, phase="chatting")
        if blob:
            ctx.partial({"i": i, "blob": blob})
        if config.step_ms:
            ctx.sleep(config.step_ms / 1000)
        else:
            ctx.checkpoint()
    return {"count": config.count}


class CounterConfig(JobConfig, tag="counter"):
    """Resumable: counts to ``to``, saving its place after each step."""

    to: int = 5
    step_ms: int = 50
    save_bytes: int = 0  # pad the saved place to this size (to test the bound)
    # Its first attempt gets a SIGTERM at its first instant (a platform's stop).
    sigterm_at_start: bool = False


@job_type(CounterConfig, resumable=True)
def counter(ctx: JobContext, config: CounterConfig) -> dict[str, Any]:
    if config.sigterm_at_start and ctx.attempt == 1:
        os.kill(os.getpid(), signal.SIGTERM)
    start = ctx.state["next"] if ctx.resumed else 0
    seen = list(ctx.state["seen"]) if ctx.resumed else []
    for n in range(start, config.to):
        ctx.sleep(config.step_ms / 1000)
        seen.append(n)
        ctx.save({"next": n + 1, "seen": seen, "pad": "x" * config.save_bytes})
        ctx.progress(processed=n + 1, total=config.to)
    return {"seen": seen, "resumes": ctx.resumes}


class FlakyConfig(JobConfig, tag="flaky"):
    """Crashes (exits without a word) while the count in ``path`` is below ``crashes``.

    Each run adds one to the count first; ``raises`` fails with an exception
    instead, ``hangs`` waits (for its instance to die) instead.
    """

    path: str
    crashes: int = 0
    raises: bool = False
    hangs: bool = False


@job_type(FlakyConfig, retry=Retry(backoff_s=0.1, jitter=0))
def flaky(ctx: JobContext, config: FlakyConfig) -> dict[str, Any]:
    try:
        with open(config.path) as f:
            runs = int(f.read() or 0)
    except FileNotFoundError:
        runs = 0
    with open(config.path, "w") as f:
        f.write(str(runs + 1))
    if config.raises:
        raise ValueError("a bad config fails the same way every time")
    if runs < config.crashes:
        while config.hangs:
            ctx.sleep(60)
        os._exit(3)
    return {"runs": runs + 1}


class TickerConfig(JobConfig, tag="ticker"):
    """Counts forever (or to ``to``): a checkpoint, progress and a short sleep per tick."""

    to: int = 0  # 0: until cancelled
    step_ms: int = 20


@job_type(TickerConfig, freezable=True)
def ticker(ctx: JobContext, config: TickerConfig) -> dict[str, Any]:
    n = 0
    while config.to == 0 or n < config.to:
        ctx.checkpoint()
        n += 1
        ctx.progress(processed=n, total=config.to or None)
        ctx.sleep(config.step_ms / 1000)
    return {"ticks": n}


class HogConfig(JobConfig, tag="hog"):
    """Uses what its limits forbid: memory (MiB, step by step), CPU (a spin), or time."""

    memory_mib: int = 0
    spin: bool = False
    sleep_s: float = 0


@job_type(HogConfig, limits=Limits(timeout_s=600))
def hog(ctx: JobContext, config: HogConfig) -> dict[str, Any]:
    ctx.partial({"started": True})
    held = []
    for mib in range(config.memory_mib):
        held.append(bytearray(1024 * 1024))
        ctx.partial({"heldMiB": mib + 1})
    while config.spin:
        pass  # pure CPU, no cancel point: only the CPU limit stops it
    if config.sleep_s:
        ctx.sleep(config.sleep_s)
    return {"heldMiB": len(held)}


class EscapeConfig(JobConfig, tag="escape"):
    """Forks a grandchild that leaves the job's process group (setsid) and ignores SIGTERM."""

    then: Literal["complete", "fail", "wait", "stubborn", "exhaust", "crash"] = "complete"


@job_type(EscapeConfig)
def escape(ctx: JobContext, config: EscapeConfig) -> dict[str, Any]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the grandchild
        os.setsid()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.close(read)
        os.write(write, b"x")
        while True:
            time.sleep(60)
    os.close(write)
    os.read(read, 1)  # it has left the group and ignores SIGTERM now
    os.close(read)
    ctx.partial({"grandchildPid": pid})
    if config.then == "fail":
        raise RuntimeError("failed on purpose")
    if config.then == "crash":  # dies without a word: nothing in the child sweeps
        os.kill(os.getpid(), signal.SIGKILL)
    if config.then == "exhaust":  # every descriptor its limits allow, held to the end
        held = []
        while True:
            held.append(open(os.devnull, "rb"))  # noqa: SIM115
    if config.then == "wait":
        ctx.sleep(600)
    if config.then == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(600)
    return {"grandchildPid": pid}


class EndConfig(JobConfig, tag="end"):
    """Writes to stdout and stderr, holds ``alloc_mib`` of memory, then ends ``how``.

    return / raise; wait: sleeps cooperatively until cancelled; stubborn:
    never at a cancel point (SIGTERM stops it); ignore_term: SIGTERM ignored
    too (only SIGKILL stops it); exit: os._exit(7); segfault; sigkill: kills itself.
    """

    how: Literal[
        "return", "raise", "wait", "stubborn", "ignore_term", "exit", "segfault", "sigkill"
    ] = "return"
    alloc_mib: int = 0
    stderr: str = "a line on stderr"


@job_type(EndConfig)
def end(ctx: JobContext, config: EndConfig) -> dict[str, Any]:
    held = bytearray(config.alloc_mib * 1024 * 1024)
    for i in range(0, len(held), 4096):
        held[i] = 1  # touched: resident
    print("a line on stdout")
    print(config.stderr, file=sys.stderr)
    ctx.log("a line through ctx.log", "warning")
    ctx.partial({"pid": os.getpid()})
    if config.how == "raise":
        raise RuntimeError("the job broke")
    if config.how == "wait":
        ctx.sleep(600)
    if config.how in ("stubborn", "ignore_term"):
        if config.how == "ignore_term":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            time.sleep(0.01)  # never a cancel point
    sys.stdout.flush()
    sys.stderr.flush()
    if config.how == "exit":
        os._exit(7)
    if config.how == "segfault":
        ctypes.string_at(0)
    if config.how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    return {"held": len(held)}


class PrintConfig(JobConfig, tag="print"):
    """Prints ``lines`` numbered lines of ``line_bytes`` to stdout; a grandchild's
    lines too (``grandchild``); then waits to be cancelled (``wait``) or returns."""

    lines: int = 10
    line_bytes: int = 20
    grandchild: bool = False
    wait: bool = False


@job_type(PrintConfig)
def print_lines(ctx: JobContext, config: PrintConfig) -> dict[str, Any]:
    pad = "x" * max(0, config.line_bytes - 12)
    out = sys.stdout
    for i in range(1, config.lines + 1):
        out.write(f"line {i:06d} {pad}\n")
    out.flush()
    if config.grandchild:
        subprocess.run(["sh", "-c", "echo grandchild-out; echo grandchild-err >&2"], check=True)
    if config.wait:
        ctx.sleep(600)
    return {"lines": config.lines}


class RogueConfig(JobConfig, tag="rogue"):
    """What a hostile job does to its own process: close its output descriptors
    (``close_output``), flood stderr without a newline (``flood_bytes``), start a
    setsid daemon that forks a second setsid daemon (``daemons``), or let a
    grandchild allocate ``grandchild_mib`` past the memory limit. Then it ends
    ``how``: return, wait (cooperatively, until cancelled) or crash (SIGKILL itself)."""

    close_output: bool = False
    flood_bytes: int = 0
    daemons: bool = False
    grandchild_mib: int = 0
    how: Literal["return", "wait", "crash"] = "return"


def _daemons(write: int) -> None:
    """In a fork: leave the session, fork a second daemon that leaves again, both sleep."""
    os.setsid()
    second = os.fork()
    if second == 0:
        os.setsid()
        os.write(write, f"{os.getpid()} ".encode())
        while True:
            time.sleep(60)
    os.write(write, f"{os.getpid()} ".encode())
    while True:
        time.sleep(60)


@job_type(RogueConfig)
def rogue(ctx: JobContext, config: RogueConfig) -> dict[str, Any]:
    result: dict[str, Any] = {"pid": os.getpid()}
    if config.daemons:
        read, write = os.pipe()
        if os.fork() == 0:
            os.close(read)
            try:
                _daemons(write)
            finally:
                os._exit(0)
        os.close(write)
        pids = b""
        while pids.count(b" ") < 2:
            pids += os.read(read, 64)
        os.close(read)
        result["daemons"] = [int(p) for p in pids.split()]
    if config.grandchild_mib:
        code = f"b = bytearray({config.grandchild_mib} * 1024 * 1024)"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True)
        result["grandchildExit"] = done.returncode
    if config.flood_bytes:
        chunk = b"z" * 65536
        left = config.flood_bytes
        while left > 0:
            left -= os.write(2, chunk[: min(left, len(chunk))])
    if config.close_output:
        os.close(1)
        os.close(2)
    ctx.partial(result)
    if config.how == "wait":
        ctx.sleep(600)
    if config.how == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    return result


class PrinterConfig(JobConfig, tag="printer"):
    """Resumable: prints one numbered line per step and saves its place after it."""

    to: int = 1000
    step_ms: int = 20


@job_type(PrinterConfig, resumable=True)
def printer(ctx: JobContext, config: PrinterConfig) -> dict[str, Any]:
    start = ctx.state["next"] if ctx.resumed else 0
    for n in range(start, config.to):
        print(f"printed {n}", flush=True)
        ctx.save({"next": n + 1})
        ctx.progress(processed=n + 1, total=config.to)
        ctx.sleep(config.step_ms / 1000)
    return {"printed": config.to}


class ModulesConfig(JobConfig, tag="modules"):
    """Which of ``names`` the child has imported (it inherits the forkserver's)."""

    names: list[str] = []


@job_type(ModulesConfig)
def modules(ctx: JobContext, config: ModulesConfig) -> dict[str, Any]:
    return {name: sys.modules.get(name) is not None for name in config.names}
