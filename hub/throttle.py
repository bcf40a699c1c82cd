"""Per-provider throttling (seed 003 §7.2): a token bucket per requester of record.

Sized so that a GP's normal use (a few patients an hour, a burst when opening a day's files) never meets it,
while software that consults systematically does: sustained ``rate`` calls per second after a ``burst``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from mycarenet_core.errors import resource_exhausted


@dataclass(frozen=True)
class ThrottleConfig:
    """Sustained rate (calls per second) and burst size for patient-bound calls of one requester."""

    rate: float = 2.0
    burst: int = 30
    max_tracked: int = 200_000


class Throttle:
    """Token buckets by key; :meth:`take` raises RESOURCE_EXHAUSTED with a retry delay when empty."""

    def __init__(self, config: ThrottleConfig, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._now = monotonic
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill time)

    def take(self, key: str) -> None:
        now = self._now()
        rate, burst = self.config.rate, float(self.config.burst)
        tokens, last = self._buckets.get(key, (burst, now))
        tokens = min(burst, tokens + (now - last) * rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / rate if rate > 0 else 60.0
            raise resource_exhausted(
                "THROTTLED",
                f"too many patient-bound requests: at most {rate:g}/s (burst {burst:g}); "
                "systematic consultation is not allowed",
                retry_after_seconds=round(wait, 3),
            )
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > self.config.max_tracked:
            self._forget_full(now)

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled completely (they hold no information)."""
        rate, burst = self.config.rate, float(self.config.burst)
        for key in [k for k, (t, last) in self._buckets.items() if t + (now - last) * rate >= burst]:
            del self._buckets[key]
