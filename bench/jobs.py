"""Job types the benchmark's servers run (JOBSUP_JOB_MODULES=bench.jobs)."""

from __future__ import annotations

import time

from workers.context import JobContext
from workers.registry import JobConfig, job_type


class NoopConfig(JobConfig, tag="bench_noop"):
    """Does nothing: start latency and throughput measure only the machinery."""


@job_type(NoopConfig)
def noop(ctx: JobContext, config: NoopConfig) -> None:
    return None


class WaitConfig(JobConfig, tag="bench_wait"):
    """Waits between steps in ctx.sleep, as a removal job waits out delayMs."""

    steps: int = 1
    step_ms: int = 60_000


@job_type(WaitConfig)
def wait(ctx: JobContext, config: WaitConfig) -> None:
    for step in range(config.steps):
        ctx.progress(processed=step, total=config.steps, phase="waiting")
        ctx.sleep(config.step_ms / 1000)


class ChattyConfig(JobConfig, tag="bench_chatty"):
    """Sends ``rate`` progress messages a second, in ticks of ``tick_ms``."""

    rate: int = 1000
    seconds: float = 10.0
    tick_ms: int = 10


@job_type(ChattyConfig)
def chatty(ctx: JobContext, config: ChattyConfig) -> None:
    per_tick = max(1, config.rate * config.tick_ms // 1000)
    ticks = int(config.seconds * 1000 / config.tick_ms)
    start = time.monotonic()
    for tick in range(ticks):
        for i in range(per_tick):
            ctx.progress(processed=tick * per_tick + i, message="chatty")
        pause = start + (tick + 1) * config.tick_ms / 1000 - time.monotonic()
        ctx.sleep(max(0.0, pause))


class FloodConfig(JobConfig, tag="bench_flood"):
    """Sends progress messages as fast as the pipe takes them, for ``seconds``."""

    seconds: float = 5.0


@job_type(FloodConfig)
def flood(ctx: JobContext, config: FloodConfig) -> dict[str, int]:
    deadline = time.monotonic() + config.seconds
    sent = 0
    while time.monotonic() < deadline:
        for _ in range(1000):
            ctx.progress(processed=sent, message="flood")
            sent += 1
    return {"sent": sent}


class TickConfig(JobConfig, tag="bench_tick"):
    """Ticks every ``tick_ms`` in ctx.sleep, stamping each tick's wall time in its progress."""

    tick_ms: int = 2


@job_type(TickConfig)
def tick(ctx: JobContext, config: TickConfig) -> None:
    n = 0
    while True:
        ctx.sleep(config.tick_ms / 1000)
        n += 1
        ctx.progress(processed=n, message=repr(time.time()))
