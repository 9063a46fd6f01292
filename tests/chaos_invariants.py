"""Job-level invariants over a PostgreSQL database after a stalled or chaotic run.

- No final state is ever rewritten: a trigger installed before the run
  records every UPDATE of a row whose stored state is final.
- One final state per job: every final state a client was shown is the
  stored one.
- A cancel answered 200 ends as it answered (``cancelled``, or the job's own
  end when the two raced).
- At most one run of an exclusive key acts at a time: in the ``ticks``
  table (``tests.fence_jobs``), once a later run of a key has ticked, no
  earlier run of it ticks again; and no two jobs of one key were live at
  once in the jobs table.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from dataclasses import dataclass, field

import psycopg

FINAL = ("completed", "cancelled", "failed")

AUDIT = """
CREATE TABLE final_rewrites (
    job_id TEXT, old_status TEXT, new_status TEXT, old_owner TEXT, new_owner TEXT,
    old_attempts INTEGER, new_attempts INTEGER, at TIMESTAMPTZ DEFAULT clock_timestamp()
);
CREATE FUNCTION audit_final_rewrite() RETURNS trigger AS $$
BEGIN
    INSERT INTO final_rewrites (job_id, old_status, new_status, old_owner, new_owner,
                                old_attempts, new_attempts)
    VALUES (OLD.id, OLD.status, NEW.status, OLD.owner, NEW.owner, OLD.attempts, NEW.attempts);
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER audit_final_rewrite BEFORE UPDATE ON jobs FOR EACH ROW
    WHEN (OLD.status IN ('completed', 'cancelled', 'failed')
          AND (OLD.status, OLD.owner, OLD.attempts, OLD.result, OLD.error, OLD.cancel,
               OLD.completed_at, OLD.progress)
              IS DISTINCT FROM (NEW.status, NEW.owner, NEW.attempts, NEW.result, NEW.error,
                                NEW.cancel, NEW.completed_at, NEW.progress))
    EXECUTE FUNCTION audit_final_rewrite();
"""


def install_audit(url: str) -> None:
    """Call once the servers have created the jobs table, before any fault."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(AUDIT)


@dataclass
class Seen:
    """What clients were told, per job."""

    finals: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    cancels_200: dict[str, str] = field(default_factory=dict)

    def status(self, job_id: str, status: str) -> None:
        if status in FINAL:
            self.finals[job_id].add(status)

    def cancel_answer(self, job_id: str, code: int, status: str) -> None:
        self.status(job_id, status)
        if code == 200:
            self.cancels_200[job_id] = status


