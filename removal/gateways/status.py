"""What this process last saw of the gateway: its connection state and its last error.

Written by the start-time checks (database reader threads) and by
``GET /admin/gateway``, read by the latter. Jobs' own gateway errors are in
their ``error``; this is what the front process saw.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

import msgspec

from removal.gateways import GatewayError
from workers.registry import Policy
from workers.times import from_ms, now_ms

_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Seen:
    message: str
    at_ms: int


_last_error: Seen | None = None


def record_error(message: str) -> None:
    global _last_error
    with _lock:
        _last_error = Seen(message, now_ms())


def last_error() -> Seen | None:
    with _lock:
        return _last_error


class LastError(msgspec.Struct, rename="camel"):
    message: str
    at: datetime


class GatewayView(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    """``GET /admin/gateway``'s answer; ``url`` and ``instance`` for Evolution only."""

    gateway: str
    connection_state: str | None
    last_error: LastError | None
    url: str | None = None
    instance: str | None = None


def gateway_status(policy: Policy) -> GatewayView:
    """Which gateway, its connection state now (a quick look; blocking) and the last error."""
    state = url = instance = None
    if policy.gateway == "evolution":
        from removal.gateways.evolution import probe, settings_from_policy

        settings = settings_from_policy(policy)
        url, instance = settings.url, settings.instance
        try:
            state = probe(settings, None)
        except GatewayError as exc:
            record_error(exc.reason)
    seen = last_error()
    return GatewayView(
        gateway=policy.gateway,
        connection_state=state,
        last_error=None if seen is None else LastError(seen.message, from_ms(seen.at_ms)),
        url=url,
        instance=instance,
    )
