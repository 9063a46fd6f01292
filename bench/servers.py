"""Servers under test, each in its own subprocess: jobsup and the bare Starlette route."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from bench.client import Client
from supervisor import testing
from supervisor.testing import wait_until

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def poll(condition: Callable[[], T | None], timeout: float, interval: float = 0.002) -> T:
    """``supervisor.testing.wait_until``, polling fast: these waits are timed."""
    return wait_until(condition, timeout, interval)


def timestamp(iso: str) -> float:
    """An ISO 8601 time from the API as seconds since the epoch."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def uss_bytes(pid: int) -> int:
    """Memory only this process holds (private pages), from smaps_rollup."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1]) * 1024
    return total


_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[float, float, float, float, int]:
    """utime, stime, cutime, cstime of ``pid`` in seconds, and its reaped children's
    minor page faults."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b") ", 1)[1].split()
    utime, stime, cutime, cstime = (int(v) / _TICK for v in fields[11:15])
    return utime, stime, cutime, cstime, int(fields[8])


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b") ", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if ppid == pid:
                found.append(int(entry))
    return found


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


class ServerProcess(testing.ServerProcess):
    """A server command in its own session, asked with the bench's lean client."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path) -> None:
        super().__init__(command, env, log_path, cwd=ROOT)
        self.client = Client("127.0.0.1", self.port, headers=self.headers)

    def start(self, health_path: str = "/healthz") -> None:
        self.spawn()
        poll(lambda: self._answers(health_path), timeout=30, interval=0.05)

    def _answers(self, path: str) -> bool:
        self.check_running()
        try:
            return self.client.get(path).status == 200
        except OSError:
            return False

    def stop(self, timeout: float = 30) -> int | None:
        self.client.close()
        return super().stop(timeout)


class JobsupServer(ServerProcess):
    """``python -m supervisor serve`` on a fresh SQLite database, with bench.jobs loaded."""

    def __init__(self, workdir: Path, name: str, traced: bool = False, **env: str) -> None:
        # traced: served by ``bench.traced``, which logs the event loop's pauses here.
        self.loop_log: Path | None = workdir / f"{name}.loop" if traced else None
        settings = {
            "DATABASE_URL": f"sqlite:///{workdir / name}.db",
            "JOBSUP_MIN_DELAY_MS": "0",
            "JOBSUP_JOB_MODULES": "bench.jobs",
            # The figures send thousands of starts and groups of 100,000 members.
            "JOBSUP_RATE_START_PER_MIN": "0",
            "JOBSUP_MAX_BODY_BYTES": str(256 * 1024 * 1024),
            **env,
        }
        main = "supervisor"
        if self.loop_log is not None:
            settings["BENCH_LOOP_LOG"] = str(self.loop_log)
            main = "bench.traced"
        command = [sys.executable, "-m", main, "serve"]
        super().__init__(command, settings, workdir / f"{name}.log")

    def submit(self, body: dict[str, Any]) -> str:
        response = self.client.post("/admin/jobs/start", body)
        if response.status != 202:
            raise RuntimeError(f"start answered {response.status}: {response.body!r}")
        return str(response.json()["jobId"])

    def status(self, job_id: str) -> dict[str, Any]:
        response = self.client.get(f"/admin/jobs/{job_id}/status")
        response.raise_for_status()
        return dict(response.json())

    def wait_status(
        self, job_id: str, statuses: tuple[str, ...], timeout: float = 30, interval: float = 0.002
    ) -> Any:
        def reached() -> dict[str, Any] | None:
            job = self.status(job_id)
            return job if job["status"] in statuses else None

        return poll(reached, timeout, interval)

    def cancel(self, job_id: str) -> dict[str, Any]:
        response = self.client.post(f"/admin/jobs/{job_id}/cancel")
        if response.status != 200:
            raise RuntimeError(f"cancel answered {response.status}: {response.body!r}")
        return dict(response.json())

    def pauses(self, since: float, until: float) -> dict[str, float]:
        """The longest event-loop pause and GC pass (seconds) between two wall times."""
        from bench import traced

        if self.loop_log is None:
            raise RuntimeError("not a traced server")
        return traced.read(str(self.loop_log), since, until)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds so far of the front process, its forkserver, and the job children.

        From /proc: utime + stime of the front and of the forkserver, and the
        forkserver's cutime + cstime (every job child, spares included, is
        the forkserver's child and reaped by it); "child faults", the
        children's minor page faults, in thousands (so that per job, in the
        figures' milliseconds, it reads as faults).
        """
        front = _stat(self.pid)
        forkserver = [pid for pid in _children(self.pid) if b"forkserver" in _cmdline(pid)]
        if not forkserver:
            raise RuntimeError("the server has no forkserver child")
        fs = _stat(forkserver[0])
        return {
            "front": front[0] + front[1],
            "forkserver": fs[0] + fs[1],
            "children": fs[2] + fs[3],
            "child faults": fs[4] / 1000,  # per job: in thousands, as the times are in ms
        }

    def health(self) -> dict[str, Any]:
        return dict(self.client.get("/healthz").json())

    def count(self, status: str, limit: int = 1) -> int:
        """How many jobs have ``status`` (up to ``limit``), from the job list."""
        response = self.client.get("/admin/jobs", params={"status": status, "limit": limit})
        response.raise_for_status()
        return len(response.json())

    def idle(self) -> bool:
        """Nothing running here and nothing pending in the store."""
        return self.health()["runningJobs"] == 0 and self.count("pending") == 0

    def wait_idle(self, jobs: int, interval: float = 0.1) -> None:
        """Wait until ``jobs`` just submitted have run (at 50 jobs/s at worst, plus 30 s).

        Polled every ``interval``: the polls are requests the front process
        serves while it runs the jobs (every 10 ms, they took a sixth of its
        CPU in a drain), and the drains are timed by the jobs' own stamps.
        """
        timeout = 30 + jobs / 50
        try:
            poll(self.idle, timeout, interval=interval)
        except TimeoutError:
            running = self.health()["runningJobs"]
            raise RuntimeError(
                f"server not idle after {timeout:.0f} s: {running} jobs still running, "
                f"{self.count('pending', 1000)} pending (see {self.log_path.name})"
            ) from None


class BareServer(ServerProcess):
    """The bare Starlette route of ``bench.bare_app`` on jobsup's uvicorn configuration."""

    def __init__(self, workdir: Path) -> None:
        command = [sys.executable, "-m", "bench.bare_app"]
        super().__init__(command, {}, workdir / "bare.log")

    def start(self, health_path: str = "/bare") -> None:
        super().start(health_path)
