"""The Procfile's lines, run as a platform runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT


def _line(kind: str) -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{kind}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {kind}: line in the Procfile")


# The platform has the package installed; here, this interpreter's scripts are.
PATH = f"{Path(sys.executable).parent}:{os.environ['PATH']}"


def test_web_line_serves_on_port(make_server: Any) -> None:
    server = make_server(
        start=False, command=["sh", "-c", _line("web")], JOBSUP_JOB_MODULES="", PATH=PATH
    )
    server.start()
    assert server.client.get("/healthz").json()["status"] == "ok"
    assert server.stop() == 0


def test_web_line_forks_jobs_from_a_lean_template(make_server: Any) -> None:
    """Under the ``jobsup`` command, jobs fork from the job code alone.

    Neither the command line (run as a script, multiprocessing would have the
    forkserver import it, and all it imports) nor httpx's own command-line
    client (rich, click, pygments) is in the template every job child copies.
    """
    server = make_server(
        start=False,
        command=["sh", "-c", _line("web")],
        PATH=PATH,
        PYTHONPATH=str(ROOT),  # tests.jobs
    )
    server.start()
    names = ["removal.jobs", "httpx", "supervisor.cli", "httpx._main", "rich", "click"]
    job = server.wait_status(server.start_job({"type": "modules", "names": names}), "completed")
    assert job["result"] == {
        "removal.jobs": True,  # the job code is there, imported once
        "httpx": True,
        "supervisor.cli": False,
        "httpx._main": False,
        "rich": False,
        "click": False,
    }
    assert server.stop() == 0


def test_a_launcher_of_ones_own_keeps_what_it_imports_for_its_jobs(
    make_server: Any, tmp_path: Path
) -> None:
    """A script that registers job types, then calls ``supervisor.cli.main``, is
    not the ``jobsup`` command: each job child runs it again, and its types run."""
    (tmp_path / "launched_jobs.py").write_text(
        "from workers.registry import JobConfig, job_type\n"
        "class LaunchedConfig(JobConfig, tag='launched'):\n"
        "    n: int = 1\n"
        "@job_type(LaunchedConfig)\n"
        "def launched(ctx, config):\n"
        "    return {'n': config.n}\n"
    )
    (tmp_path / "launch.py").write_text(
        "import launched_jobs  # registers its job type\n"
        "from supervisor.cli import main\n"
        "if __name__ == '__main__':\n"
        "    main()\n"
    )
    server = make_server(
        start=False,
        command=[sys.executable, str(tmp_path / "launch.py"), "serve"],
        PYTHONPATH=f"{tmp_path}:{ROOT}",
    )
    server.start()
    job = server.wait_status(server.start_job({"type": "launched", "n": 5}), "completed")
    assert job["result"] == {"n": 5}
    assert server.stop() == 0


def test_release_line_migrates(sqlite_url: str) -> None:
    def release() -> str:
        env = {"DATABASE_URL": sqlite_url, "PATH": PATH}
        command = ["sh", "-c", _line("release")]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "applied" in release()
    assert "up to date" in release()


@pytest.mark.postgres
def test_web_and_worker_lines_share_the_work(pg_url: str, make_server: Any) -> None:
    web = make_server(
        start=False,
        command=["sh", "-c", _line("web")],
        DATABASE_URL=pg_url,
        JOBSUP_MAX_CONCURRENT_JOBS="0",
        PATH=PATH,
        PYTHONPATH=str(ROOT),  # tests.jobs
    )
    worker = make_server(
        start=False,
        command=["sh", "-c", _line("worker")],
        DATABASE_URL=pg_url,
        PATH=PATH,
        PYTHONPATH=str(ROOT),
    )
    web.start()
    worker.start()  # its health port: the PORT a platform gives it
    assert worker.client.get("/readyz").status_code == 200
    assert web.wait_status(web.start_job({"type": "quick"}), "completed")
    assert worker.stop() == 0
    assert web.stop() == 0
