"""The removal domain's data: groups, members, whitelist, removal queue and history.

It lives in the jobs database (component "directory" of the migrations). The
front process uses what is exported here; the removal jobs also use
``removal.directory.queue`` and ``removal.directory.journal``.
"""

from removal.directory.groups import GroupInUse, delete_group, list_groups, whitelist
from removal.directory.history import (
    UnknownCursor,
    history_page,
    known_group,
    outcomes_of_job,
    removal_history,
)
from removal.directory.members import (
    UnknownGroup,
    count_inactive,
    first_seen,
    group_exists,
    group_summary,
    is_inactive,
    list_members,
    mark_removed,
    put_members,
    resolve_ids,
    set_whitelist,
    upsert_group,
)
from removal.directory.schema import MIGRATIONS
from removal.directory.shapes import (
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
    "GroupInUse",
    "GroupSummary",
    "MemberIn",
    "MemberView",
    "RemovalRecord",
    "UnknownCursor",
    "UnknownGroup",
    "WhitelistIn",
    "count_inactive",
    "current_ms",
    "delete_group",
    "first_seen",
    "from_ms",
    "group_exists",
    "group_summary",
    "history_page",
    "is_inactive",
    "known_group",
    "list_groups",
    "list_members",
    "mark_removed",
    "outcomes_of_job",
    "put_members",
    "removal_history",
    "resolve_ids",
    "set_whitelist",
    "to_ms",
    "upsert_group",
    "whitelist",
]
