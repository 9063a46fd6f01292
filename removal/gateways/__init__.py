"""How the removal jobs reach a group: the Gateway protocol and the choice of one.

Two kinds of gateway, told apart by ``transactional``:

- **In our database** (``LocalGateway``): ``remove`` writes through the
  job's own connection and opens no transaction of its own, so it joins the
  batch's transaction. The removal, the dequeue and the history rows then
  commit or roll back together.
- **Remote** (``EvolutionGateway``, the Evolution API): ``remove`` acts
  elsewhere and cannot join a transaction. The removal step calls it between
  a journal write of PENDING intents and the settle write
  (``removal.directory.journal``), and ``fetch_members`` must return the
  group's real members, from which the next run settles the intents a dead
  run left behind.

``JOBSUP_GATEWAY`` (a registry ``Setting`` of ``removal.jobs``) picks one for
every group: ``local`` (the default) or ``evolution``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Protocol

from removal.directory import MemberIn
from removal.directory.journal import ALREADY_GONE
from removal.gateways.local import LocalGateway
from workers import registry
from workers.db import Database
from workers.registry import Policy

__all__ = ["ALREADY_GONE", "Gateway", "GatewayError", "LocalGateway", "gateway_for"]


class GatewayError(Exception):
    """The gateway could not do what it was asked; ``reason`` says why, for a person.

    ``kind`` says whose problem it is: ``UNAVAILABLE`` (the gateway is down,
    not connected, or refuses our credentials), ``NO_GROUP``, ``FORBIDDEN``
    (we may not change the group), ``REJECTED`` (any other refusal).
    ``transient``: worth retrying after a wait. ``unsure``: a call that
    changes the group may have taken effect anyway (no answer came back).
    """

    UNAVAILABLE = "unavailable"
    NO_GROUP = "no_group"
    FORBIDDEN = "forbidden"
    REJECTED = "rejected"

    def __init__(
        self, reason: str, kind: str, *, transient: bool = False, unsure: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.transient = transient
        self.unsure = unsure


class Gateway(Protocol):
    @property
    def transactional(self) -> bool:
        """True when ``remove`` writes through the job's own connection, inside the
        caller's open transaction; False when it acts outside our database."""
        ...

    def fetch_members(self, group_wa_id: str) -> list[MemberIn] | None:
        """The group's members as the gateway sees them; None: our directory is the truth.

        A remote gateway always answers a list (its view is the truth).
        Raises ``GatewayError``."""
        ...

    def remove(self, group_wa_id: str, whatsapp_ids: list[str]) -> dict[str, str | None]:
        """Remove members (by their directory keys); whatsapp id -> None when removed,
        ``ALREADY_GONE`` when the group did not have them, else why it failed.

        A member left out of the answer counts as a failure (no answer).
        ``GatewayError`` when the whole call failed."""
        ...


def gateway_for(
    db: Database,
    group_wa_id: str,
    *,
    policy: Policy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] | None = None,
) -> Gateway:
    """The configured gateway (``JOBSUP_GATEWAY``) for a job's run.

    ``policy`` defaults to the settings read from this process's environment
    (a job child inherits the server's). ``sleep`` is the job's cancellable
    wait, used between retries.
    """
    policy = policy if policy is not None else registry.policy(os.environ)
    if policy.gateway == "evolution":
        from removal.gateways.evolution import EvolutionGateway, settings_from_policy

        return EvolutionGateway(db, settings_from_policy(policy), sleep=sleep, log=log)
    return LocalGateway(db)
