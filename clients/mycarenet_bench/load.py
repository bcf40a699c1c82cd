"""Load models: open loop (a fixed arrival rate, latency from the intended send time) and closed loop
(N requests in flight), in steps, after a warm-up that is not recorded.

Open loop avoids coordinated omission: arrival ``i`` of a step is due at ``start + i / rate`` whatever
happened before, it is launched as soon as possible after that time even when earlier requests are still
in flight, and its latency is measured from the *due* time. A stall of the system (or of this process)
therefore shows up in every request that should have been sent during it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

# An operation: given its step and intended start (monotonic seconds), do the request and record it.
Operation = Callable[[int, float], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Step:
    """One load level: ``level`` is an arrival rate (open loop, per second) or a concurrency (closed)."""

    level: float
    seconds: float


def parse_steps(levels: str, duration: float) -> list[Step]:
    """``"20,40,80"`` over ``duration`` seconds: three steps of a third each."""
    values = [float(v) for v in levels.split(",") if v.strip()]
    if not values or any(v <= 0 for v in values):
        raise ValueError(f"load levels must be positive numbers: {levels!r}")
    if duration <= 0:
        raise ValueError("duration must be positive")
    return [Step(v, duration / len(values)) for v in values]


def arrivals(start: float, steps: Sequence[Step]) -> Iterator[tuple[int, float]]:
    """(step index, intended start) of every open-loop arrival: evenly spaced at each step's rate."""
    step_start = start
    for index, step in enumerate(steps):
        interval = 1.0 / step.level
        count = int(step.seconds * step.level + 1e-9)
        for i in range(count):
            yield index, step_start + i * interval
        step_start += step.seconds


class OpenLoop:
    """Launches every arrival at its due time; nothing waits for earlier requests."""

    def __init__(
        self,
        operation: Operation,
        *,
        max_in_flight: int = 20_000,
        on_overflow: Callable[[int, float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.operation = operation
        self.max_in_flight = max_in_flight
        self.on_overflow = on_overflow
        self.clock = clock
        self.in_flight: set[asyncio.Task[None]] = set()
        self.launched = 0
        self.overflowed = 0
        self.max_seen_in_flight = 0

    async def run(self, start: float, steps: Sequence[Step]) -> None:
        """Issue the arrivals of ``steps`` from ``start`` and wait until every one has finished."""
        for step, due in arrivals(start, steps):
            wait = due - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)
            if len(self.in_flight) >= self.max_in_flight:
                # The generator's own safety limit: recorded (as a failure) rather than silently skipped.
                self.overflowed += 1
                if self.on_overflow is not None:
                    self.on_overflow(step, due)
                continue
            task = asyncio.create_task(self.operation(step, due))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)
            self.launched += 1
            self.max_seen_in_flight = max(self.max_seen_in_flight, len(self.in_flight))
        if self.in_flight:
            await asyncio.gather(*list(self.in_flight), return_exceptions=True)


class ClosedLoop:
    """``level`` workers per step, each sending its next request when the previous one has answered."""

    def __init__(self, operation: Operation, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.operation = operation
        self.clock = clock
        self.launched = 0

    async def run(self, start: float, steps: Sequence[Step]) -> None:
        step_start = start
        for index, step in enumerate(steps):
            stop = step_start + step.seconds

            async def worker(index: int = index, stop: float = stop) -> None:
                while (now := self.clock()) < stop:
                    self.launched += 1
                    await self.operation(index, now)

            wait = step_start - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)
            await asyncio.gather(*(worker() for _ in range(int(step.level))))
            step_start = stop


async def run_load(
    mode: str,
    operation: Operation,
    steps: Sequence[Step],
    *,
    start: float,
    max_in_flight: int = 20_000,
    on_overflow: Callable[[int, float], None] | None = None,
) -> OpenLoop | ClosedLoop:
    """Run ``steps`` in ``mode`` ("open" or "closed") from ``start``."""
    runner: OpenLoop | ClosedLoop
    if mode == "open":
        runner = OpenLoop(operation, max_in_flight=max_in_flight, on_overflow=on_overflow)
    elif mode == "closed":
        runner = ClosedLoop(operation)
    else:
        raise ValueError(f"mode must be 'open' or 'closed', not {mode!r}")
    await runner.run(start, steps)
    return runner
