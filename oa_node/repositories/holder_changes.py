"""The holder-change log: appended in the transaction of every change of who holds a patient's DMG, read
by eHealth a page at a time or as a watch. Sequence numbers come from the holder feed's head row, updated
just before the rows are inserted: concurrent writers queue on that row until the first commits, so that
sequence order is commit order and a reader never skips a change committed late."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mycarenet_core.reads import HotReads, Query
from oa_node import models as m

_changes = m.table_of(m.HolderChangeRow)
_head = m.table_of(m.FeedHead)

ALLOCATE = (
    update(_head)
    .where(_head.c.id == m.HOLDER_FEED)
    .values(last_sequence=_head.c.last_sequence + bindparam("count"))
    .returning(_head.c.last_sequence)
)
INSERT = insert(_changes)
AFTER = Query(
    select(_changes)
    .where(_changes.c.sequence > bindparam("after"))
    .order_by(_changes.c.sequence)
    .limit(bindparam("limit"))
)
HEAD = Query(select(_head.c.last_sequence).where(_head.c.id == m.HOLDER_FEED))


@dataclass(frozen=True)
class NewHolderChange:
    """A change to append (its sequence and time are given when it is written)."""

    patient_niss: str
    holder_inami: str
    previous_holder_inami: str
    start_date: dt.date
    source_reference: str
    traceparent: str = ""
    end_date: dt.date | None = None


@dataclass(frozen=True)
class HolderChange:
    sequence: int
    change_time: dt.datetime
    patient_niss: str
    holder_inami: str
    previous_holder_inami: str
    start_date: dt.date
    source_reference: str
    traceparent: str
    end_date: dt.date | None = None


async def append(session: AsyncSession, changes: Sequence[NewHolderChange], now: dt.datetime) -> int:
    """Append ``changes`` in the caller's transaction; return the last sequence written (0: none)."""
    if not changes:
        return 0
    last = (await session.execute(ALLOCATE, {"count": len(changes)})).scalar_one()
    first = last - len(changes) + 1
    await session.execute(
        INSERT,
        [
            {
                "sequence": first + index,
                "change_time": now,
                "patient_niss": change.patient_niss,
                "holder_inami": change.holder_inami,
                "previous_holder_inami": change.previous_holder_inami,
                "start_date": change.start_date,
                "end_date": change.end_date,
                "source_reference": change.source_reference,
                "traceparent": change.traceparent,
            }
            for index, change in enumerate(changes)
        ],
    )
    return int(last)


async def after(reads: HotReads, after_sequence: int, limit: int) -> list[HolderChange]:
    """At most ``limit`` changes after ``after_sequence``, in sequence order."""
    rows = await reads.all(AFTER, {"after": after_sequence, "limit": limit})
    return [
        HolderChange(
            row.sequence,
            row.change_time,
            row.patient_niss,
            row.holder_inami,
            row.previous_holder_inami,
            row.start_date,
            row.source_reference,
            row.traceparent,
            row.end_date,
        )
        for row in rows
    ]


async def head(reads: HotReads) -> int:
    """The last sequence committed."""
    rows = await reads.all(HEAD, {})
    return int(rows[0].last_sequence) if rows else 0


__all__ = ["HolderChange", "NewHolderChange", "after", "append", "head"]
