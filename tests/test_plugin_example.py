"""The pytest plugin, as a job-type author uses it.

The example in docs/job-types.md (the ``checksums`` module, its pytest.ini
and its test file) is extracted from the page and run as its own pytest
session, so the page cannot drift from what works. The plugin is also loaded
in this project's own run: the last tests use its fixtures directly.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from supervisor.pytest_plugin import JobStartRefused, JobsupServer
from tests.conftest import ROOT

PAGE = ROOT / "docs" / "job-types.md"


def example_files() -> dict[str, str]:
    """Each fenced block of the page whose first line is ``# <file name>``."""
    files = {}
    for block in re.findall(r"```[a-z]*\n(.*?)```", PAGE.read_text(), flags=re.S):
        first, _, rest = block.partition("\n")
        name = first.removeprefix("# ").strip()
        if first.startswith("# ") and re.fullmatch(r"[\w.]+\.(py|ini)", name):
            files[name] = block if name.endswith(".py") else rest
    return files


def test_the_page_has_the_whole_example() -> None:
    assert set(example_files()) == {"checksums.py", "pytest.ini", "test_checksums.py"}


def test_the_documented_example_passes(tmp_path: Path) -> None:
    for name, text in example_files().items():
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "JOBSUP_"))}
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout, result.stdout


@pytest.fixture
def jobsup_job_modules() -> list[str]:
    return ["tests.jobs"]  # this project's test job types


def test_run_job_returns_the_final_job(run_job: Any) -> None:
    job = run_job("sleepy", {"steps": 2, "stepMs": 10})
    assert job["status"] == "completed"
    assert job["result"] == {"steps": 2}
    assert job["startedAt"] is not None
    assert job["completedAt"] is not None


def test_cancel_after_stops_a_running_job(cancel_after: Any) -> None:
    job = cancel_after(
        "sleepy", {"steps": 5, "stepMs": 60_000}, when=lambda j: j["progress"]["phase"]
    )
    assert job["status"] == "cancelled"
    assert job["cancel"]["mode"] == "cooperative"
    assert job["result"] == {"steps": 0}  # the partial result it had reported


def test_a_refused_start_says_why(run_job: Any) -> None:
    with pytest.raises(JobStartRefused) as refused:
        run_job("no_such_type", {})
    assert refused.value.status == 400
    assert refused.value.error["code"] == "invalid_field"


def test_the_server_has_its_own_token(jobsup_server: JobsupServer) -> None:
    assert jobsup_server.env["JOBSUP_TOKENS"] == f"admin:{jobsup_server.token}"
    assert jobsup_server.client.headers["Authorization"] == f"Bearer {jobsup_server.token}"
    assert jobsup_server.env["DATABASE_URL"].startswith("sqlite:///")
    assert jobsup_server.client.get("/readyz").status_code == 200
