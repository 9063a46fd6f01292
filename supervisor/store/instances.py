"""Instances sharing one database: registration, heartbeats, and who is dead.

An instance is dead when its heartbeat is older than the node timeout, or at
once when it ran on this host and its process is gone (a restart after a
crash must not wait out the timeout to recover its jobs).
"""

from __future__ import annotations

import os

from workers.db import Database


def register(db: Database, instance_id: str, host: str, pid: int, now_ms: int) -> None:
    db.execute(
        "INSERT INTO instances (id, host, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?)",
        (instance_id, host, pid, now_ms, now_ms),
    )


def heartbeat(db: Database, instance_id: str, now_ms: int) -> bool:
    """Refresh this instance's heartbeat; False if others had declared it dead.

    Then its row is gone, and the caller lets its jobs go before registering again.
    """
    changed = db.execute(
        "UPDATE instances SET heartbeat_at = ? WHERE id = ?", (now_ms, instance_id)
    )
    return changed == 1


def unregister(db: Database, instance_id: str) -> None:
    db.execute("DELETE FROM instances WHERE id = ?", (instance_id,))


def _process_gone(pid: int) -> bool:
    if pid == os.getpid():
        return True  # our pid, but not us: an earlier run in this container
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _dead(their_host: str, pid: int, beat: int, host: str, now_ms: int, timeout_ms: int) -> bool:
    return beat < now_ms - timeout_ms or (their_host == host and _process_gone(pid))


def take_id(
    db: Database, instance_id: str, host: str, pid: int, now_ms: int, timeout_ms: int
) -> bool:
    """Register under ``instance_id`` unless a live instance holds it; atomic.

    A dead holder (an earlier life of a fixed JOBSUP_INSTANCE_ID) is replaced;
    its jobs are then rescued by the caller.
    """
    lock = " FOR UPDATE" if db.dialect == "postgresql" else ""
    with db.transaction():
        row = db.one(
            f"SELECT host, pid, heartbeat_at FROM instances WHERE id = ?{lock}", (instance_id,)
        )
        if row is not None and not _dead(row[0], row[1], row[2], host, now_ms, timeout_ms):
            return False
        db.execute("DELETE FROM instances WHERE id = ?", (instance_id,))
        register(db, instance_id, host, pid, now_ms)
    return True


def remove_dead(db: Database, me: str, host: str, now_ms: int, timeout_ms: int) -> list[str]:
    """Unregister dead instances; returns their ids (each is removed by one rescuer)."""
    rows = db.query("SELECT id, host, pid, heartbeat_at FROM instances WHERE id <> ?", (me,))
    dead: list[str] = []
    for instance_id, their_host, pid, beat in rows:
        if _dead(their_host, pid, beat, host, now_ms, timeout_ms):
            removed = db.execute(
                "DELETE FROM instances WHERE id = ? AND heartbeat_at = ?", (instance_id, beat)
            )
            if removed:
                dead.append(instance_id)
    return dead
