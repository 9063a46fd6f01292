"""How the removal jobs reach a group: the Gateway protocol and the choice of one."""

from __future__ import annotations

from typing import Protocol

from workers.db import Database
from workers.directory import MemberIn
from workers.gateways.local import LocalGateway


class Gateway(Protocol):
    def fetch_members(self, group_wa_id: str) -> list[MemberIn] | None:
        """The group's members as the gateway sees them; None: our directory is the truth."""
        ...

    def remove(self, group_wa_id: str, whatsapp_ids: list[str]) -> dict[str, str | None]:
        """Remove members; whatsapp id -> None when removed, else why it failed."""
        ...


def gateway_for(db: Database, group_wa_id: str) -> Gateway:
    # The seam for the Evolution API gateway: choose it here, per group or from
    # settings, once it exists. Until then every group lives in our directory.
    return LocalGateway(db)
