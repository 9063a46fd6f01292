"""How the removal jobs reach a group: the Gateway protocol and the choice of one.

Two kinds of gateway, told apart by ``transactional``:

- **In our database** (``LocalGateway``): ``remove`` writes through the
  job's own connection and opens no transaction of its own, so it joins the
  batch's transaction. The removal, the dequeue and the history rows then
  commit or roll back together.
- **Remote** (the Evolution API): ``remove`` acts elsewhere and cannot join
  a transaction. The removal step calls it between a journal write of
  PENDING intents and the settle write (``removal.directory.journal``), and
  ``fetch_members`` must return the group's real members, from which the
  next run settles the intents a dead run left behind.
"""

from __future__ import annotations

from typing import Protocol

from removal.directory import MemberIn
from removal.gateways.local import LocalGateway
from workers.db import Database


class Gateway(Protocol):
    @property
    def transactional(self) -> bool:
        """True when ``remove`` writes through the job's own connection, inside the
        caller's open transaction; False when it acts outside our database."""
        ...

    def fetch_members(self, group_wa_id: str) -> list[MemberIn] | None:
        """The group's members as the gateway sees them; None: our directory is the truth.

        A remote gateway always answers a list (its view is the truth)."""
        ...

    def remove(self, group_wa_id: str, whatsapp_ids: list[str]) -> dict[str, str | None]:
        """Remove members; whatsapp id -> None when removed, else why it failed.

        A member left out of the answer counts as a failure (no answer)."""
        ...


def gateway_for(db: Database, group_wa_id: str) -> Gateway:
    # The seam for the Evolution API gateway: choose it here, per group or from
    # settings, once it exists. Until then every group lives in our directory.
    return LocalGateway(db)
