"""The audit trail's record: who did what to what, from where, when, and how it ended.

An entry is made for every start, cancel, group or whitelist change,
session login and logout, and refused credential. It names the caller by
its token's name, role and fingerprint (never the token), and the peer
address the request came from. Entries are written through the store
(``supervisor.store.access``) and pruned with the jobs (``JOBSUP_RETENTION_DAYS``).
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from supervisor.credentials import Caller
from supervisor.job import new_job_id, now


class AuditEntry(msgspec.Struct, rename="camel", gc=False):
    id: str  # time-ordered, like a job id: the paging cursor
    at: datetime
    who: str  # the token's name; "anonymous" when no credential was accepted
    role: str | None
    fingerprint: str | None
    peer: str | None
    action: str  # "job.start", "job.cancel", "group.put", "auth.failed", ...
    target: str | None  # the job id, group id, ... the action was on
    outcome: int  # the HTTP status answered


class AuditFilter(msgspec.Struct, kw_only=True):
    action: str | None = None
    who: str | None = None  # a token's name or fingerprint
    since: datetime | None = None
    until: datetime | None = None
    before: str | None = None  # cursor: an entry id; only older entries are listed
    limit: int = 50


def entry(
    caller: Caller | None, peer: str | None, action: str, target: str | None, outcome: int
) -> AuditEntry:
    return AuditEntry(
        id=new_job_id(),
        at=now(),
        who=caller.name if caller is not None else "anonymous",
        role=caller.role if caller is not None else None,
        fingerprint=(caller.fingerprint or None) if caller is not None else None,
        peer=peer,
        action=action,
        target=target,
        outcome=outcome,
    )
