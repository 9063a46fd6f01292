"""What this process last saw of the gateway: its connection state and its last error.

Written by the start-time checks (database reader threads) and by
``GET /admin/gateway``, read by the latter. Jobs' own gateway errors are in
their ``error``; this is what the front process saw.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

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


def gateway_status(policy: Policy) -> dict[str, Any]:
    """Which gateway, its connection state now (a quick look; blocking) and the last error."""
    answer: dict[str, Any] = {"gateway": policy.gateway, "connectionState": None}
    if policy.gateway == "evolution":
        from removal.gateways.evolution import probe, settings_from_policy

        settings = settings_from_policy(policy)
        answer.update(url=settings.url, instance=settings.instance)
        try:
            answer["connectionState"] = probe(settings, None)
        except GatewayError as exc:
            record_error(exc.reason)
    seen = last_error()
    answer["lastError"] = (
        None if seen is None else {"message": seen.message, "at": from_ms(seen.at_ms)}
    )
    return answer
