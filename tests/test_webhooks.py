"""Evolution API webhook deliveries, through a real server: activity and membership.

Payloads are the shapes of Evolution API v2 (docs: the reference on its
webhooks): ``messages.upsert`` with ``key.participant``/``participantAlt``,
``group-participants.update`` with participants as strings (up to 2.3.5) or
objects (2.3.6 and later), ``groups.upsert``; the plain path and the
``byEvents`` one. Deliveries repeated and out of order change nothing they
should not; a delivery without the secret writes nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest

from tests.conftest import FAST, ROOT, Server, free_port, wait_until

SECRET = "s3cr3t-for-tests"
GROUP = "120363295648424210@g.us"
PN = "5511999990000@s.whatsapp.net"
LID = "123456789012345@lid"
OTHER = "5511988887777@s.whatsapp.net"
# Event times, Unix seconds: an hour ago, so that the steps after it are in the past too.
T0 = int(time.time()) - 3600


def iso_s(seconds: float) -> str:
    """A time as the API writes it (ISO 8601, milliseconds, Z); Evolution's date_time too."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def message(sender: str, at: int = T0, alt: str | None = None, **key: Any) -> dict[str, Any]:
    k: dict[str, Any] = {"remoteJid": GROUP, "fromMe": False, "id": f"3EB0{at}", **key}
    k["participant"] = sender
    if alt is not None:
        k["participantAlt"] = alt
    return {
        "event": "messages.upsert",
        "instance": "jobsup",
        "data": {
            "key": k,
            "pushName": "Bob",
            "status": "DELIVERY_ACK",
            "message": {"conversation": "hi"},
            "messageType": "conversation",
            "messageTimestamp": at,
            "instanceId": "b1c2",
            "source": "android",
        },
        "destination": "http://jobsup/webhooks/evolution",
        "date_time": iso_s(at),
        "sender": "5511900000000@s.whatsapp.net",
        "server_url": "http://evolution:8080",
        "apikey": None,
    }


def participants(action: str, people: list[Any], at: float) -> dict[str, Any]:
    return {
        "event": "group-participants.update",
        "instance": "jobsup",
        "data": {"id": GROUP, "author": OTHER, "participants": people, "action": action},
        "date_time": iso_s(at),
        "sender": "5511900000000@s.whatsapp.net",
        "server_url": "http://evolution:8080",
        "apikey": None,
    }


@pytest.fixture
def hooked(make_server: Callable[..., Server]) -> Server:
    server = make_server(JOBSUP_WEBHOOK_SECRET=SECRET)
    # The group as Evolution announces it, before the events of the tests.
    ok(server, groups_upsert(GROUP, [{"id": PN, "admin": None}], T0 - 100))
    return server


def groups_upsert(group: str, people: list[Any], at: float) -> dict[str, Any]:
    return {
        "event": "groups.upsert",
        "instance": "jobsup",
        "data": [{"id": group, "subject": "Book club", "participants": people}],
        "date_time": iso_s(at),
    }


def put_group(server: Server, members: list[dict[str, Any]]) -> None:
    response = server.client.put(f"/admin/groups/{GROUP}", json={"name": "g", "members": members})
    assert response.status_code == 200, response.text


def deliver(
    server: Server, body: dict[str, Any], path: str = "/webhooks/evolution", secret: str = SECRET
) -> httpx.Response:
    return server.client.post(path, json=body, headers={"x-webhook-secret": secret})


def ok(server: Server, body: dict[str, Any], path: str = "/webhooks/evolution") -> dict[str, Any]:
    response = deliver(server, body, path)
    assert response.status_code == 200, response.text
    return dict(response.json())


def members(server: Server) -> dict[str, dict[str, Any]]:
    response = server.client.get(f"/admin/groups/{GROUP}/members?includeRemoved=true")
    assert response.status_code == 200, response.text
    return {m["whatsappId"]: m for m in response.json()}


