"""The benchmark suite runs end to end in quick mode.

It proves the suite works; it asserts no speed (targets are read from the
table, never timed in tests). The Redis-backed baselines are skipped so the
test needs nothing beyond the project's dev extra.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_quick_start_and_cancel_print_the_table(tmp_path: Path) -> None:
    report = tmp_path / "bench.json"
    command = [sys.executable, "-m", "bench", "--quick", "--only", "start,cancel", "--no-redis"]
    # The charts need matplotlib, which only the bench extra brings.
    plots = importlib.util.find_spec("matplotlib") is not None
    if plots:
        command += ["--plot", str(tmp_path / "plots")]
    result = subprocess.run(
        [*command, "--json", str(report), "--workdir", str(tmp_path / "work")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    start = [r for r in rows if r[:2] == ["start", "latency"]]
    cancel = [r for r in rows if r[:2] == ["cancel", "latency"]]
    assert [r[7] for r in start] == ["forkserver", "RQ", "Celery"]
    assert [r[7] for r in cancel] == ["Event.set", "RQ", "Celery"]
    # Measured against the bare forkserver: numbers and a verdict, not "n/a".
    assert start[0][-1] in ("PASS", "FAIL")
    assert "unavailable: skipped: --no-redis" in result.stdout
    figures = json.loads(report.read_text())["rows"]
    assert {row["figure"] for row in figures} == {"start latency", "cancel latency"}
    ours = figures[0]["jobsup"]
    assert ours["n"] == 20
    assert 0 < ours["p50"] <= ours["p99"] <= ours["p999"]
    if plots:
        charts = sorted(p.name for p in (tmp_path / "plots").iterdir())
        assert charts == ["cancel-latency.png", "start-latency.png"]