def stored(url: str) -> dict[str, tuple[str, str | None, int, int | None, int | None]]:
    """job id -> (status, exclusive key's group, attempts, started_at, completed_at)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT id, status, config, attempts, started_at, completed_at FROM jobs"
        ).fetchall()
    return {r[0]: (r[1], r[2], r[3], r[4], r[5]) for r in rows}


def violations(url: str, seen: Seen, keys: dict[str, str]) -> list[str]:
    """Every broken invariant, as text; ``keys`` maps job id -> exclusive key (if any)."""
    problems: list[str] = []
    jobs = stored(url)
    with psycopg.connect(url) as conn:
        rewrites = conn.execute("SELECT * FROM final_rewrites").fetchall()
        ticks = conn.execute("SELECT key, job_id, attempt FROM ticks ORDER BY id").fetchall()
    problems += [f"final state rewritten: {r}" for r in rewrites]
    for job_id, (status, *_rest) in jobs.items():
        if status not in FINAL:
            problems.append(f"job {job_id} never ended: {status}")
    for job_id, finals in seen.finals.items():
        status = jobs[job_id][0]
        if finals != {status}:
            problems.append(f"job {job_id}: clients saw {sorted(finals)}, stored {status}")
    for job_id, answered in seen.cancels_200.items():
        if jobs[job_id][0] != answered:
            problems.append(
                f"job {job_id}: cancel answered 200 {answered}, ended {jobs[job_id][0]}"
            )
    problems += _interleaved_runs(ticks)
    problems += _overlapping_jobs(jobs, keys)
    return problems


def _interleaved_runs(ticks: list[tuple[str | None, str, int]]) -> list[str]:
    """Per key (and per job): a run that was superseded never acts again."""
    problems = []
    current: dict[str, tuple[str, int]] = {}
    done: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for key, job_id, attempt in ticks:
        scope = key if key is not None else f"job:{job_id}"
        run = (job_id, attempt)
        if current.get(scope) == run:
            continue
        if run in done[scope]:
            problems.append(f"{scope}: run {run} acted again after a later run")
        if scope in current:
            done[scope].add(current[scope])
        current[scope] = run
    return problems


def _overlapping_jobs(
    jobs: dict[str, tuple[str, str | None, int, int | None, int | None]], keys: dict[str, str]
) -> list[str]:
    by_key: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for job_id, key in keys.items():
        _status, _config, _attempts, started, completed = jobs[job_id]
        if started is not None and completed is not None:
            by_key[key].append((started, completed, job_id))
    problems = []
    for key, spans in by_key.items():
        spans.sort()
        for (_s1, end1, a), (start2, _e2, b) in itertools.pairwise(spans):
            if start2 < end1:
                problems.append(f"{key}: jobs {a} and {b} were live at the same time")
    return problems


def removal_result_violations(url: str) -> list[str]:
    """Every removal job whose stored result disagrees with its history.

    The rule. ``R`` is the job's result's ``removedWhatsappIds``; ``S`` its
    SUCCESS rows (``job_id`` = the job), from every run it had: a job run
    again after a rescue carries its earlier runs' removals into its result.

    - Always: ``R`` has no duplicates and ``R`` is within ``S``.
    - A run that ended by its child's own word, read by its own front
      (completed, or cancelled at a cancel point or by SIGTERM), reports
      every batch: ``R`` = ``S``.
    - A run cut short (its child killed, or its front dead so the job was
      rescued, then cancelled or failed without running again) keeps the
      last partial result its front stored, which may lag the child by the
      batches after it: the rows ``R`` misses all come after those it lists.
    """
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT id, status, result, cancel, attempts FROM jobs WHERE type = 'removal_workflow'"
        ).fetchall()
        history = conn.execute(
            "SELECT job_id, whatsapp_id, at FROM removal_history WHERE outcome = 'SUCCESS'"
        ).fetchall()
    successes: dict[str, dict[str, int]] = defaultdict(dict)
    for job_id, wid, at in history:
        successes[job_id][wid] = at
    problems = []
    for job_id, status, result, cancel, attempts in rows:
        if status in FINAL:
            where = f"job {job_id} ({status}, attempt {attempts}, cancel {cancel})"
            removed = (json.loads(result) if result else None) or {}
            own_end = status == "completed" or (
                status == "cancelled"
                and json.loads(cancel or "{}").get("mode") in ("cooperative", "terminated")
            )
            problems += _result_against_history(
                where, removed.get("removedWhatsappIds", []), successes[job_id], own_end
            )
    return problems


def _result_against_history(
    where: str, removed: list[str], rows: dict[str, int], own: bool
) -> list[str]:
    missing = sorted(set(rows) - set(removed))
    problems = []
    if len(removed) != len(set(removed)):
        problems.append(f"{where}: result lists a member twice: {sorted(removed)}")
    if not set(removed) <= set(rows):
        problems.append(f"{where}: result lists removals without their row:"
                        f" {sorted(set(removed) - set(rows))}")  # fmt: skip
    if missing and own:
        problems.append(f"{where}: rows the result does not list: {missing}")
    latest = max((rows[wid] for wid in removed if wid in rows), default=0)
    if missing and not own and min(rows[wid] for wid in missing) < latest:
        problems.append(f"{where}: the result skips rows before ones it lists: {missing}")
    return problems
