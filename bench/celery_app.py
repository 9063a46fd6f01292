"""The Celery application of the Celery baseline (``celery -A bench.celery_app worker``)."""

from __future__ import annotations

import os

from celery import Celery

from bench import tasks

app = Celery("bench", broker=tasks.REDIS_URL, backend=tasks.REDIS_URL)
app.conf.update(
    result_expires=600,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_default_queue=os.environ.get("BENCH_CELERY_QUEUE", "bench"),
)
first_line = app.task(name="bench.first_line")(tasks.first_line)
noop = app.task(name="bench.noop")(tasks.noop)
wait = app.task(name="bench.wait")(tasks.wait)
stamp = app.task(name="bench.stamp")(tasks.stamp)
hold = app.task(name="bench.hold")(tasks.hold)
