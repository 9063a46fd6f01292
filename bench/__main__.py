"""python -m bench: run the figures, print one table, optionally write the raw figures."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.figures import NAMES, Figure, select
from bench.session import Session
from bench.stats import Row, format_table

log = logging.getLogger("bench")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts (CI, smoke test)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the raw figures here")
    parser.add_argument(
        "--only", metavar="NAME[,NAME]", help=f"run only these figures ({','.join(NAMES)})"
    )
    parser.add_argument("--no-redis", action="store_true", help="skip the RQ and Celery baselines")
    parser.add_argument(
        "--workdir", type=Path, help="keep databases and server logs here (default: a temp dir)"
    )
    parser.add_argument(
        "--plot", type=Path, metavar="DIR", help="draw PNG charts here (needs matplotlib)"
    )
    return parser.parse_args(argv)


def _machine(quick: bool) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "generator": "wrk" if shutil.which("wrk") else "httpx",
        "quick": quick,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _run_figure(figure: Figure, session: Session) -> list[Row]:
    began = time.perf_counter()
    log.info("figure %s", figure.name)
    try:
        rows = figure.run(session)
    except Exception as exc:
        log.exception("figure %s failed", figure.name)
        error = {"error": f"{type(exc).__name__}: {exc}"}
        rows = [Row(figure.name, "-", None, "-", note=error["error"], passed=False, extra=error)]
    log.info("figure %s took %.1f s", figure.name, time.perf_counter() - began)
    return rows


def run(figures: list[Figure], session: Session) -> list[Row]:
    rows: list[Row] = []
    try:
        for i, figure in enumerate(figures):
            rows += _run_figure(figure, session)
            session.release(set().union(*(f.needs for f in figures[i + 1 :])))
    finally:
        session.release()
    return rows


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="bench: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        figures = select(args.only.split(",") if args.only else None)
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    machine = _machine(args.quick)
    with ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        workdir.mkdir(parents=True, exist_ok=True)
        rows = run(figures, Session(workdir, args.quick, redis=not args.no_redis))
    print(
        f"jobsup bench: Python {machine['python']}, {machine['cpus']} CPUs, "
        f"load {machine['loadavg'][0]:.2f}, {machine['generator']}, "
        f"{'quick' if args.quick else 'full'} run"
    )
    print(format_table(rows))
    if args.json:
        report = {"machine": machine, "rows": [r.as_dict() for r in rows]}
        args.json.write_text(json.dumps(report, indent=2, default=str))
    if args.plot:
        from bench.plot import plot

        for path in plot([r.as_dict() for r in rows], args.plot):
            print(f"bench: wrote {path}", file=sys.stderr)
    # Missed targets are the table's news; only a figure that could not run fails the command.
    return 1 if any("error" in r.extra for r in rows) else 0


# The guard matters: the bare-forkserver baseline preloads this module.
if __name__ == "__main__":
    sys.exit(main())
