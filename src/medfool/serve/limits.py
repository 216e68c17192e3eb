"""Per-key rate limits (a token bucket) and daily query budgets, answered with 429 and
Retry-After, as the adversarial vision challenge's server answered "too many requests"."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Limits"]


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
        with self._lock:
            now = self.clock()
            day = int(now // 86_400)
            if self.daily and self._spent.get((key, day), 0) + n > self.daily:
                return float(math.ceil((day + 1) * 86_400 - now))
            tokens, at = self._tokens.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens < n:
                self._tokens[key] = (tokens, now)
                return max(1.0, math.ceil((n - tokens) / self.rate))
            self._tokens[key] = (tokens - n, now)
            self._spent[(key, day)] = self._spent.get((key, day), 0) + n
            return 0.0

    def spent_today(self, key: str) -> int:
        return self._spent.get((key, int(self.clock() // 86_400)), 0)
