"""Evolution API v2 webhook deliveries, read into the directory's facts.

A delivery is an envelope ``{"event", "instance", "data", "date_time", ...}``.
Three events say something about members:

- ``messages.upsert``: a message in a group (``key.remoteJid`` ends in
  ``@g.us``): its sender (``key.participant``, the other id in
  ``key.participantAlt``) was there and active at ``messageTimestamp``.
  Direct messages and the instance's own (``fromMe``) are ignored: the
  instance's account is the group's admin, never a candidate for removal.
- ``group-participants.update``: ``add``, ``remove``, ``promote``,
  ``demote`` of ``participants``, each a string (Evolution up to 2.3.5) or an
  object ``{id, phoneNumber?, lid?, admin?}`` (2.3.6 and later);
  ``participantsData`` is ignored (malformed in 2.3.7).
- ``groups.upsert``: the full metadata of groups the instance joined.

Event names are compared in one form: ``messages.upsert``,
``MESSAGES_UPSERT`` and the path suffix ``messages-upsert`` are the same.
Anything else is ignored. A delivery that is not the shape Evolution sends
raises ``Invalid`` naming the field.

Times: a message's own ``messageTimestamp`` (Unix seconds); membership
changes carry none, so the envelope's ``date_time`` (when Evolution sent the
event; true UTC only when Evolution runs in UTC) stands for it. A time in the
future, or missing, becomes the time of receipt: a clock ahead must not keep a
member looking active forever.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from removal.directory.activity import Fact, GroupSeen, Seen
from supervisor.errors import Invalid
from workers.db import MAX_ID_LENGTH

MESSAGES_UPSERT = "MESSAGES_UPSERT"
GROUP_PARTICIPANTS_UPDATE = "GROUP_PARTICIPANTS_UPDATE"
GROUPS_UPSERT = "GROUPS_UPSERT"
HANDLED = frozenset({MESSAGES_UPSERT, GROUP_PARTICIPANTS_UPDATE, GROUPS_UPSERT})
ACTIONS = frozenset({"add", "remove", "promote", "demote"})
MAX_NAME = 1024

_DEVICE = re.compile(r":\d+(?=@)")


def event_key(name: str) -> str:
    """``messages.upsert``, ``MESSAGES_UPSERT``, ``messages-upsert`` -> ``MESSAGES_UPSERT``."""
    return re.sub(r"[.\-]", "_", name.strip()).upper()


@dataclass
class Delivery:
    """What one delivery says: its event, the facts, or why it says nothing to us."""

    event: str
    facts: list[Fact] = field(default_factory=list)
    ignored: str | None = None


def read_delivery(body: Any, path_event: str | None, received_ms: int) -> Delivery:
    if not isinstance(body, dict):
        raise Invalid("the delivery must be a JSON object", "body")
    event = body.get("event")
    if event is None and path_event is None:
        raise Invalid("event: missing", "event")
    if event is not None and not isinstance(event, str):
        raise Invalid("event: expected a string", "event")
    name = event if event is not None else path_event
    assert name is not None
    key = event_key(name)
    if path_event is not None and event_key(path_event) != key:
        raise Invalid(f"event {event!r} does not match the path's {path_event!r}", "event")
    if key not in HANDLED:
        return Delivery(name, ignored="event not used")
    data = body.get("data")
    at = _sent_at(body.get("date_time"), received_ms)
    if key == MESSAGES_UPSERT:
        return _messages(name, data, received_ms)
    if key == GROUP_PARTICIPANTS_UPDATE:
        return _participants(name, data, at)
    return _groups(name, data, at)


def _sent_at(value: Any, received_ms: int) -> int:
    if not isinstance(value, str):
        return received_ms
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return received_ms
    if parsed.tzinfo is None:
        return received_ms
    return min(int(parsed.timestamp() * 1000), received_ms)


def _jid(value: Any, where: str) -> str | None:
    """A WhatsApp id as the directory stores it: no device suffix, a bare number made a phone id."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Invalid(f"{where}: expected a string", where)
    jid = _DEVICE.sub("", value.strip())
    if jid.isdigit():
        jid += "@s.whatsapp.net"
    if not jid or len(jid) > MAX_ID_LENGTH:
        raise Invalid(f"{where}: not a WhatsApp id", where)
    return jid


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(f"{where}: expected an object", where)
    return value


def _seconds(value: Any, received_ms: int) -> int:
    """A message's timestamp (seconds, maybe as a string or a protobuf Long) in ms, at most now."""
    if isinstance(value, dict):  # {"low": ..., "high": ..., "unsigned": ...}
        low, high = value.get("low"), value.get("high", 0)
        value = (high << 32) + (low & 0xFFFFFFFF) if isinstance(low, int) else None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return received_ms
    ms = int(value) if value > 10**11 else int(value * 1000)  # milliseconds already
    return min(ms, received_ms)


