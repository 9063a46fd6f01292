"""The bench's webhook figure runs end to end in quick mode (no speed asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_quick_webhooks_figure_prints_its_rows(tmp_path: Path) -> None:
    report = tmp_path / "bench.json"
    command = [sys.executable, "-m", "bench", "--quick", "--only", "webhooks", "--no-redis"]
    result = subprocess.run(
        [*command, "--json", str(report), "--workdir", str(tmp_path / "work")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(report.read_text())["rows"]
    assert [(r["figure"], r["baseline_name"]) for r in rows] == [
        ("status during 1,000 webhooks", "jobsup idle"),
        ("status during 1,000 webhooks", "the same burst, ignored (HTTP alone)"),
        ("webhook delivery, burst of 1,000", "- (50 connections)"),
    ]
    first = rows[0]
    # Every delivery answered 200 and written: 1,000 new members beside the admin.
    assert (first["extra"]["failed"], first["extra"]["members"]) == (0, 1001)
    assert first["verdict"] in ("PASS", "FAIL")
    assert 0 < first["jobsup"]["p50"] <= first["jobsup"]["p99"]
