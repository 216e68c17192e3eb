"""Per-key rate limits (a token bucket) and daily query budgets, answered with 429 and
Retry-After, as the adversarial vision challenge's server answered "too many requests"."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Limits", "Scope"]

Scope = str
"""What a refusal is about: "rate" (the token bucket; wait a little) or "daily" (the key's budget
for the UTC day is spent)."""


@dataclass
class Limits:
    """``rate`` queries per second with bursts of ``burst``; ``daily`` queries per key per UTC day
    (0: no budget). One image counts as one query."""

    rate: float = 20.0
    burst: int = 40
    daily: int = 100_000
    clock: Callable[[], float] = time.time
    _tokens: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (tokens, at)
    _spent: dict[tuple[str, int], int] = field(default_factory=dict)       # (key, day) -> queries
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, key: str, n: int = 1) -> float:
        """Spend ``n`` queries of ``key``: 0 when allowed, else the seconds to wait (Retry-After)."""
        return self.take_scoped(key, n)[0]

    def take_scoped(self, key: str, n: int = 1) -> tuple[float, Scope]:
        """As :meth:`take`, with what the wait is for ("rate" or "daily"). A request of more than
        ``burst`` images can never be served: the caller refuses it before (413)."""
        with self._lock:
            now = self.clock()
            day = int(now // 86_400)
            if self.daily and self._spent.get((key, day), 0) + n > self.daily:
                return float(math.ceil((day + 1) * 86_400 - now)), "daily"
            tokens, at = self._tokens.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens < n:
                self._tokens[key] = (tokens, now)
                return max(1.0, math.ceil((n - tokens) / self.rate)), "rate"
            self._tokens[key] = (tokens - n, now)
            self._spent[(key, day)] = self._spent.get((key, day), 0) + n
            return 0.0, ""

    def spent_today(self, key: str) -> int:
        return self._spent.get((key, int(self.clock() // 86_400)), 0)
