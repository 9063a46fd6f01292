"""Servers under test, each in its own subprocess: jobsup and the bare Starlette route."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from bench.client import Client

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll(condition: Callable[[], T | None], timeout: float, interval: float = 0.002) -> T:
    """Call ``condition`` until it returns something other than None, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reached within {timeout} s")
        time.sleep(interval)


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


class ServerProcess:
    """A server command in its own session, logging to a file, stopped with SIGTERM."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = command
        self.env = {**os.environ, "PORT": str(self.port), **env}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.client = Client("127.0.0.1", self.port)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, health_path: str = "/healthz") -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        poll(lambda: self._answers(health_path), timeout=30, interval=0.05)

    def _answers(self, path: str) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.command} exited with {self.process.returncode}:\n{tail}")
        try:
            return self.client.get(path).status == 200
        except OSError:
            return False

    def stop(self, timeout: float = 30) -> None:
        self.client.close()
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class JobsupServer(ServerProcess):
    """``python -m supervisor serve`` on a fresh SQLite database, with bench.jobs loaded."""

    def __init__(self, workdir: Path, name: str, **env: str) -> None:
        settings = {
            "DATABASE_URL": f"sqlite:///{workdir / name}.db",
            "JOBSUP_MIN_DELAY_MS": "0",
            "JOBSUP_JOB_MODULES": "bench.jobs",
            **env,
        }
        command = [sys.executable, "-m", "supervisor", "serve"]
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

    def wait_idle(self, jobs: int) -> None:
        """Wait until ``jobs`` just submitted have run (at 50 jobs/s at worst, plus 30 s)."""
        timeout = 30 + jobs / 50
        try:
            poll(self.idle, timeout, interval=0.01)
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