def test_a_group_message_marks_its_sender_active_by_either_id(hooked: Server) -> None:
    # The group speaks LIDs: the sender is the LID, the phone id beside it.
    answer = ok(hooked, message(LID, alt=PN))
    assert answer == {"event": "messages.upsert", "applied": 1}
    member = members(hooked)[PN]
    assert member["lastActiveAt"] == iso_s(T0)
    assert member["altId"] == LID  # learnt from the delivery
    # Later, by the LID alone, with a device suffix.
    ok(hooked, message("123456789012345:12@lid", at=T0 + 60))
    assert members(hooked)[PN]["lastActiveAt"] == iso_s(T0 + 60)


def test_direct_own_and_unknown_group_messages_write_nothing(hooked: Server) -> None:
    direct = message(PN)
    direct["data"]["key"] = {"remoteJid": PN, "fromMe": False, "id": "X"}
    assert ok(hooked, direct)["ignored"] == "not a group message"
    assert ok(hooked, message(PN, fromMe=True))["ignored"] == "the instance's own message"
    elsewhere = message(PN)
    elsewhere["data"]["key"]["remoteJid"] = "999@g.us"
    assert ok(hooked, elsewhere)["applied"] == 0
    assert members(hooked)[PN]["lastActiveAt"] is None
    assert ok(hooked, {"event": "connection.update", "data": {"state": "open"}}) == {
        "event": "connection.update",
        "applied": 0,
        "ignored": "event not used",
    }


def test_participants_as_strings_and_as_objects(hooked: Server) -> None:
    # Evolution 2.3.5: strings.
    ok(hooked, participants("add", [OTHER], T0))
    ok(hooked, participants("promote", [OTHER], T0 + 1))
    assert members(hooked)[OTHER]["isAdmin"] is True
    assert members(hooked)[OTHER]["joinedAt"] == iso_s(T0)
    # Evolution 2.3.6+: objects; the LID with the phone id beside it.
    ok(
        hooked,
        participants("demote", [{"id": "777@lid", "phoneNumber": OTHER, "admin": None}], T0 + 2),
    )
    assert (members(hooked)[OTHER]["isAdmin"], members(hooked)[OTHER]["altId"]) == (
        False,
        "777@lid",
    )
    ok(hooked, participants("remove", [{"id": LID, "phoneNumber": PN, "admin": None}], T0 + 3))
    gone = members(hooked)[PN]
    assert (gone["removedAt"], gone["altId"]) == (iso_s(T0 + 3), LID)
    # A newcomer known only by objects, an admin from the start.
    ok(hooked, participants("add", [{"id": "888@lid", "lid": None, "admin": "admin"}], T0 + 4))
    assert members(hooked)["888@lid"]["isAdmin"] is True


def test_the_by_events_paths(hooked: Server) -> None:
    ok(hooked, message(PN), "/webhooks/evolution/messages-upsert")
    ok(hooked, participants("add", [OTHER], T0), "/webhooks/evolution/group-participants-update")
    seen = members(hooked)
    assert (seen[PN]["lastActiveAt"], seen[OTHER]["removedAt"]) == (iso_s(T0), None)
    # The body's event and the path must agree; other events are ignored.
    response = deliver(hooked, message(PN), "/webhooks/evolution/groups-upsert")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "event"
    assert ok(hooked, {"data": {}}, "/webhooks/evolution/connection-update")["applied"] == 0


def test_repeated_and_late_deliveries_never_go_back(hooked: Server) -> None:
    repeated_and_late(hooked)


@pytest.mark.postgres
def test_repeated_and_late_deliveries_on_postgresql(
    make_server: Callable[..., Server], pg_url: str
) -> None:
    server = make_server(DATABASE_URL=pg_url, JOBSUP_WEBHOOK_SECRET=SECRET)
    ok(server, groups_upsert(GROUP, [{"id": PN, "admin": None}], T0 - 100))
    repeated_and_late(server)


