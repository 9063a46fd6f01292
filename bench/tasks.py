"""What the RQ and Celery baseline workers run (imported by their worker processes).

Each task mirrors a bench job type: ``first_line`` reports when its first line
ran, ``wait`` says it is running (its pid, in Redis) and then sleeps, ``noop``
does nothing.
"""

from __future__ import annotations

import os
import time

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")


def first_line() -> float:
    return time.time()


def noop() -> None:
    return None


def wait(key: str, seconds: float) -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).set(key, os.getpid(), ex=600)
    time.sleep(seconds)
