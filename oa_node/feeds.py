"""In-process wake-ups of an insurer node: what a writer sets after its commit, so that nobody polls.

A feed (the affiliation changes, the holder changes) has a :class:`FeedSignal`: the transaction that
appends to the feed publishes the new head sequence once it has committed, and every watch stream
waiting beyond an older sequence wakes up at once. The outbox relay waits on a :class:`Wakeup` that the
writers of outbox rows set after their commit. Both waits have a long safety timeout (a writer outside
this process, or a wake-up lost to a bug, costs at most that delay), never a short poll.

Closing a signal (the node is stopping) ends every wait at once, so that the watch streams end before
the server's grace period instead of holding it.
"""

from __future__ import annotations

import asyncio
import contextlib

SAFETY_TIMEOUT = 30.0
"""Seconds a waiter sleeps at most without a wake-up (a safety net, not a poll)."""


class FeedSignal:
    """The last sequence published for a feed; :meth:`wait_beyond` returns as soon as a later one is."""

    def __init__(self) -> None:
        self.last = 0
        self.closed = False
        self._event = asyncio.Event()

    def publish(self, last_sequence: int) -> None:
        """A transaction that appended up to ``last_sequence`` committed: wake the waiters."""
        if last_sequence > self.last:
            self.last = last_sequence
            event, self._event = self._event, asyncio.Event()
            event.set()

    def close(self) -> None:
        """End every wait, now and later (the node is stopping)."""
        self.closed = True
        self._event.set()

    async def wait_beyond(self, sequence: int, max_wait: float = SAFETY_TIMEOUT) -> None:
        """Return when a sequence after ``sequence`` was published, the signal closed, or ``max_wait``
        seconds passed (then the caller reads the database anyway)."""
        if self.closed or self.last > sequence:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), max_wait)


class Wakeup:
    """A flag that a writer sets after its commit and one worker waits on (with a safety timeout)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, max_wait: float = SAFETY_TIMEOUT) -> None:
        """Wait until set (or ``max_wait`` seconds), then clear for the next round."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), max_wait)
        self._event.clear()


__all__ = ["SAFETY_TIMEOUT", "FeedSignal", "Wakeup"]
