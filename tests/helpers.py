"""Test data: groups with members of known activity."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from supervisor.job import Job, Progress, new_job_id, now
from supervisor.state import JobStatus
from workers.db import connect

DAY_MS = 24 * 3600 * 1000
WINDOW_MS = 30 * DAY_MS


def iso_days_ago(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).isoformat()


def group_body(inactive: int, active: int = 2, admins_inactive: int = 1) -> dict[str, Any]:
    """Members named in-N (inactive 90 days), ac-N (active today), ad-N (inactive admins)."""
    members = [
        {
            "whatsappId": f"in-{i:03d}",
            "joinedAt": iso_days_ago(200),
            "lastActiveAt": iso_days_ago(90),
        }
        for i in range(inactive)
    ]
    members += [
        {
            "whatsappId": f"ac-{i:03d}",
            "joinedAt": iso_days_ago(200),
            "lastActiveAt": iso_days_ago(0),
        }
        for i in range(active)
    ]
    members += [
        {"whatsappId": f"ad-{i:03d}", "isAdmin": True, "joinedAt": iso_days_ago(200)}
        for i in range(admins_inactive)
    ]
    return {"name": "test group", "members": members}


def removal(group: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "type": "removal_workflow",
        "groupWaId": group,
        "batchSize": 2,
        "delayMs": 0,
        "dryRun": False,
        "inactivityWindowMs": WINDOW_MS,
    }
    body.update(overrides)
    return body


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (a zombie is dead for our purposes)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False  # reaped between the two looks


def pending_job(type_: str = "quick") -> Job:
    """A new pending job with an empty config, as the service would insert it."""
    return Job(
        id=new_job_id(),
        type=type_,
        status=JobStatus.PENDING,
        config=msgspec.Raw(b"{}"),
        progress=Progress(),
        created_at=now(),
    )


def proc_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, session id) of a live process, None if it is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(") ", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[3])


def session_pids(leader: int) -> list[int]:
    """Every live process of the session ``leader`` started (the server's, all of it)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat is not None and stat[1] == leader:
                pids.append(int(entry))
    return pids


def rows(url: str, sql: str, *params: Any) -> list[dict[str, Any]]:
    db = connect(url)
    try:
        cursor = db.conn.execute(db._sql(sql), params)
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    finally:
        db.close()
