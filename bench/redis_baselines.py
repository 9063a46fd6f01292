"""RQ and Celery baselines against the local Redis, their workers run as subprocesses.

Either baseline raises ``Unavailable`` (with the reason) when its package is
not installed, Redis does not answer, or its workers do not come up; the
figures then report that baseline as unavailable instead of failing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import tasks
from bench.servers import ROOT, poll

WORKER_START_TIMEOUT_S = 30.0


def _epoch(iso: str) -> float:
    """A Celery ``date_done`` (ISO 8601, UTC when it names no zone) as epoch seconds."""
    at = datetime.fromisoformat(iso)
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


class Unavailable(Exception):
    """A baseline that cannot run here; the message says why."""


def _redis() -> Any:
    try:
        import redis
    except ImportError:
        raise Unavailable("redis not installed (pip install -e '.[bench]')") from None
    client = redis.Redis.from_url(tasks.REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise Unavailable(f"no Redis at {tasks.REDIS_URL}: {exc}") from None
    return client


def _alive(pid: int) -> bool:
    """False once the process is gone or a zombie (dead, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _forget(client: Any, name: str) -> None:
    """Delete what a baseline left in Redis under its run's unique name."""
    keys = list(client.scan_iter(match=f"*{name}*", count=1000))
    if keys:
        client.delete(*keys)
    client.srem("rq:queues", f"rq:queue:{name}")


class Workers:
    """Worker subprocesses, each in its own session, stopped with SIGTERM then SIGKILL."""

    def __init__(self, commands: list[list[str]], log_path: Path, env: dict[str, str]) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        with log_path.open("ab") as log:
            for command in commands:
                self.processes.append(
                    subprocess.Popen(
                        command,
                        cwd=ROOT,
                        env={**os.environ, **env},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    def check(self) -> None:
        for process in self.processes:
            if process.poll() is not None:
                raise Unavailable(f"worker exited with {process.returncode} (see its log)")

    def stop(self, timeout: float = 10.0) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _wait_ready(workers: Workers, ready: Any, what: str) -> None:
    def check() -> bool:
        workers.check()
        return bool(ready())

    try:
        poll(check, WORKER_START_TIMEOUT_S, interval=0.1)
    except (TimeoutError, Unavailable) as exc:
        workers.stop()
        raise Unavailable(f"{what} workers did not start: {exc}") from None


class RqBaseline:
    """``rq worker`` processes (the default Worker forks a work horse per job)."""

    def __init__(self, workdir: Path, count: int = 2) -> None:
        self.redis = _redis()
        try:
            import rq
        except ImportError:
            raise Unavailable("rq not installed (pip install -e '.[bench]')") from None
        self._rq = rq
        name = f"bench-{uuid.uuid4().hex[:8]}"
        self.queue = rq.Queue(name, connection=self.redis)
        command = [sys.executable, "-m", "rq.cli", "worker", "-u", tasks.REDIS_URL, "-q"]
        commands = [[*command, "-n", f"{name}-{i}", name] for i in range(count)]
        self.workers = Workers(commands, workdir / "rq-workers.log", {})
        _wait_ready(
            self.workers,
            lambda: rq.Worker.count(connection=self.redis, queue=self.queue) >= count,
            "RQ",
        )

    def start_latency(self) -> float:
        before = time.time()
        job = self.queue.enqueue(tasks.first_line, result_ttl=600)
        result = job.latest_result(timeout=30)
        if result is None or result.return_value is None:
            raise RuntimeError(f"RQ job {job.id} gave no result")
        return float(result.return_value) - before

    def cancel_latency(self) -> float:
        from rq.command import send_stop_job_command
        from rq.job import JobStatus

        key = f"bench:rq:{uuid.uuid4().hex}"
        job = self.queue.enqueue(tasks.wait, key, 60, job_timeout=120, failure_ttl=600)
        poll(lambda: self.redis.get(key), 30)
        before = time.perf_counter()
        send_stop_job_command(self.redis, job.id)
        poll(lambda: job.get_status(refresh=True) == JobStatus.STOPPED, 30, interval=0.0005)
        return time.perf_counter() - before

    def drain(self, count: int) -> float:
        """No-op jobs a second, from the first start to the last end (RQ's own timestamps)."""
        registry = self.queue.finished_job_registry
        already = registry.count
        datas = [self._rq.Queue.prepare_data(tasks.noop, result_ttl=600) for _ in range(count)]
        ids = [job.id for job in self.queue.enqueue_many(datas)]
        poll(lambda: registry.count >= already + count, timeout=600, interval=0.01)
        jobs = [j for j in self._rq.job.Job.fetch_many(ids, connection=self.redis) if j]
        first = min(j.started_at for j in jobs if j.started_at)
        last = max(j.ended_at for j in jobs if j.ended_at)
        return count / (last - first).total_seconds()

    def submit_rate(self, seconds: float) -> float:
        """``enqueue`` calls a second from one client, to a queue no worker reads."""
        queue = self._rq.Queue(f"bench-submit-{uuid.uuid4().hex[:8]}", connection=self.redis)
        sent = 0
        deadline = time.perf_counter() + seconds
        began = time.perf_counter()
        while time.perf_counter() < deadline:
            queue.enqueue(tasks.noop, result_ttl=600)
            sent += 1
        rate = sent / (time.perf_counter() - began)
        _forget(self.redis, queue.name)
        return rate

    def close(self) -> None:
        self.workers.stop()
        _forget(self.redis, self.queue.name)


class CeleryBaseline:
    """A Celery worker with the prefork pool (pool processes are reused across tasks)."""

    def __init__(self, workdir: Path, concurrency: int = 2) -> None:
        self.redis = _redis()
        try:
            from bench import celery_app
        except ImportError:
            raise Unavailable("celery not installed (pip install -e '.[bench]')") from None
        self.celery = celery_app
        queue = f"bench-{uuid.uuid4().hex[:8]}"
        celery_app.app.conf.task_default_queue = queue
        self.name = f"{queue}@localhost"
        command = [
            *(sys.executable, "-m", "celery", "-A", "bench.celery_app", "worker"),
            *("-Q", queue, "-n", self.name, "-c", str(concurrency), "-P", "prefork"),
            *("--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning"),
        ]
        env = {"BENCH_CELERY_QUEUE": queue}
        self.workers = Workers([command], workdir / "celery-worker.log", env)
        control = celery_app.app.control
        _wait_ready(
            self.workers, lambda: control.ping(destination=[self.name], timeout=0.5), "Celery"
        )

    def start_latency(self) -> float:
        before = time.time()
        result = self.celery.first_line.apply_async()
        at = result.get(timeout=30)
        result.forget()
        return float(at) - before

    def cancel_latency(self) -> float:
        key = f"bench:celery:{uuid.uuid4().hex}"
        result = self.celery.wait.apply_async((key, 60))
        pid = int(poll(lambda: self.redis.get(key), 30))
        # A revoke that reaches the worker before it has seen the pool accept
        # the task terminates nothing: wait until the worker calls it active.
        poll(lambda: self._active(result.id), 30, interval=0.005)
        before = time.perf_counter()
        self.celery.app.control.revoke(result.id, terminate=True)
        poll(lambda: not _alive(pid), 30, interval=0.0005)
        return time.perf_counter() - before

    def drain(self, count: int) -> float:
        """No-op tasks a second, from the first start to the last end, with all queued first.

        Two ``hold`` tasks occupy both pool processes while the batch is sent
        (``apply_async`` one by one, as a client would), then are released;
        each ``stamp`` task reports its start, its result's ``date_done`` is
        its end (the worker's clock, as RQ's ``ended_at``).
        """
        keys = [f"bench:celery:hold:{uuid.uuid4().hex}" for _ in range(2)]
        holds = [self.celery.hold.apply_async((key, 120)) for key in keys]
        poll(lambda: all(self.redis.exists(key) for key in keys), 30)
        ids = [self.celery.stamp.apply_async().id for _ in range(count)]
        self.redis.delete(*keys)
        names = [f"celery-task-meta-{i}" for i in ids]
        poll(lambda: self.redis.exists(*names) == count, timeout=600, interval=0.01)
        metas = [json.loads(m) for m in self.redis.mget(names)]
        self.redis.delete(*names, *(f"celery-task-meta-{h.id}" for h in holds))
        if any(m["status"] != "SUCCESS" for m in metas):
            raise RuntimeError("a Celery no-op task did not succeed")
        first = min(float(m["result"]) for m in metas)
        last = max(_epoch(m["date_done"]) for m in metas)
        return count / (last - first)

    def submit_rate(self, seconds: float) -> float:
        """``apply_async`` calls a second from one client, to a queue no worker reads."""
        queue = f"bench-submit-{uuid.uuid4().hex[:8]}"
        sent = 0
        deadline = time.perf_counter() + seconds
        began = time.perf_counter()
        while time.perf_counter() < deadline:
            self.celery.noop.apply_async(queue=queue)
            sent += 1
        rate = sent / (time.perf_counter() - began)
        self.redis.delete(queue)
        return rate

    def _active(self, task_id: str) -> bool:
        inspect = self.celery.app.control.inspect([self.name], timeout=1)
        replies = inspect.query_task(task_id) or {}
        state = replies.get(self.name, {}).get(task_id)
        return bool(state and state[0] == "active")

    def close(self) -> None:
        self.workers.stop()
        _forget(self.redis, self.name.split("@")[0])
