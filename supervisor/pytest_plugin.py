"""pytest plugin: test your own job types the way jobsup tests itself.

Installed with jobsup (entry point ``pytest11``), so ``pip install jobsup``
and ``pytest`` are enough. It starts a real server in a subprocess, with your
job modules loaded, on a fresh SQLite file, and runs each job in a real
child process. See docs/job-types.md.

Fixtures:

- ``jobsup_job_modules``: the modules to load (``JOBSUP_JOB_MODULES``). The
  default is the ``jobsup_job_modules`` ini option; override the fixture to
  choose per test or per directory.
- ``jobsup_env``: extra environment variables for the server (default none),
  for example ``{"JOBSUP_CANCEL_GRACE_S": "1"}``.
- ``jobsup_server``: a started :class:`JobsupServer`, stopped after the test.
- ``run_job`` and ``cancel_after``: that server's methods of the same names.

The server gets a token of its own in ``JOBSUP_TOKENS`` (admin role) and its
``client`` sends it, so tests need no change when access control is on.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from supervisor.testing import ServerProcess, wait_until

if TYPE_CHECKING:
    import httpx

__all__ = ["JobStartRefused", "JobsupServer"]

FINAL = ("completed", "failed", "cancelled")


class JobStartRefused(AssertionError):
    """The server did not accept the job (``status`` and ``error`` say why)."""

    def __init__(self, status: int, body: Any) -> None:
        error = body.get("error", body) if isinstance(body, dict) else body
        super().__init__(f"job refused with {status}: {error}")
        self.status = status
        self.error = error


class JobsupServer(ServerProcess):
    """A jobsup server in a subprocess, with ``client`` (httpx) carrying its token."""

    def __init__(
        self,
        workdir: Path,
        job_modules: list[str],
        env: dict[str, str] | None = None,
        python_path: list[str] | None = None,
    ) -> None:
        import httpx

        self.token = secrets.token_urlsafe(24)
        paths = [*(python_path or []), os.environ.get("PYTHONPATH", "")]
        server_env = {
            "DATABASE_URL": f"sqlite:///{workdir / 'jobsup.db'}",
            "JOBSUP_JOB_MODULES": ",".join(job_modules),
            "JOBSUP_TOKENS": f"admin:{self.token}",
            # Tests start jobs by the dozen: the per-token start rate limit is off.
            "JOBSUP_RATE_START_PER_MIN": "0",
            "PYTHONPATH": os.pathsep.join(p for p in paths if p),
            **(env or {}),
        }
        super().__init__(
            [sys.executable, "-m", "supervisor", "serve"],
            server_env,
            workdir / "server.log",
            cwd=workdir,
        )
        self.client: httpx.Client = httpx.Client(
            base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {self.token}"}
        )

    def start(self, timeout: float = 30) -> JobsupServer:
        import httpx

        self.spawn()

        def healthy() -> bool:
            self.check_running()
            try:
                return self.client.get("/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, timeout)
        return self

    def close(self) -> None:
        self.stop()
        self.client.close()

    def start_job(self, type: str, config: dict[str, Any] | None = None) -> str:
        """Start a job; its id. JobStartRefused if the server answers other than 202."""
        response = self.client.post("/admin/jobs/start", json={**(config or {}), "type": type})
        if response.status_code != 202:
            raise JobStartRefused(response.status_code, _body(response))
        return str(response.json()["jobId"])

    def status(self, job_id: str) -> dict[str, Any]:
        response = self.client.get(f"/admin/jobs/{job_id}/status")
        response.raise_for_status()
        return dict(response.json())

    def wait_for(
        self, job_id: str, condition: Callable[[dict[str, Any]], bool], timeout: float = 30
    ) -> dict[str, Any]:
        """Poll the job until ``condition(job)``; the job then. TimeoutError at the deadline."""

        def reached() -> dict[str, Any] | None:
            job = self.status(job_id)
            return job if condition(job) else None

        try:
            return dict(wait_until(reached, timeout))
        except TimeoutError:
            job = self.status(job_id)
            raise TimeoutError(
                f"job {job_id} still {job['status']} after {timeout} s "
                f"(progress {job['progress']}); server log: {self.log_path}"
            ) from None

    def wait_final(self, job_id: str, timeout: float = 30) -> dict[str, Any]:
        return self.wait_for(job_id, lambda job: job["status"] in FINAL, timeout)

    def run_job(
        self, type: str, config: dict[str, Any] | None = None, timeout: float = 30
    ) -> dict[str, Any]:
        """Run one job in a real child; its final job object (completed, failed or cancelled)."""
        return self.wait_final(self.start_job(type, config), timeout)

    def cancel_after(
        self,
        type: str,
        config: dict[str, Any] | None = None,
        *,
        processed: int | None = None,
        when: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 30,
    ) -> dict[str, Any]:
        """Start a job, cancel it once it got somewhere, and return its final job object.

        It is cancelled once ``progress.processed`` reaches ``processed``, or
        once ``when(job)`` is true, or else as soon as it is ``running``. A
        job that ends first is returned as it ended: check its ``status``.
        """
        if when is None:
            if processed is None:
                when = _running
            else:
                count = processed

                def when(job: dict[str, Any]) -> bool:
                    return bool(job["progress"]["processed"] >= count)

        condition = when
        job_id = self.start_job(type, config)
        job = self.wait_for(job_id, lambda j: j["status"] in FINAL or condition(j), timeout)
        if job["status"] in FINAL:
            return job
        response = self.client.post(f"/admin/jobs/{job_id}/cancel")
        if response.status_code not in (200, 202, 400):  # 400: it finished meanwhile
            response.raise_for_status()
        return self.wait_final(job_id, timeout)


def _running(job: dict[str, Any]) -> bool:
    return bool(job["status"] == "running")


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "jobsup_job_modules",
        "modules with job types that jobsup_server loads (JOBSUP_JOB_MODULES)",
        type="args",
        default=[],
    )


@pytest.fixture
def jobsup_job_modules(request: pytest.FixtureRequest) -> list[str]:
    return list(request.config.getini("jobsup_job_modules"))


@pytest.fixture
def jobsup_env() -> dict[str, str]:
    return {}


@pytest.fixture
def jobsup_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    jobsup_job_modules: list[str],
    jobsup_env: dict[str, str],
) -> Iterator[JobsupServer]:
    # The project's modules import as they do in the tests: from the rootdir
    # and the working directory (the jobsup command does not add either).
    paths = [str(request.config.rootpath), os.getcwd()]
    server = JobsupServer(
        tmp_path_factory.mktemp("jobsup"), jobsup_job_modules, jobsup_env, python_path=paths
    )
    try:
        yield server.start()
    finally:
        server.close()
        print(f"--- jobsup server log ({server.log_path}) ---\n{server.log()}")  # on failure


@pytest.fixture
def run_job(jobsup_server: JobsupServer) -> Callable[..., dict[str, Any]]:
    return jobsup_server.run_job


@pytest.fixture
def cancel_after(jobsup_server: JobsupServer) -> Callable[..., dict[str, Any]]:
    return jobsup_server.cancel_after