def repeated_and_late(hooked: Server) -> None:
    newer, older = message(PN, at=T0 + 100), message(PN, at=T0)
    for body in (newer, newer, older, newer):
        ok(hooked, body)
    assert members(hooked)[PN]["lastActiveAt"] == iso_s(T0 + 100)

    # Left at T0+200; then the add of T0+150 arrives late (a retry): still gone.
    ok(hooked, participants("remove", [PN], T0 + 200))
    ok(hooked, participants("add", [PN], T0 + 150))
    ok(hooked, participants("remove", [PN], T0 + 200))  # and the remove again
    assert members(hooked)[PN]["removedAt"] == iso_s(T0 + 200)
    # A message sent before the removal, delivered after it, does not bring them back.
    ok(hooked, message(PN, at=T0 + 180))
    assert members(hooked)[PN]["removedAt"] == iso_s(T0 + 200)

    # Back at T0+300: a new member, whose earlier activity no longer counts.
    ok(hooked, participants("add", [PN], T0 + 300))
    back = members(hooked)[PN]
    assert (back["removedAt"], back["joinedAt"], back["lastActiveAt"]) == (
        None,
        iso_s(T0 + 300),
        None,
    )
    # The remove of T0+200 delivered once more: undoes nothing newer.
    ok(hooked, participants("remove", [PN], T0 + 200))
    assert members(hooked)[PN]["removedAt"] is None
    # A removal of someone never seen is remembered, so that its late add is refused.
    ok(hooked, participants("remove", ["999@lid"], T0 + 500))
    ok(hooked, participants("add", ["999@lid"], T0 + 400))
    assert members(hooked)["999@lid"]["removedAt"] == iso_s(T0 + 500)


def test_a_time_ahead_of_the_clock_counts_as_now(hooked: Server) -> None:
    before = time.time()
    ok(hooked, message(PN, at=int(time.time()) + 365 * 86400))
    stamp = datetime.fromisoformat(members(hooked)[PN]["lastActiveAt"]).timestamp()
    assert before - 1 <= stamp <= time.time() + 1


def test_groups_upsert_registers_the_group_and_its_members(hooked: Server) -> None:
    new_group = "120363000000000001@g.us"
    body = {
        "event": "groups.upsert",
        "instance": "jobsup",
        "data": [
            {
                "id": new_group,
                "subject": "Book club",
                "participants": [
                    {"id": PN, "lid": LID, "admin": "superadmin"},
                    {"id": "555@lid", "phoneNumber": OTHER, "admin": None},
                ],
            }
        ],
        "date_time": iso_s(T0),
    }
    assert ok(hooked, body, "/webhooks/evolution/groups-upsert")["applied"] == 1
    group = hooked.client.get(f"/admin/groups/{new_group}").json()
    assert (group["name"], group["memberCount"], group["adminCount"]) == ("Book club", 2, 1)
    listed = {
        m["whatsappId"]: m["altId"]
        for m in hooked.client.get(f"/admin/groups/{new_group}/members").json()
    }
    assert listed == {PN: LID, "555@lid": OTHER}
    # Later metadata without the second one (by its phone id this time): they left then.
    ok(hooked, groups_upsert(new_group, [{"id": LID, "phoneNumber": PN, "admin": "admin"}], T0 + 5))
    everyone = hooked.client.get(f"/admin/groups/{new_group}/members?includeRemoved=true").json()
    assert {m["whatsappId"]: m["removedAt"] for m in everyone} == {
        PN: None,
        "555@lid": iso_s(T0 + 5),
    }
    # And an older copy of the first metadata, delivered late, brings nobody back.
    ok(hooked, body, "/webhooks/evolution/groups-upsert")
    everyone = hooked.client.get(f"/admin/groups/{new_group}/members?includeRemoved=true").json()
    assert {m["whatsappId"]: m["removedAt"] for m in everyone} == {
        PN: None,
        "555@lid": iso_s(T0 + 5),
    }


