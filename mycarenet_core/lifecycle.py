"""One lifecycle for the background work of every process, and one backoff.

A process's background work (feed followers, relays, workers, periodic jobs) is a :class:`Background`:
named jobs started together after the server is built and stopped together (cancelled and awaited) before
the database is disposed. A job that ends or fails unexpectedly is logged and started again after a
:class:`Backoff`, so that a bug in one follower never silently stops it for the life of the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mycarenet_core.clock import Clock, OffsetClock, until_next_midnight

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]


class Backoff:
    """Exponential backoff with jitter: ``initial`` doubling up to ``maximum`` seconds; ``reset`` after a
    success. The one backoff of the mesh (followers, relays, retries)."""

    def __init__(self, initial: float = 0.2, maximum: float = 5.0) -> None:
        self.initial, self.maximum, self.current = initial, maximum, initial

    def reset(self) -> None:
        self.current = self.initial

    def next_delay(self) -> float:
        """The delay to wait now (jittered in [current/2, current]); the next one doubles."""
        delay = self.current * (0.5 + random.random() / 2)
        self.current = min(self.maximum, self.current * 2)
        return delay

    async def sleep(self) -> None:
        await asyncio.sleep(self.next_delay())


@dataclass
class _Spec:
    name: str
    job: Job
    restart: bool
    backoff: Backoff = field(default_factory=Backoff)


class Background:
    """The background jobs of one process: :meth:`add`, :meth:`every` or :meth:`daily`, then :meth:`start` /
    :meth:`stop`."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._specs: list[_Spec] = []
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, name: str, job: Job, *, restart: bool = True, backoff: Backoff | None = None) -> None:
        """A long-running job (a follower, a relay): restarted after a backoff if it ends or fails, unless
        ``restart`` is False (a job that is meant to end)."""
        self._specs.append(_Spec(name, job, restart, backoff or Backoff(0.5, 10.0)))
        if self._tasks:  # added while running: start it at once
            self._tasks.append(self._spawn(self._specs[-1]))

    def every(self, name: str, seconds: float, job: Job) -> None:
        """A periodic job: run, wait ``seconds``, run again; a failure is logged and the rhythm kept."""

        async def periodic() -> None:
            while True:
                try:
                    await job()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("%s: %s failed", self.owner, name)
                await asyncio.sleep(seconds)

        self.add(name, periodic)

    def daily(self, name: str, clock: Clock, job: Callable[[], Awaitable[object]]) -> None:
        """A job of the mesh's day: run now, then again at each midnight in Brussels and each time a movable
        clock moves (woken by the move, no polling); a failure is logged and waits for the next wake-up."""
        moved = asyncio.Event()
        if isinstance(clock, OffsetClock):
            clock.listen(moved.set)

        async def each_day() -> None:
            while True:
                moved.clear()
                try:
                    await job()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("%s: %s failed; run again at the next wake-up", self.owner, name)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(moved.wait(), until_next_midnight(clock.now()))

        self.add(name, each_day)

    def _spawn(self, spec: _Spec) -> asyncio.Task[None]:
        return asyncio.create_task(self._supervise(spec), name=f"{self.owner}: {spec.name}")

    async def _supervise(self, spec: _Spec) -> None:
        while True:
            try:
                await spec.job()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: background job %s failed", self.owner, spec.name)
            else:
                if not spec.restart:
                    return
                log.warning("%s: background job %s ended; starting it again", self.owner, spec.name)
            if not spec.restart:
                return
            await spec.backoff.sleep()

    @property
    def running(self) -> bool:
        return any(not t.done() for t in self._tasks)

    def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [self._spawn(spec) for spec in self._specs]

    async def stop(self) -> None:
        """Cancel every job and wait until each has ended (a cancelled job leaves nothing running)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


__all__ = ["Background", "Backoff", "Job"]
