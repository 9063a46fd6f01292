"""``python -m bench.traced serve``: jobsup's server with an event-loop pause log.

The bench runs the servers of its API figures through this module instead of
``python -m supervisor serve``, so the product carries no tracing of its own.
Once uvicorn's startup is done, a task on the event loop sleeps
``INTERVAL_S`` at a time and notes by how much each sleep overran: that
overrun is how long the loop could not run a ready callback (a long turn, a
garbage-collector pass, a blocking call, or no CPU to run on). Each pause of
``LOG_OVER_S`` or more is appended to ``BENCH_LOOP_LOG`` as one line
``wall_time pause_s loop cpu_s``, with the CPU time the loop's thread used
meanwhile;
each garbage-collector pass of ``LOG_OVER_S`` or more in the front process
as ``wall_time gc_s generation`` (any thread: the GIL stalls the loop
either way). The bench reads the lines inside each load round's window.

``BENCH_NO_FREEZE=1`` serves without freezing startup's objects out of the
garbage collector (``supervisor.server.freeze_startup_objects``), to compare.
``BENCH_GC_TYPES=1`` notes what the collector tracks after each full pass
(costly: a diagnosis, not a measurement).
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import time
from typing import Any, TextIO

INTERVAL_S = 0.005
LOG_OVER_S = 0.001


class _Log:
    def __init__(self, path: str) -> None:
        self._file: TextIO = open(path, "a", buffering=1)  # noqa: SIM115 (lives as long as the process)
        self._gc_began = 0.0
        self._pid = os.getpid()

    def note(self, text: str) -> None:
        self._file.write(f"# {text}\n")

    def pause(self, seconds: float, cpu: float) -> None:
        self._file.write(f"{time.time():.6f} {seconds:.6f} loop {cpu:.6f}\n")

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if os.getpid() != self._pid:
            return  # a forked child (the forkserver preloads __main__, not this)
        if phase == "start":
            self._gc_began = time.perf_counter()
            return
        took = time.perf_counter() - self._gc_began
        if took >= LOG_OVER_S:
            self._file.write(f"{time.time():.6f} {took:.6f} gc{info['generation']}\n")
        if info["generation"] == 2 and os.environ.get("BENCH_GC_TYPES"):
            from collections import Counter

            kinds = Counter(type(o).__name__ for o in gc.get_objects())
            self.note(
                f"gc2 collected {info['collected']} tracked {sum(kinds.values())} "
                f"{kinds.most_common(8)}"
            )

    async def sample(self) -> None:
        while True:
            before, cpu = time.perf_counter(), time.thread_time()
            await asyncio.sleep(INTERVAL_S)
            over = time.perf_counter() - before - INTERVAL_S
            if over >= LOG_OVER_S:
                self.pause(over, time.thread_time() - cpu)


def install(path: str) -> None:
    from supervisor import server
    from supervisor.server import Server

    if os.environ.get("BENCH_NO_FREEZE"):  # the "before" of a before/after comparison
        server.freeze_startup_objects = lambda: None

    log = _Log(path)
    gc.callbacks.append(log.on_gc)
    startup = Server.startup

    async def traced_startup(self: Server, sockets: list[socket.socket] | None = None) -> None:
        await startup(self, sockets)
        log.note(f"tracked {len(gc.get_objects())} frozen {gc.get_freeze_count()}")
        task = asyncio.get_running_loop().create_task(log.sample())
        traced_startup.task = task  # type: ignore[attr-defined]  # kept: a task needs a reference

    Server.startup = traced_startup  # type: ignore[method-assign]


def read(path: str, since: float, until: float) -> dict[str, float]:
    """The longest loop pause, the most CPU the loop's thread spent in one, and the
    longest GC pass, logged between two wall times (seconds; 0 when none).

    A pause spent on the CPU is the loop's own doing (a long turn, a GC
    pass); the rest of a pause is the process waiting for a CPU, which on a
    shared machine is the other processes' doing.
    """
    longest = {"loop": 0.0, "loop_cpu": 0.0, "gc": 0.0}
    if not os.path.exists(path):
        return longest
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                continue
            at, seconds, what, *cpu = line.split()
            if since <= float(at) <= until:
                kind = "gc" if what.startswith("gc") else "loop"
                longest[kind] = max(longest[kind], float(seconds))
                if cpu:
                    longest["loop_cpu"] = max(longest["loop_cpu"], float(cpu[0]))
    return longest


# The guard matters: the forkserver preloads the main module.
if __name__ == "__main__":
    install(os.environ["BENCH_LOOP_LOG"])
    from supervisor.cli import main

    main()
