"""The Evolution API gateway: a real WhatsApp group, through a self-hosted Evolution API v2.

- **Settings**: ``EVOLUTION_API_URL``, ``EVOLUTION_API_KEY``,
  ``EVOLUTION_INSTANCE``, ``EVOLUTION_TIMEOUT_S`` (registry ``Setting``s of
  ``removal.jobs``; ``validate`` refuses a start that lacks one).
- **Before the first call** of a job: the instance must be connected
  (``state == "open"``); otherwise the job fails saying so.
- **Members**: the group's participants, each with both its ids when
  WhatsApp gave them (``id`` and ``phoneNumber`` or ``lid``); ``admin`` is
  ``"superadmin"``, ``"admin"`` or null, and both kinds are admins (never
  removed); a list with no admin at all is refused (the flags are missing,
  not the admins). A member already known keeps the join time first seen.
- **Removal**: one ``remove`` per batch, each member sent by the id the
  participants list gave it; the per-participant answers are matched back
  by ``jid`` or the phone number beside it ("200" removed, "404"
  ``ALREADY_GONE``, any other code a failure naming it).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Any

from removal.directory import MemberIn, current_ms, first_seen, from_ms
from removal.directory.journal import ALREADY_GONE, NO_ANSWER
from removal.gateways import GatewayError
from removal.gateways.evolution_client import EvolutionClient, EvolutionSettings
from workers.db import Database
from workers.registry import Policy

__all__ = ["EvolutionGateway", "EvolutionSettings", "probe", "settings_from_policy"]

ADMIN_ROLES = ("superadmin", "admin")
# A look that answers a request (a start's check, GET /admin/gateway) waits at most this.
PROBE_TIMEOUT_S = 10.0


def settings_from_policy(policy: Policy) -> EvolutionSettings:
    return EvolutionSettings(
        url=policy.evolution_api_url.rstrip("/"),
        key=policy.evolution_api_key,
        instance=policy.evolution_instance,
        timeout_s=policy.evolution_timeout_s,
        backoff_s=policy.gateway_backoff_ms / 1000,
        retries=policy.gateway_retries,
    )


def validate(policy: Policy) -> None:
    """With ``JOBSUP_GATEWAY=evolution``, every Evolution setting is needed: name the missing."""
    if policy.gateway != "evolution":
        return
    for name, value in (
        ("EVOLUTION_API_URL", policy.evolution_api_url),
        ("EVOLUTION_API_KEY", policy.evolution_api_key),
        ("EVOLUTION_INSTANCE", policy.evolution_instance),
    ):
        if not value:
            raise ValueError(f"{name} must be set when JOBSUP_GATEWAY=evolution")
    key = policy.evolution_api_key.value
    if not all(33 <= ord(c) < 127 for c in key):
        # A header may not carry it, and the HTTP library's refusal would quote it.
        raise ValueError("EVOLUTION_API_KEY must be printable ASCII without spaces")


def jid(raw: str) -> str:
    """An id as WhatsApp compares it: no ``:NN`` device suffix, a bare number as a phone id."""
    user, at, server = raw.partition("@")
    user = user.split(":", 1)[0]
    if not at:
        digits = "".join(c for c in user if c.isdigit())
        return f"{digits}@s.whatsapp.net" if digits else raw
    return f"{user}@{server}"


def state_error(instance: str, state: str | None) -> GatewayError | None:
    if state == "open":
        return None
    return GatewayError(
        f"WhatsApp instance {instance!r} is not connected (state: {state or 'unknown'})",
        GatewayError.UNAVAILABLE,
    )


def probe(settings: EvolutionSettings, group: str | None) -> str | None:
    """One quick look, no retries: the connection state, and the group when given.

    Raises ``GatewayError`` for a rejected key, an unknown instance, an
    instance that is not connected or an unknown group. For start-time
    checks (on a database reader thread) and ``GET /admin/gateway``.
    """
    quick = dataclasses.replace(settings, timeout_s=min(settings.timeout_s, PROBE_TIMEOUT_S))
    client = EvolutionClient(quick)
    try:
        state = client.connection_state()
        if group is None:
            return state
        error = state_error(settings.instance, state)
        if error is not None:
            raise error
        client.participants(group, retry=False)
        return state
    finally:
        client.close()


class EvolutionGateway:
    """A removal job's view of one Evolution instance (journaled: not transactional)."""

    transactional = False

    def __init__(
        self,
        db: Database,
        settings: EvolutionSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self._db = db
        self._client = EvolutionClient(settings, sleep=sleep, log=log)
        self._instance = settings.instance
        self._connected = False
        # Any id of a listed participant -> the id the list gave (what remove sends).
        self._listed: dict[str, str] | None = None

    def close(self) -> None:
        self._client.close()

    def fetch_members(self, group_wa_id: str) -> list[MemberIn]:
        participants = self._participants(group_wa_id)
        if participants and not any(p.get("admin") in ADMIN_ROLES for p in participants):
            # A group always has an admin; some Baileys versions leave the flags
            # null (in LID groups). Without them an admin would look removable.
            raise GatewayError(
                f"the participants of {group_wa_id!r} show no admin: WhatsApp did not"
                " report admin flags, so nobody is removed (admins must never be)",
                GatewayError.REJECTED,
            )
        now = from_ms(current_ms())
        members = [
            MemberIn(
                whatsapp_id=p["id"],
                alt_id=_other_id(p),
                is_admin=p.get("admin") in ADMIN_ROLES,
                joined_at=now,
            )
            for p in participants
        ]
        return first_seen(self._db, group_wa_id, _unique(members))

    def remove(self, group_wa_id: str, whatsapp_ids: list[str]) -> dict[str, str | None]:
        if self._listed is None:
            self._participants(group_wa_id)  # a removal without a sync: learn the ids first
        assert self._listed is not None
        sent: dict[str, str] = {}  # participant id sent -> directory key
        answers: dict[str, str | None] = {}
        for key, ids in _ids_of(self._db, group_wa_id, whatsapp_ids).items():
            listed = next((self._listed[i] for i in ids if i in self._listed), None)
            if listed is None:
                answers[key] = ALREADY_GONE  # the group does not have them
            else:
                sent[listed] = key
        if not sent:
            return answers
        self._ensure_connected()
        known = {jid(i): sent[p] for p in sent for i in (p, *self._aliases(p))}
        for entry in self._client.remove(group_wa_id, list(sent)):
            key = _match(entry, known)
            if key is not None:
                answers[key] = _verdict(entry.get("status"))
        for key in sent.values():
            answers.setdefault(key, NO_ANSWER)
        return answers

    def _participants(self, group_wa_id: str) -> list[dict[str, Any]]:
        self._ensure_connected()
        participants = self._client.participants(group_wa_id)
        listed: dict[str, str] = {}
        for p in participants:
            for i in (p["id"], _other_id(p)):
                if i:
                    listed.setdefault(jid(i), p["id"])
        self._listed = listed
        return participants

    def _aliases(self, participant_id: str) -> list[str]:
        assert self._listed is not None
        return [i for i, p in self._listed.items() if p == participant_id]

    def _ensure_connected(self) -> None:
        if self._connected:
            return
        error = state_error(self._instance, self._client.connection_state())
        if error is not None:
            raise error
        self._connected = True


def _other_id(participant: dict[str, Any]) -> str | None:
    for field in ("phoneNumber", "lid"):
        value = participant.get(field)
        if isinstance(value, str) and value and value != participant["id"]:
            return value
    return None


def _unique(members: list[MemberIn]) -> list[MemberIn]:
    seen: set[str] = set()
    unique = []
    for m in members:
        if m.whatsapp_id not in seen:
            seen.add(m.whatsapp_id)
            unique.append(m)
    return unique


def _ids_of(db: Database, group_wa_id: str, keys: Iterable[str]) -> dict[str, list[str]]:
    """Each directory key -> its ids as WhatsApp compares them (the key, then its other id)."""
    ids = {key: [jid(key)] for key in keys}
    for key in list(ids):
        row = db.one(
            "SELECT alt_id FROM wa_members WHERE group_wa_id = ? AND whatsapp_id = ?",
            (group_wa_id, key),
        )
        if row is not None and row[0]:
            ids[key].append(jid(row[0]))
    return ids


def _match(entry: dict[str, Any], known: dict[str, str]) -> str | None:
    """The directory key an answer is about: by its ``jid``, else the phone number beside it."""
    content = entry.get("content")
    attrs = content.get("attrs") if isinstance(content, dict) else None
    candidates = [entry.get("jid")]
    if isinstance(attrs, dict):
        candidates += [attrs.get("jid"), attrs.get("phone_number"), attrs.get("lid")]
    for candidate in candidates:
        if isinstance(candidate, str) and jid(candidate) in known:
            return known[jid(candidate)]
    return None


def _verdict(status: Any) -> str | None:
    code = str(status)
    if code == "200":
        return None
    if code == "404":
        return ALREADY_GONE
    return f"WhatsApp refused the removal (code {code})"
