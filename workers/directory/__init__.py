"""The removal domain's data: groups, members, whitelist, removal queue and history.

It lives in the jobs database (component "directory" of the migrations). The
front process uses what is exported here; the removal jobs also use
``workers.directory.queue`` and ``workers.directory.journal``.
"""

from workers.directory.history import removal_history
from workers.directory.members import (
    UnknownGroup,
    count_inactive,
    group_exists,
    group_summary,
    is_inactive,
    list_members,
    mark_removed,
    put_members,
    set_whitelist,
    upsert_group,
)
from workers.directory.schema import MIGRATIONS
from workers.directory.shapes import (
    GroupIn,
    GroupSummary,
    MemberIn,
    MemberView,
    RemovalRecord,
    WhitelistIn,
    current_ms,
    from_ms,
    to_ms,
)

__all__ = [
    "MIGRATIONS",
    "GroupIn",
    "GroupSummary",
    "MemberIn",
    "MemberView",
    "RemovalRecord",
    "UnknownGroup",
    "WhitelistIn",
    "count_inactive",
    "current_ms",
    "from_ms",
    "group_exists",
    "group_summary",
    "is_inactive",
    "list_members",
    "mark_removed",
    "put_members",
    "removal_history",
    "set_whitelist",
    "to_ms",
    "upsert_group",
]