def test_a_wrong_or_missing_secret_is_refused_and_writes_nothing(hooked: Server) -> None:
    for secret in ("wrong", "", SECRET + "x"):
        response = deliver(hooked, message(PN), secret=secret)
        assert response.status_code == 401, response.text
        assert response.json()["error"]["field"] == "X-Webhook-Secret"
    response = hooked.client.post("/webhooks/evolution", json=message(PN))
    assert response.status_code == 401
    assert members(hooked)[PN]["lastActiveAt"] is None


def test_without_a_secret_configured_the_webhooks_refuse(server: Server) -> None:
    response = server.client.post(
        "/webhooks/evolution", json=message(PN), headers={"x-webhook-secret": ""}
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "webhooks_not_configured"


def test_malformed_deliveries_name_the_field_and_write_nothing(hooked: Server) -> None:
    response = hooked.client.post(
        "/webhooks/evolution",
        content=b"{not json",
        headers={"x-webhook-secret": SECRET, "content-type": "application/json"},
    )
    assert response.status_code == 400
    bad = participants("remove", [PN], T0)
    bad["data"]["participants"] = PN
    response = deliver(hooked, bad)
    assert (response.status_code, response.json()["error"]["field"]) == (400, "data.participants")
    bad = participants("remove", [PN, {"phoneNumber": OTHER}], T0)
    response = deliver(hooked, bad)
    assert (response.status_code, response.json()["error"]["field"]) == (
        400,
        "data.participants[1].id",
    )
    assert members(hooked)[PN]["removedAt"] is None  # the valid first one neither


KEY = "jwt-signing-key-for-the-tests-32-bytes-or-more"


def bearer(key: str, exp_in: float) -> dict[str, str]:
    now = int(time.time())
    claims = {"iat": now, "exp": int(now + exp_in), "app": "evolution", "action": "webhook"}
    return {"authorization": f"Bearer {jwt.encode(claims, key, algorithm='HS256')}"}


def test_a_jwt_signed_with_the_key_and_not_expired(make_server: Callable[..., Server]) -> None:
    server = make_server(JOBSUP_WEBHOOK_JWT_KEY=KEY)
    put_group(server, [{"whatsappId": PN, "joinedAt": iso_s(T0 - 86400)}])
    post = server.client.post
    assert (
        post("/webhooks/evolution", json=message(PN), headers=bearer(KEY, 600)).status_code == 200
    )
    assert members(server)[PN]["lastActiveAt"] == iso_s(T0)
    late = message(PN, at=T0 + 10)
    for headers in (
        bearer(KEY, -600),
        bearer("another-key-also-long-enough-for-hs256!", 600),
        {"authorization": "Bearer x"},
    ):
        response = post("/webhooks/evolution", json=late, headers=headers)
        assert (response.status_code, response.json()["error"]["field"]) == (401, "Authorization")
    expired = post("/webhooks/evolution", json=late, headers=bearer(KEY, -600))
    assert "expired" in expired.json()["error"]["message"]
    assert members(server)[PN]["lastActiveAt"] == iso_s(T0)


def test_both_configured_need_both(make_server: Callable[..., Server]) -> None:
    server = make_server(JOBSUP_WEBHOOK_JWT_KEY=KEY, JOBSUP_WEBHOOK_SECRET=SECRET)
    put_group(server, [{"whatsappId": PN, "joinedAt": iso_s(T0 - 86400)}])
    both = {**bearer(KEY, 600), "x-webhook-secret": SECRET}
    assert (
        server.client.post("/webhooks/evolution", json=message(PN), headers=both).status_code == 200
    )
    only_secret = {"x-webhook-secret": SECRET, "authorization": ""}
    response = server.client.post("/webhooks/evolution", json=message(PN), headers=only_secret)
    assert response.status_code == 401


@pytest.mark.postgres
def test_a_burst_of_concurrent_deliveries_is_all_written_on_postgresql(
    make_server: Callable[..., Server], pg_url: str
) -> None:
    server = make_server(DATABASE_URL=pg_url, JOBSUP_WEBHOOK_SECRET=SECRET)
    put_group(server, [{"whatsappId": PN, "joinedAt": iso_s(T0 - 86400)}])
    senders = [f"{1000 + i}@lid" for i in range(300)]

    def send(i: int) -> int:
        body = (
            message(senders[i], at=T0 + i) if i % 2 else participants("add", [senders[i]], T0 + i)
        )
        return deliver(server, body).status_code

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(send, range(300)))
    assert codes == [200] * 300
    seen = members(server)
    assert all(s in seen and seen[s]["removedAt"] is None for s in senders)
    assert [seen[s]["lastActiveAt"] for s in senders[1::2]] == [
        iso_s(T0 + i) for i in range(1, 300, 2)
    ]
    # The same burst again, reordered: nothing moves.
    with ThreadPoolExecutor(16) as pool:
        assert set(pool.map(send, reversed(range(300)))) == {200}
    assert members(server) == seen


