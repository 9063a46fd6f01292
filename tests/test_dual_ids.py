"""A member known by two ids (a phone id and a LID): matched by either, everywhere.

In process, on SQLite and PostgreSQL: the directory's refresh, the whitelist,
the queue's re-check, the history and the journal's settle all find a member
by the id it was first seen by or by its other one.
"""

from __future__ import annotations

import msgspec
import pytest

from tests.removal_world import (
    GROUP,
    current_ids,
    db,
    make_job,
    member,
    module_pg_url,
    put_group,
    queued_ids,
    url,
    workflow,
)
from workers import directory
from workers.db import Database
from workers.directory import journal
from workers.removal import run_workflow

__all__ = ["db", "make_job", "module_pg_url", "url"]  # fixtures, used by name

PN = "5511999990000@s.whatsapp.net"
LID = "123456789012345@lid"


def with_alt(wid: str, alt: str | None, **kwargs: float) -> directory.MemberIn:
    return msgspec.structs.replace(member(wid, **kwargs), alt_id=alt)  # type: ignore[arg-type]


def test_a_member_switching_to_its_lid_keeps_its_key_and_gains_the_other_id(db: Database) -> None:
    put_group(db, [with_alt(PN, None, idle_days=100)])
    put_group(db, [with_alt(LID, PN, idle_days=100)])  # the group now speaks LIDs
    members = directory.list_members(db, GROUP, include_removed=True)
    assert [(m.whatsapp_id, m.alt_id, m.removed_at) for m in members] == [(PN, LID, None)]
    view = msgspec.json.decode(msgspec.json.encode(directory.list_members(db, GROUP)))
    assert view[0]["altId"] == LID  # and absent for a member whose other id is unknown
    assert directory.resolve_ids(db, GROUP, [PN, LID, "other@lid"]) == {PN: PN, LID: PN}


def test_the_same_person_listed_twice_by_its_two_ids_is_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="duplicate"):
        put_group(db, [with_alt(LID, PN), with_alt(PN, None)])


def test_a_whitelist_entry_by_the_other_id_protects_the_member(db: Database) -> None:
    put_group(db, [with_alt(LID, PN, idle_days=100), with_alt("777@lid", None, idle_days=100)])
    directory.set_whitelist(db, GROUP, [PN])
    [protected, other] = sorted(directory.list_members(db, GROUP), key=lambda m: m.whatsapp_id)
    assert (protected.whatsapp_id, protected.whitelisted) == (LID, True)
    assert (other.whatsapp_id, other.whitelisted) == ("777@lid", False)
    summary = directory.group_summary(db, GROUP, 30 * 86_400_000, directory.current_ms())
    assert summary is not None
    assert summary.inactive_count == 1


def test_history_rows_carry_both_ids(db: Database, make_job: object) -> None:
    put_group(db, [with_alt(LID, PN, idle_days=100)])
    job = make_job()  # type: ignore[operator]
    from workers.gateways.local import LocalGateway

    run_workflow(job.ctx, db, LocalGateway(db), workflow())
    [record] = directory.removal_history(db, GROUP)
    assert (record.whatsapp_id, record.alt_id, record.outcome) == (LID, PN, "SUCCESS")
    assert queued_ids(db) == []


def test_leftover_intents_settle_against_a_list_in_the_other_form(db: Database) -> None:
    put_group(db, [with_alt(PN, LID, idle_days=100), with_alt("5511@s.whatsapp.net", None)])
    with db.transaction():
        journal.write_intents(
            db, GROUP, {PN: "inactive", "5511@s.whatsapp.net": "inactive"},
            job_id="job-1", attempt=1, now_ms=directory.current_ms(),
        )  # fmt: skip
    # The gateway now lists the first member by its LID only: still present.
    with db.transaction():
        settled = journal.settle_leftovers(db, GROUP, [with_alt(LID, None)], directory.current_ms())
    assert settled.removed == {"5511@s.whatsapp.net": "inactive"}
    assert current_ids(db) == [PN]
