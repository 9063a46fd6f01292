"""The ``jobsup`` command's first minute: each startup failure is one line and its exit code.

Every test runs the real command in a subprocess, as a user would.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from supervisor.startup import (
    EXIT_DATABASE,
    EXIT_IN_USE,
    EXIT_OK,
    EXIT_PORT,
    EXIT_USAGE,
)
from tests.conftest import ROOT, free_port


def jobsup(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PORT": str(free_port()), **env}
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=90,
    )


def refused(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """The command exited ``code`` with one ``jobsup:`` line naming ``words``, no traceback."""
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert "Traceback" not in output, output
    lines = [line for line in result.stderr.splitlines() if line.startswith("jobsup: ")]
    assert len(lines) == 1, output
    for word in words:
        assert word in lines[0], output
    return lines[0]


def test_help_describes_every_subcommand() -> None:
    result = jobsup("--help")
    assert result.returncode == 0, result.stderr
    for command in ("serve", "worker", "demo", "migrate", "bench"):
        assert f"\n    {command} " in result.stdout, result.stdout
    assert "``" not in result.stdout  # no raw markup
    assert "exit codes" in result.stdout
    # The table is the server commands'; the client's 3 (a cancelled job) differs.
    assert "client commands" in result.stdout
    assert "docs/client.md" in result.stdout


@pytest.mark.parametrize(
    ("command", "variables"),
    [
        ("serve", ["PORT", "DATABASE_URL", "JOBSUP_JOB_MODULES", "JOBSUP_MIN_DELAY_MS"]),
        ("demo", ["PORT", "DATABASE_URL", "JOBSUP_HOST"]),
        ("migrate", ["DATABASE_URL", "JOBSUP_JOB_MODULES"]),
    ],
)
def test_each_subcommand_lists_the_variables_it_reads(command: str, variables: list[str]) -> None:
    result = jobsup(command, "--help")
    assert result.returncode == 0, result.stderr
    environment = result.stdout.split("environment:", 1)[1].split("exit codes", 1)[0]
    for variable in variables:
        assert variable in environment, result.stdout


def test_bench_help_is_the_suites() -> None:
    result = jobsup("bench", "--help")
    assert result.returncode == 0, result.stderr
    assert "--quick" in result.stdout
    assert "--only" in result.stdout


@pytest.mark.parametrize("port", ["99999", "0", "-1", "eighty"])
def test_a_port_outside_1_to_65535_is_refused(port: str, sqlite_url: str) -> None:
    refused(jobsup("serve", PORT=port, DATABASE_URL=sqlite_url), EXIT_USAGE, "PORT")


@pytest.mark.parametrize("port", ["99999", "0"])
def test_a_port_flag_outside_1_to_65535_is_refused(port: str, sqlite_url: str) -> None:
    result = jobsup("serve", "--port", port, DATABASE_URL=sqlite_url)
    assert result.returncode == EXIT_USAGE, result.stderr
    assert "--port" in result.stderr
    assert "outside 1-65535" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_in_use(sqlite_url: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = str(holder.getsockname()[1])
        line = refused(jobsup("serve", PORT=port, DATABASE_URL=sqlite_url), EXIT_PORT, port)
        assert "in use" in line
        refused(jobsup("demo", PORT=port, DATABASE_URL=sqlite_url), EXIT_PORT, port)


def test_a_port_taken_between_the_check_and_the_bind(sqlite_url: str) -> None:
    # The check before startup is skipped here, so uvicorn's own bind meets the
    # taken port after the lifespan has started: the same line and code.
    skip_check = "import supervisor.cli as c; c.check_port = lambda host, port: None; c.main()"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = str(holder.getsockname()[1])
        result = subprocess.run(
            [sys.executable, "-c", skip_check, "serve"],
            cwd=ROOT,
            env={**os.environ, "PORT": port, "DATABASE_URL": sqlite_url},
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert "in use" in refused(result, EXIT_PORT, port)


def test_an_unreachable_database() -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        url = f"postgresql://postgres:secret@127.0.0.1:{closed.getsockname()[1]}/jobsup"
        for command in ("serve", "migrate"):
            line = refused(jobsup(command, DATABASE_URL=url), EXIT_DATABASE, "database")
            assert "secret" not in line  # the password stays out of the message


@pytest.mark.postgres
def test_a_missing_postgresql_database() -> None:
    url = "postgresql://postgres@127.0.0.1:5432/firstuse_no_such_database"
    for command in ("serve", "migrate"):
        refused(jobsup(command, DATABASE_URL=url), EXIT_DATABASE, "does not exist")


def test_a_sqlite_file_that_cannot_be_created() -> None:
    url = "sqlite:////proc/no-such-dir/jobsup.db"
    for command in ("serve", "migrate"):
        refused(jobsup(command, DATABASE_URL=url), EXIT_DATABASE, "database")


def test_an_unimportable_job_module(sqlite_url: str, tmp_path: Path) -> None:
    refused(
        jobsup("serve", DATABASE_URL=sqlite_url, JOBSUP_JOB_MODULES="no_such_jobs"),
        EXIT_USAGE,
        "JOBSUP_JOB_MODULES",
        "no_such_jobs",
    )
    (tmp_path / "broken_jobs.py").write_text("import os\n\nraise RuntimeError('half done')\n")
    env = {"DATABASE_URL": sqlite_url, "JOBSUP_JOB_MODULES": "broken_jobs"}
    env["PYTHONPATH"] = str(tmp_path)
    for command in ("serve", "migrate"):
        line = refused(jobsup(command, **env), EXIT_USAGE, "broken_jobs", "half done")
        assert "broken_jobs.py:3" in line


def test_a_second_server_on_the_same_sqlite_file(make_server: Any, sqlite_url: str) -> None:
    first = make_server()
    line = refused(jobsup("serve", DATABASE_URL=sqlite_url), EXIT_IN_USE, "in use")
    assert f"pid {first.pid}" in line
    refused(jobsup("demo", DATABASE_URL=sqlite_url), EXIT_IN_USE, "SQLite")
    assert first.client.get("/readyz").status_code == 200  # the first one is left alone
    first.stop()
    second = make_server()  # the lock went with the first process
    assert second.client.get("/readyz").status_code == 200


@pytest.mark.postgres
def test_an_instance_id_held_by_a_live_instance(pg_url: str, make_server: Any) -> None:
    make_server(DATABASE_URL=pg_url, JOBSUP_INSTANCE_ID="web.1")
    result = jobsup("serve", DATABASE_URL=pg_url, JOBSUP_INSTANCE_ID="web.1")
    refused(result, EXIT_IN_USE, "JOBSUP_INSTANCE_ID=web.1")


def test_demo_twice_in_a_row_on_one_port(tmp_path: Path) -> None:
    # The same port and database both times, as a user runs it: the first
    # run's connections in TIME_WAIT must not make the second one refuse.
    port = str(free_port())
    for _ in range(2):
        result = jobsup("demo", cwd=tmp_path, PORT=port, DATABASE_URL="")
        assert result.returncode == EXIT_OK, result.stdout + result.stderr
        assert "would be removed" in result.stdout
    assert (tmp_path / "data" / "jobsup.db").exists()  # the default, relative to the cwd