def test_a_directory_refresh_is_newer_than_what_was_sent_before_it(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(JOBSUP_WEBHOOK_SECRET=SECRET)
    put_group(server, [{"whatsappId": PN, "joinedAt": iso_s(T0 - 86400)}])
    # Sent an hour ago, delivered after the refresh that still listed them.
    ok(server, participants("remove", [PN], T0))
    assert members(server)[PN]["removedAt"] is None
    ok(server, message(PN, at=T0))  # activity is a fact of its own: it still counts
    assert members(server)[PN]["lastActiveAt"] == iso_s(T0)


def test_a_jwt_key_too_short_stops_the_server_naming_it(sqlite_url: str) -> None:
    short = "only-20-bytes-secret"
    completed = subprocess.run(
        [sys.executable, "-m", "supervisor", "serve", "--port", str(free_port())],
        env={**os.environ, **FAST, "DATABASE_URL": sqlite_url, "JOBSUP_WEBHOOK_JWT_KEY": short},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2, completed.stderr
    assert "JOBSUP_WEBHOOK_JWT_KEY must be at least 32 bytes" in completed.stderr
    assert short not in completed.stderr + completed.stdout


def test_a_message_never_undoes_a_removal(hooked: Server) -> None:
    ok(hooked, participants("remove", [PN], T0 + 10))
    ok(hooked, message(PN, at=T0 + 20))  # a clock ahead, or a late echo
    gone = members(hooked)[PN]
    assert (gone["removedAt"], gone["lastActiveAt"]) == (iso_s(T0 + 10), iso_s(T0 + 20))
    ok(hooked, participants("add", [PN], T0 + 30))  # only an add brings them back
    assert members(hooked)[PN]["removedAt"] is None


def test_a_queued_member_who_writes_before_their_batch_is_not_removed(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(JOBSUP_WEBHOOK_SECRET=SECRET)
    idle = iso_s(time.time() - 100 * 86400)
    put_group(
        server,
        [
            {"whatsappId": "5511900000000@s.whatsapp.net", "isAdmin": True, "joinedAt": idle},
            {"whatsappId": PN, "joinedAt": idle},
            {"whatsappId": OTHER, "joinedAt": idle},
        ],
    )
    job_id = server.start_job(
        {
            "type": "removal_workflow",
            "groupWaId": GROUP,
            "inactivityWindowMs": 30 * 86_400_000,
            "batchSize": 1,
            "delayMs": 4000,
            "dryRun": False,
        }
    )

    def first_removed() -> str | None:
        rows = server.client.get(f"/admin/groups/{GROUP}/removals").json()
        rows = rows["items"] if isinstance(rows, dict) else rows
        return str(rows[0]["whatsappId"]) if rows else None

    removed = wait_until(first_removed, timeout=30)
    waiting = OTHER if removed == PN else PN
    # The other one writes during the delay before its batch.
    ok(server, message(waiting, at=int(time.time())))
    job = server.wait_status(job_id, "completed", timeout=30)
    assert job["result"]["removedWhatsappIds"] == [removed]
    assert job["result"]["skippedWhatsappIds"] == [waiting]
    assert members(server)[waiting]["removedAt"] is None
