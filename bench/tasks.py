"""What the RQ and Celery baseline workers run (imported by their worker processes).

Each task mirrors a bench job type: ``first_line`` reports when its first line
ran, ``wait`` says it is running (its pid, in Redis) and then sleeps, ``noop``
does nothing, ``stamp`` says when it began, ``hold`` occupies a worker until
released.
"""

from __future__ import annotations

import os
import time

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")


def first_line() -> float:
    return time.time()


def noop() -> None:
    return None


def stamp() -> float:
    """A no-op that reports when it began (its end is the result's ``date_done``)."""
    return time.time()


def hold(key: str, seconds: float) -> None:
    """Occupy a worker until ``key`` is deleted from Redis (or ``seconds`` pass)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.set(key, os.getpid(), ex=600)
    deadline = time.monotonic() + seconds
    while client.exists(key) and time.monotonic() < deadline:
        time.sleep(0.005)


def wait(key: str, seconds: float) -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).set(key, os.getpid(), ex=600)
    time.sleep(seconds)
