"""Per-provider throttling (seed 003 §7.2): a token bucket per requester of record.

Sized so that a GP's normal use (a few patients an hour, a burst when opening a day's files) never meets it,
while software that consults systematically does: sustained ``rate`` calls per second after a ``burst``.

What costs a token: each patient-bound call (consult, notify: one insurer asked), and each
``PostPatientList``, one token per insurer the list asks (its fan-out: a list to the seven insurers costs
seven), taken when the post is received, a repeat of a posted reference included.

A failed attempt that is not the caller's fault gives its tokens back: a call that ends UNAVAILABLE or
DEADLINE_EXCEEDED (an insurer or eHealth down or slow, a restart), or with the hub's database busy. The
hub runs each call inside :meth:`Throttle.charging`, which remembers the tokens the call took and returns
them when the call fails so; any other outcome (an answer, a refusal of the caller's input) keeps them.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc

from mycarenet_core.errors import MeshError, resource_exhausted

# Failures that are not the caller's doing: the tokens of the attempt are given back.
NOT_THE_CALLERS_FAULT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
NOT_THE_CALLERS_REASONS = frozenset({"DATABASE_BUSY"})

# The tokens taken by the call running in this task (set by Throttle.charging).
_charged: contextvars.ContextVar[list[tuple[Throttle, str, float]] | None] = contextvars.ContextVar(
    "throttle_charged", default=None
)


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

    def take(self, key: str, cost: int = 1) -> None:
        """Take ``cost`` tokens of ``key``'s bucket, or raise RESOURCE_EXHAUSTED THROTTLED (taking none).
        Inside :meth:`charging`, the call remembers them (given back if it fails through no fault of its
        caller)."""
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
        charged = _charged.get()
        if charged is not None:
            charged.append((self, key, need))
        if len(self._buckets) > self.config.max_tracked:
            self._forget_full(now)

    def give_back(self, key: str, tokens: float) -> None:
        """Return ``tokens`` to ``key``'s bucket (never above the burst)."""
        now = self._now()
        rate, burst = self.config.rate, float(self.config.burst)
        held, last = self._buckets.get(key, (burst, now))
        self._buckets[key] = (min(burst, held + (now - last) * rate + tokens), now)

    @staticmethod
    @contextlib.contextmanager
    def charging() -> Iterator[None]:
        """Run one call: the tokens it takes (of any throttle) are given back when it fails through no
        fault of its caller (:func:`not_the_callers_fault`)."""
        charged: list[tuple[Throttle, str, float]] = []
        token = _charged.set(charged)
        try:
            yield
        except BaseException as error:
            if not_the_callers_fault(error):
                for throttle, key, tokens in charged:
                    throttle.give_back(key, tokens)
            raise
        finally:
            _charged.reset(token)

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled completely (they hold no information)."""
        rate, burst = self.config.rate, float(self.config.burst)
        for key in [k for k, (t, last) in self._buckets.items() if t + (now - last) * rate >= burst]:
            del self._buckets[key]
