"""Clocks, passed to services through their constructors (rules never read the time themselves).

The sandbox can run "in another year" so that the worked scenarios of the seeds (2012–2015) can be played
against the real services: :class:`OffsetClock` shifts the system time by an offset, which the sandbox's test
clock moves at run time (forward only: :func:`moved_offset`); its listeners hear of each move.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
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
    """The machine's clock moved by an offset (``start_date`` today at construction, or ``offset``); time
    still runs. :meth:`move` changes the offset at run time and tells the listeners."""

    def __init__(self, start_date: dt.date | None = None, *, offset: dt.timedelta | None = None) -> None:
        if start_date is not None and offset is None:
            offset = moved_offset(dt.timedelta(0), start_date)
        elif offset is None or start_date is not None:
            raise ValueError("OffsetClock needs a start date or an offset")
        self._offset = offset
        self._listeners: list[Callable[[], None]] = []

    @property
    def offset(self) -> dt.timedelta:
        """Mesh instant minus real instant."""
        return self._offset

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self._offset

    def today(self) -> dt.date:
        return self.now().astimezone(BRUSSELS).date()

    def move(self, offset: dt.timedelta) -> None:
        """Use ``offset`` from now on and call every listener (they run on the caller's thread)."""
        self._offset = offset
        for listener in list(self._listeners):
            listener()

    def listen(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every :meth:`move`."""
        self._listeners.append(listener)


def until_next_midnight(now: dt.datetime) -> float:
    """Seconds from ``now`` to the next midnight in Brussels (at least one)."""
    local = now.astimezone(BRUSSELS)
    midnight = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(), tzinfo=BRUSSELS)
    return max(1.0, (midnight - now).total_seconds())


class ClockBackwards(ValueError):
    """A move of the mesh clock to a date before the mesh date."""


def moved_offset(
    offset: dt.timedelta, day: dt.date, *, real: dt.datetime | None = None, forward_only: bool = False
) -> dt.timedelta:
    """The offset that makes ``day`` the mesh date, keeping the mesh's time of day (Brussels), from the
    current ``offset`` at the real instant ``real`` (now by default). With ``forward_only``, a ``day``
    before the current mesh date raises :class:`ClockBackwards`."""
    real = real if real is not None else dt.datetime.now(dt.UTC)
    mesh = (real + offset).astimezone(BRUSSELS)
    if forward_only and day < mesh.date():
        raise ClockBackwards(f"the mesh date is {mesh.date().isoformat()}; {day.isoformat()} is before it")
    target = dt.datetime.combine(day, mesh.timetz())
    return target - real


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


def clock_from_setting(today: dt.date | None, offset_seconds: float | None = None) -> Clock:
    """The system clock, or a movable one: shifted by ``offset_seconds`` (the sandbox's test clock, which
    the cluster supervisor keeps on disk), else to ``today`` when a sandbox date is configured."""
    if offset_seconds is not None:
        return OffsetClock(offset=dt.timedelta(seconds=offset_seconds))
    return SystemClock() if today is None else OffsetClock(today)
