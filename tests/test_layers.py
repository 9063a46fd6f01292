"""Layers point one way: the supervisor names no job type, the child runtime no web layer."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The old names of the removal domain's modules, kept importable for job
# modules written against them: each is the domain module itself.
SHIMS = {
    "workers/removal.py",
    "workers/removal_steps.py",
    "workers/directory.py",
    "workers/gateways.py",
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _offenders(package: str, forbidden: tuple[str, ...], skip: set[str]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if any(relative == s or relative.startswith(s + "/") for s in skip):
            continue
        bad = {n for n in _imports(path) if n.split(".")[0] in forbidden or n.startswith(forbidden)}
        if bad:
            found[relative] = bad
    return found


def test_the_supervisor_imports_no_job_type() -> None:
    domain = ("removal", "workers.removal", "workers.directory", "workers.gateways")
    assert _offenders("supervisor", domain, set()) == {}


def test_the_child_runtime_imports_neither_the_web_layer_nor_a_domain() -> None:
    assert _offenders("workers", ("supervisor", "removal"), SHIMS) == {}
