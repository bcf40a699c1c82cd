"""Clocks, passed to services through their constructors (rules never read the time themselves).

The sandbox can run "in another year" so that the worked scenarios of the seeds (2012–2015) can be played
against the real services: :class:`OffsetClock` shifts the system time to a chosen date.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol
from zoneinfo import ZoneInfo

BRUSSELS = ZoneInfo("Europe/Brussels")


class Clock(Protocol):
    """Something that tells the time."""

    def now(self) -> dt.datetime:
        """The current instant, timezone-aware (UTC)."""
        ...

    def today(self) -> dt.date:
        """The current civil date in Belgium."""
        ...


class SystemClock:
    """The machine's clock."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def today(self) -> dt.date:
        return self.now().astimezone(BRUSSELS).date()


class OffsetClock:
    """The machine's clock moved so that today is ``start_date`` at construction; time still runs."""

    def __init__(self, start_date: dt.date) -> None:
        real = dt.datetime.now(dt.UTC)
        target = dt.datetime.combine(start_date, real.astimezone(BRUSSELS).timetz())
        self._offset = target - real

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self._offset

    def today(self) -> dt.date:
        return self.now().astimezone(BRUSSELS).date()


class FixedClock:
    """A clock that only moves when told to (tests)."""

    def __init__(self, instant: dt.datetime) -> None:
        if instant.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")
        self._now = instant

    def now(self) -> dt.datetime:
        return self._now

    def today(self) -> dt.date:
        return self._now.astimezone(BRUSSELS).date()

    def advance(self, delta: dt.timedelta) -> None:
        self._now += delta

    def set(self, instant: dt.datetime) -> None:
        self._now = instant


def clock_from_setting(today: dt.date | None) -> Clock:
    """The system clock, or one shifted to ``today`` when a sandbox date is configured."""
    return SystemClock() if today is None else OffsetClock(today)
