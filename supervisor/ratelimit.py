"""Token buckets, one per key (a credential, a peer address), in memory.

Each instance keeps its own buckets: behind N instances a client may get up
to N times the rate. Every attempt takes a token, a refused one too, so a
client that keeps trying while refused stays refused until it slows down
(its debt is capped at one burst). The table of buckets is bounded: past
``max_keys`` the least recently used key is forgotten, which can only
make a limit more lenient, never block anyone.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict

MAX_KEYS = 10_000


class RateLimiter:
    def __init__(self, per_minute: float, burst: int, max_keys: int = MAX_KEYS) -> None:
        self.rate = per_minute / 60.0  # tokens per second
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str, now: float | None = None) -> int:
        """Count one attempt; 0 if it is allowed, else the seconds to wait (Retry-After)."""
        if not self.enabled:
            return 0
        now = time.monotonic() if now is None else now
        level, then = self._buckets.pop(key, (self.burst, now))
        level = min(self.burst, level + (now - then) * self.rate) - 1
        self._buckets[key] = (max(level, -self.burst), now)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        if level >= 0:
            return 0
        return max(1, math.ceil(-level / self.rate))
