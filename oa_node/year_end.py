"""The insurer's year ends, run once per year when the mesh clock goes over 31 December (seed 002).

Whichever way the clock got there (the sandbox's test clock moved by a day or by years, or time running
past midnight), each year the node lived through is closed once: the year-end run of
:meth:`~oa_node.dmg.DmgOperations.process_year_end` (the administrative prolongations, with their payments,
due 30 days later) with the processing date 1 January of the next year, the date it would have run on had
time run naturally (so the result does not depend on the path the clock took). The row of
:class:`~oa_node.models.YearEndRun` written after the run is the proof it ran; a run cut short (a crash)
runs again at the next start, which the rules make harmless (a year already paid is not paid again).

No polling: :class:`YearEnds` wakes up when the clock moves (:meth:`clock_moved`, a listener of the clock)
and at the next mesh midnight.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Collection

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mycarenet_core.clock import Clock, until_next_midnight
from mycarenet_core.db import transaction
from oa_node import controls as c
from oa_node import models as m
from oa_node.audit import AuditTrail
from oa_node.dmg import DmgOperations

log = logging.getLogger(__name__)

MAX_YEARS = 300  # a move runs at most this many year ends at once (100 years of test clock fit)


def years_due(first_day: dt.date, today: dt.date, done: Collection[int]) -> list[int]:
    """The years whose 31 December the node lived through (on or after ``first_day``) and that are over on
    ``today``, not yet run (``done``), oldest first."""
    return [year for year in range(first_day.year, today.year) if year not in done][:MAX_YEARS]


async def record_origin(sessions: async_sessionmaker[AsyncSession], today: dt.date) -> dt.date:
    """The first mesh date of the node: ``today`` on its first start, the recorded one afterwards."""
    async with transaction(sessions) as session:
        found = (await session.execute(select(m.ClockOrigin.first_day))).scalar_one_or_none()  # type: ignore[call-overload]
        if found is not None:
            return found  # type: ignore[no-any-return]
    try:
        async with transaction(sessions) as session:
            await session.execute(insert(m.ClockOrigin), [{"id": 1, "first_day": today}])
    except IntegrityError:  # another start won: read its date
        return await record_origin(sessions, today)
    return today


class YearEnds:
    """Runs the year ends that are due, once each, and keeps the proof."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        operations: DmgOperations,
        audit: AuditTrail,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._operations = operations
        self._audit = audit
        self._running = asyncio.Lock()
        self._moved = asyncio.Event()
        self._since_move: list[int] = []  # the years run since the clock last moved (by any caller)
        self.ran = asyncio.Event()  # set after each year end run (for whoever waits for one)

    def clock_moved(self) -> None:
        """The clock's listener: wake :meth:`run` up."""
        self._since_move = []
        self._moved.set()

    async def after_move(self) -> list[int]:
        """The observer of a move (ProcessClockService answers after it): run what is due; the years run
        since the move, by this call or by :meth:`run`, woken by the same move."""
        await self.catch_up()
        return list(self._since_move)

    async def done(self) -> dict[int, m.YearEndRun]:
        """The year ends run so far, by year."""
        async with self._sessions() as session:
            rows = (await session.execute(select(m.YearEndRun))).scalars().all()
        return {row.year: row for row in rows}

    async def catch_up(self) -> list[int]:
        """Run the year ends due on the mesh date (one at a time, oldest first); the years run."""
        async with self._running:
            first_day = await record_origin(self._sessions, self._clock.today())
            years = years_due(first_day, self._clock.today(), set(await self.done()))
            for year in years:
                await self._run(year)
            return years

    async def _run(self, year: int) -> None:
        order = c.YearEnd(year, dt.date(year + 1, 1, 1))
        async with self._audit.call("YearEnd", {"peer": "clock"}) as entry:
            result = await self._operations.process_year_end(order, entry)
        async with transaction(self._sessions) as session:
            await session.execute(
                insert(m.YearEndRun),
                [
                    {
                        "year": year,
                        "processing_date": order.today,
                        "run_at": self._clock.now(),
                        "patients_affected": result.patients_affected,
                        "payments_created": result.payments_created,
                        "payments_recovered": result.payments_recovered,
                    }
                ],
            )
        self._since_move.append(year)
        self.ran.set()
        log.info(
            "year end %d run: %d patients, %d payments",
            year,
            result.patients_affected,
            result.payments_created,
        )

    async def run(self) -> None:
        """The background job: catch up, then sleep until the clock moves or the next mesh midnight."""
        while True:
            self._moved.clear()
            await self.catch_up()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._moved.wait(), until_next_midnight(self._clock.now()))


__all__ = ["MAX_YEARS", "YearEnds", "record_origin", "years_due"]
