"""A jobsup server (or any server command) in a subprocess, for process-level tests.

It runs as a platform would run it: its own session, its output in a log
file, stopped with SIGTERM (SIGKILL to its group after a timeout). The
project's tests and benchmarks use it; so can the tests of your own job
types. How to ask it whether it is up is the caller's: a test client, a
benchmark client, anything that speaks HTTP.

Unless ``env`` sets ``JOBSUP_TOKENS`` or ``JOBSUP_AUTH=off``, the server is
given one admin token of its own (``token``); ``headers`` carries it, for
whatever client the caller makes.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], T | None], timeout: float, interval: float = 0.02) -> T:
    """Call ``condition`` until it returns something truthy; TimeoutError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(interval)


async def wait_until_async(
    condition: Callable[[], T | None], within: float, interval: float = 0.001
) -> T:
    """``wait_until`` on a running event loop (``within`` seconds): the loop runs between looks."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {within} s")
        await asyncio.sleep(interval)


def admin_token(tokens: str) -> str | None:
    """The first admin token in a ``JOBSUP_TOKENS`` value, if it holds one."""
    for entry in tokens.split(","):
        parts = entry.strip().split(":")
        if len(parts) in (2, 3) and parts[-2] == "admin":
            return parts[-1]
    return None


class ServerProcess:
    def __init__(
        self, command: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = command
        self.env = {**os.environ, "PORT": str(self.port), **env}
        self.token: str | None = None
        self.headers: dict[str, str] = {}
        if "JOBSUP_TOKENS" not in env and env.get("JOBSUP_AUTH", "").lower() != "off":
            self.token = secrets.token_urlsafe(24)
            self.env["JOBSUP_TOKENS"] = f"testing:admin:{self.token}"
        elif "JOBSUP_TOKENS" in env:
            self.token = admin_token(env["JOBSUP_TOKENS"])
        if self.token is not None:
            self.headers = {"authorization": f"Bearer {self.token}"}
        self.log_path = log_path
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def spawn(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def check_running(self) -> None:
        """Raise, with the end of its log, if the server has exited."""
        assert self.process is not None
        if self.process.poll() is not None:
            tail = self.log()[-4000:]
            raise RuntimeError(f"{self.command} exited with {self.process.returncode}:\n{tail}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self, timeout: float = 40) -> int | None:
        """SIGTERM and wait; SIGKILL its whole group if it outlives ``timeout``."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()
