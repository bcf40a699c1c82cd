"""Per-provider throttling (seed 003 §7.2): a token bucket per requester of record.

Sized so that a GP's normal use (a few patients an hour, a burst when opening a day's files) never meets it,
while software that consults systematically does: sustained ``rate`` calls per second after a ``burst``.

What costs a token is declared per RPC in ``mycarenet_core/trust.toml`` (its ``throttle``) and taken by the
RPC's handler once its request is parsed (:mod:`hub.policy`): each patient-bound call (consult, notify,
insurability, an attest: one insurer asked), and each ``PostPatientList`` or ``PostInvoiceBatch``, one token
per insurer the list asks or the batch is routed to (its fan-out: a list to the seven insurers costs
seven), a repeat of a posted reference included.

A failed attempt that is not the caller's fault gives its tokens back (:func:`not_the_callers_fault`): a
call that ends UNAVAILABLE or DEADLINE_EXCEEDED (an insurer or eHealth down or slow, a restart), or with the
hub's database busy; any other outcome (an answer, a refusal of the caller's input) keeps them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from mycarenet_core.errors import MeshError, resource_exhausted

# Failures that are not the caller's doing: the tokens of the attempt are given back.
NOT_THE_CALLERS_FAULT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
NOT_THE_CALLERS_REASONS = frozenset({"DATABASE_BUSY"})


def not_the_callers_fault(error: BaseException) -> bool:
    """True for a failure the caller could not avoid (see :data:`NOT_THE_CALLERS_FAULT`)."""
    if isinstance(error, MeshError):
        return error.status in NOT_THE_CALLERS_FAULT or error.reason in NOT_THE_CALLERS_REASONS
    if isinstance(error, grpc.RpcError):
        code = error.code() if callable(getattr(error, "code", None)) else None
        return code in NOT_THE_CALLERS_FAULT
    return isinstance(error, TimeoutError)


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

    def take(self, key: str, cost: int = 1) -> float:
        """Take ``cost`` tokens of ``key``'s bucket (at least one, at most a full bucket) and return how many,
        or raise RESOURCE_EXHAUSTED THROTTLED (taking none)."""
        now = self._now()
        rate, burst = self.config.rate, float(self.config.burst)
        tokens, last = self._buckets.get(key, (burst, now))
        tokens = min(burst, tokens + (now - last) * rate)
        need = min(float(max(1, cost)), burst)  # a cost above the burst takes a full bucket
        if tokens < need:
            self._buckets[key] = (tokens, now)
            wait = (need - tokens) / rate if rate > 0 else 60.0
            raise resource_exhausted(
                "THROTTLED",
                f"too many patient-bound requests: at most {rate:g}/s (burst {burst:g}); "
                "systematic consultation is not allowed",
                retry_after_seconds=round(wait, 3),
            )
        self._buckets[key] = (tokens - need, now)
        if len(self._buckets) > self.config.max_tracked:
            self._forget_full(now)
        return need

    def give_back(self, key: str, tokens: float) -> None:
        """Return ``tokens`` to ``key``'s bucket (never above the burst)."""
        now = self._now()
        rate, burst = self.config.rate, float(self.config.burst)
        held, last = self._buckets.get(key, (burst, now))
        self._buckets[key] = (min(burst, held + (now - last) * rate + tokens), now)

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled completely (they hold no information)."""
        rate, burst = self.config.rate, float(self.config.burst)
        for key in [k for k, (t, last) in self._buckets.items() if t + (now - last) * rate >= burst]:
            del self._buckets[key]
