"""Fixtures that run the real server in a subprocess, on a fresh database."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from supervisor import testing
from supervisor.testing import free_port

__all__ = [
    "ADMIN_TOKEN",
    "OPERATOR_TOKEN",
    "RAW_AUTH",
    "ROOT",
    "VIEWER_TOKEN",
    "Server",
    "free_port",
    "wait_until",
]

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

# One token per role; the test client sends the admin one.
ADMIN_TOKEN = "tests-admin-token-0123456789"
OPERATOR_TOKEN = "tests-operator-token-0123456789"
VIEWER_TOKEN = "tests-viewer-token-0123456789"
TOKENS = ",".join(
    f"{role}:{role}:{token}"
    for role, token in (
        ("admin", ADMIN_TOKEN),
        ("operator", OPERATOR_TOKEN),
        ("viewer", VIEWER_TOKEN),
    )
)
# For requests written by hand on a socket: a Host the server accepts and the admin token.
RAW_AUTH = f"Host: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n".encode()

# Test settings: short delays and grace periods so escalation is quick.
FAST = {
    "JOBSUP_MIN_DELAY_MS": "0",
    "JOBSUP_CANCEL_GRACE_S": "0.5",
    "JOBSUP_KILL_AFTER_S": "0.5",
    "JOBSUP_CANCEL_WAIT_S": "3",
    "JOBSUP_JOB_MODULES": "tests.jobs",
    "JOBSUP_LOG_LEVEL": "info",
    "JOBSUP_TOKENS": TOKENS,
    # Tests start jobs by the hundred; the rate limits' own tests turn them on.
    "JOBSUP_RATE_START_PER_MIN": "0",
}


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``condition`` until it returns something truthy, or fail at the deadline."""
    try:
        return testing.wait_until(condition, timeout, interval)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


class ApiHelpers:
    """Calls the tests make against a server, whatever runs it (``client`` is an httpx.Client)."""

    client: httpx.Client

    def start_job(self, body: dict[str, Any]) -> str:
        response = self.client.post("/admin/jobs/start", json=body)
        assert response.status_code == 202, response.text
        return str(response.json()["jobId"])

    def status(self, job_id: str) -> dict[str, Any]:
        response = self.client.get(f"/admin/jobs/{job_id}/status")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_status(self, job_id: str, *statuses: str, timeout: float = 15) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            job = self.status(job_id)
            return job if job["status"] in statuses else None

        return dict(wait_until(reached, timeout))


class Server(ApiHelpers, testing.ServerProcess):
    """A jobsup server in a subprocess, as a Procfile platform would run it."""

    def __init__(
        self, env: dict[str, str], log_path: Path, command: list[str] | None = None
    ) -> None:
        command = command or [sys.executable, "-m", "supervisor", "serve"]
        super().__init__(command, {**FAST, **env}, log_path, cwd=ROOT)
        self.client = httpx.Client(base_url=self.url, headers=self.headers, timeout=30)

    def start(self) -> Server:
        self.spawn()
        wait_until(self._healthy, timeout=30)
        return self

    def _healthy(self) -> bool:
        self.check_running()
        try:
            return self.client.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobsup.db'}"


@pytest.fixture
def pg_databases() -> Iterator[list[str]]:
    """The PostgreSQL databases made for one test, dropped once its servers have stopped.

    ``make_server`` depends on this fixture, so its servers stop before any
    database is dropped, whichever of ``make_server`` and ``pg_url`` a test
    asked for first. A database dropped under a running server would turn
    its graceful stop into seconds of retrying a database that is gone.
    """
    names: list[str] = []
    yield names
    if names:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def make_server(
    tmp_path: Path, sqlite_url: str, pg_databases: list[str]
) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(start: bool = True, command: list[str] | None = None, **env: str) -> Server:
        env.setdefault("DATABASE_URL", sqlite_url)
        server = Server(env, tmp_path / f"server-{len(servers)}.log", command)
        servers.append(server)
        return server.start() if start else server

    yield make
    for server in servers:
        server.stop()
        server.client.close()
        # Shown by pytest only when the test failed.
        print(f"--- {server.log_path.name} ---\n{server.log()}")


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A database migrated once per session (per xdist worker), the template of each test's.

    Copying it is quicker than migrating each test's database at its first
    server start. It is migrated by ``jobsup migrate`` with the tests' job
    modules, so it holds exactly the schema this checkout's code makes.
    """
    name = f"jobsup_test_template_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        env = {**os.environ, **FAST, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{name}"}
        migrated = subprocess.run(
            [sys.executable, "-m", "supervisor", "migrate"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        yield name
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_databases: list[str], pg_template: str) -> str:
    """A PostgreSQL database for one test, already migrated, dropped after its servers stop."""
    name = f"jobsup_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    pg_databases.append(name)
    return f"postgresql://postgres@127.0.0.1:5432/{name}"
