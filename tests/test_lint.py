"""The code base stays clean under the project's ruff configuration."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_ruff_check() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