def _messages(name: str, data: Any, received_ms: int) -> Delivery:
    # One message per delivery; a list (or {"messages": [...]}) is read the same way.
    if isinstance(data, dict) and isinstance(data.get("messages"), list):
        data = data["messages"]
    items = data if isinstance(data, list) else [data]
    delivery = Delivery(name)
    for i, item in enumerate(items):
        where = "data" if not isinstance(data, list) else f"data[{i}]"
        message = _object(item, where)
        key = _object(message.get("key"), f"{where}.key")
        group = _jid(key.get("remoteJid"), f"{where}.key.remoteJid")
        if group is None or not group.endswith("@g.us"):
            delivery.ignored = "not a group message"
            continue
        if key.get("fromMe") is True:
            delivery.ignored = "the instance's own message"
            continue
        sender = _jid(key.get("participant"), f"{where}.key.participant")
        alt = None
        for alt_field in ("participantAlt", "participantPn", "participantLid"):
            alt = _jid(key.get(alt_field), f"{where}.key.{alt_field}")
            if alt is not None and alt != sender:
                break
            alt = None
        if sender is None:
            sender, alt = alt, None
        if sender is None:
            delivery.ignored = "no sender"
            continue
        at = _seconds(message.get("messageTimestamp"), received_ms)
        delivery.facts.append(Seen(group, sender, at, alt_id=alt, active_at=at, membership=False))
    if delivery.facts:
        delivery.ignored = None
    return delivery


def _participant(value: Any, where: str) -> tuple[str, str | None, bool | None]:
    """(id, other id, admin flag or None) of a participant given as a string or an object."""
    if isinstance(value, str):
        jid = _jid(value, where)
        if jid is None:
            raise Invalid(f"{where}: empty", where)
        return jid, None, None
    obj = _object(value, where)
    jid = _jid(obj.get("id") or obj.get("jid"), f"{where}.id")
    if jid is None:
        raise Invalid(f"{where}.id: missing", f"{where}.id")
    alt = _jid(obj.get("phoneNumber"), f"{where}.phoneNumber") or _jid(
        obj.get("lid"), f"{where}.lid"
    )
    admin = obj.get("admin", ...)
    is_admin = None if admin is ... else admin in ("admin", "superadmin")
    return jid, (alt if alt != jid else None), is_admin


def _participants(name: str, data: Any, at: int) -> Delivery:
    body = _object(data, "data")
    group = _jid(body.get("id"), "data.id")
    if group is None or not group.endswith("@g.us"):
        raise Invalid("data.id: expected a group id (…@g.us)", "data.id")
    action = body.get("action")
    if not isinstance(action, str):
        raise Invalid("data.action: expected a string", "data.action")
    participants = body.get("participants")
    if not isinstance(participants, list):
        raise Invalid("data.participants: expected a list", "data.participants")
    if action not in ACTIONS:
        return Delivery(name, ignored=f"action {action!r} not used")
    delivery = Delivery(name)
    for i, value in enumerate(participants):
        jid, alt, is_admin = _participant(value, f"data.participants[{i}]")
        if action == "remove":
            fact = Seen(group, jid, at, alt_id=alt, present=False)
        elif action == "add":
            fact = Seen(group, jid, at, alt_id=alt, is_admin=is_admin)
        else:
            fact = Seen(group, jid, at, alt_id=alt, is_admin=action == "promote")
        delivery.facts.append(fact)
    return delivery


def _groups(name: str, data: Any, at: int) -> Delivery:
    items = data if isinstance(data, list) else [data]
    delivery = Delivery(name)
    for i, item in enumerate(items):
        where = "data" if not isinstance(data, list) else f"data[{i}]"
        meta = _object(item, where)
        group = _jid(meta.get("id"), f"{where}.id")
        if group is None or not group.endswith("@g.us"):
            raise Invalid(f"{where}.id: expected a group id (…@g.us)", f"{where}.id")
        subject = meta.get("subject")
        title = subject.strip()[:MAX_NAME] if isinstance(subject, str) else ""
        participants = meta.get("participants", [])
        if not isinstance(participants, list):
            raise Invalid(f"{where}.participants: expected a list", f"{where}.participants")
        members = []
        for j, value in enumerate(participants):
            jid, alt, is_admin = _participant(value, f"{where}.participants[{j}]")
            members.append(Seen(group, jid, at, alt_id=alt, is_admin=bool(is_admin)))
        delivery.facts.append(GroupSeen(group, title or group, at, tuple(members)))
    return delivery
