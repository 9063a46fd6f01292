"""A job's captured output (stdout, stderr, ctx.log lines): stored, bounded, paged.

``job_logs`` holds the lines, numbered per job from 1; ``job_log_meta``
one row per job: the next number, the bytes kept, and what was dropped.
The per-job byte bound is kept here, when lines are written: the oldest
lines go first. Numbers keep counting past dropped lines, so a reader's
``after`` stays valid. Both tables are created by the jobs component's
migration 9 (``store.jobs.MIGRATIONS``).
"""

from __future__ import annotations

import msgspec

from workers.db import Database

SCHEMA = """
CREATE TABLE job_logs (
    job_id TEXT NOT NULL,
    line_no BIGINT NOT NULL,
    at BIGINT NOT NULL,
    stream TEXT NOT NULL,
    level TEXT,
    text TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (job_id, line_no)
);
CREATE TABLE job_log_meta (
    job_id TEXT PRIMARY KEY,
    next_line BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    dropped_lines BIGINT NOT NULL,
    dropped_bytes BIGINT NOT NULL
)
"""


class Line(msgspec.Struct, array_like=True, gc=False):
    """One captured line, as the front holds it until written."""

    at: int  # milliseconds since the epoch
    stream: str  # stdout, stderr or log
    level: str | None
    text: str

    @property
    def size(self) -> int:
        return len(self.text.encode()) + 1  # its newline counts


class LogLine(msgspec.Struct, rename="camel"):
    """One line of a job's log as served: its number, time, stream, level and text."""

    line: int
    at: int  # milliseconds since the epoch
    stream: str
    level: str | None
    text: str


class LogPage(msgspec.Struct, rename="camel"):
    lines: list[LogLine]
    next_after: int  # pass as ``after`` for the lines after this page
    dropped_lines: int  # how many of the oldest lines the bound dropped
    dropped_bytes: int


def append(
    db: Database,
    job_id: str,
    lines: list[Line],
    skipped_lines: int,
    skipped_bytes: int,
    limit: int,
) -> None:
    """Store ``lines`` after the job's last ones, then drop its oldest past ``limit`` bytes.

    ``skipped_*``: lines the front dropped before they were written (a flood
    faster than the writes); they take their numbers and count as dropped.
    """
    with db.transaction():
        row = db.one(
            "SELECT next_line, bytes, dropped_lines, dropped_bytes FROM job_log_meta"
            " WHERE job_id = ?",
            (job_id,),
        )
        first, kept, dropped_lines, dropped_bytes = row if row is not None else (1, 0, 0, 0)
        first += skipped_lines
        rows = [
            (job_id, first + i, line.at, line.stream, line.level, line.text, line.size)
            for i, line in enumerate(lines)
        ]
        db.executemany(
            "INSERT INTO job_logs (job_id, line_no, at, stream, level, text, size)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        kept += sum(r[6] for r in rows)
        dropped_lines += skipped_lines
        dropped_bytes += skipped_bytes
        if kept > limit:
            gone_lines, gone_bytes = _drop_oldest(db, job_id, kept - limit)
            kept -= gone_bytes
            dropped_lines += gone_lines
            dropped_bytes += gone_bytes
        values = (first + len(rows), kept, dropped_lines, dropped_bytes, job_id)
        if row is None:
            db.execute(
                "INSERT INTO job_log_meta (next_line, bytes, dropped_lines, dropped_bytes, job_id)"
                " VALUES (?, ?, ?, ?, ?)",
                values,
            )
        else:
            db.execute(
                "UPDATE job_log_meta SET next_line = ?, bytes = ?, dropped_lines = ?,"
                " dropped_bytes = ? WHERE job_id = ?",
                values,
            )


def _drop_oldest(db: Database, job_id: str, excess: int) -> tuple[int, int]:
    """Delete the job's oldest lines until ``excess`` bytes are gone: (lines, bytes)."""
    lines = size = 0
    last = None
    # Oldest first, in slices: a bound of a few MiB is a few thousand lines.
    after = 0
    while size < excess:
        rows = db.query(
            "SELECT line_no, size FROM job_logs WHERE job_id = ? AND line_no > ?"
            " ORDER BY line_no LIMIT 1000",
            (job_id, after),
        )
        if not rows:
            break
        for line_no, line_size in rows:
            last = line_no
            lines += 1
            size += line_size
            if size >= excess:
                break
        after = rows[-1][0]
    if last is not None:
        db.execute("DELETE FROM job_logs WHERE job_id = ? AND line_no <= ?", (job_id, last))
    return lines, size


def page(db: Database, job_id: str, after: int, limit: int) -> LogPage:
    """Lines numbered above ``after``, at most ``limit``; an empty page for a job with none.

    When lines were dropped and the page starts where they were, a marker
    line comes first, numbered as the last line dropped, saying how much.
    """
    meta = db.one(
        "SELECT dropped_lines, dropped_bytes FROM job_log_meta WHERE job_id = ?", (job_id,)
    )
    dropped_lines, dropped_bytes = meta if meta is not None else (0, 0)
    rows = db.query(
        "SELECT line_no, at, stream, level, text FROM job_logs WHERE job_id = ? AND line_no > ?"
        " ORDER BY line_no LIMIT ?",
        (job_id, after, limit),
    )
    lines = [LogLine(*row) for row in rows]
    # The marker takes the number of the last line dropped: the one before the first kept.
    first = db.one("SELECT MIN(line_no), MIN(at) FROM job_logs WHERE job_id = ?", (job_id,))
    marker_no = first[0] - 1 if dropped_lines and first is not None and first[0] else 0
    if after < marker_no:
        marker = LogLine(
            line=marker_no,
            at=first[1],
            stream="log",
            level="warning",
            text=f"[{dropped_lines} lines ({dropped_bytes} bytes) dropped: the job's log keeps"
            " its latest lines only (JOBSUP_JOB_LOG_BYTES)]",
        )
        lines = [marker, *lines[: limit - 1]]
    next_after = lines[-1].line if lines else after
    return LogPage(lines, next_after, dropped_lines, dropped_bytes)


def delete(db: Database, job_ids: list[str]) -> None:
    """Forget the logs of deleted jobs."""
    for job_id in job_ids:
        db.execute("DELETE FROM job_logs WHERE job_id = ?", (job_id,))
        db.execute("DELETE FROM job_log_meta WHERE job_id = ?", (job_id,))


def prune_orphans(db: Database) -> int:
    """Forget the logs of jobs no longer stored (pruned by age); how many jobs' logs."""
    # Every job with lines has a meta row: the lines go by their primary key.
    orphans = db.query("SELECT job_id FROM job_log_meta WHERE job_id NOT IN (SELECT id FROM jobs)")
    delete(db, [job_id for (job_id,) in orphans])
    return len(orphans)
