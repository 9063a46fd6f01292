"""The job record, as kept in the table, written to the store and served."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import Any

import msgspec

from supervisor.state import JobStatus


def now() -> datetime:
    return datetime.now(UTC)


def new_job_id() -> str:
    """Opaque to clients; time-ordered, so ids sort like creation times."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(6)}"


class Progress(msgspec.Struct, rename="camel"):
    processed: int = 0
    total: int | None = None
    message: str | None = None
    phase: str | None = None


class CancelInfo(msgspec.Struct, rename="camel"):
    requested_at: datetime
    reason: str  # "user" or "shutdown"
    mode: str | None = None  # CancelMode, once the job has stopped
    exited_at: datetime | None = None


class Job(msgspec.Struct, rename="camel"):
    id: str
    type: str
    status: JobStatus
    config: msgspec.Raw  # the job's config as JSON, as it was accepted
    progress: Progress
    created_at: datetime
    result: Any = None
    error: dict[str, Any] | None = None
    cancel: CancelInfo | None = None
    pid: int | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    owner: str | None = None  # the instance running it
    attempts: int = 0


json_encoder = msgspec.json.Encoder()
