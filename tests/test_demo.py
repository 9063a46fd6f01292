"""The quick start's second command, as a new user runs it."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT, free_port


def test_demo_runs_a_dry_run_to_completion(sqlite_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": sqlite_url, "PORT": str(free_port())}
    result = subprocess.run(
        [sys.executable, "-m", "supervisor", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "loaded group" in result.stdout
    assert "would be removed (dry run: nothing changed)" in result.stdout
