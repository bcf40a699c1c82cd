"""The intermutualist filter: NISS + date → insurer, kept compact in memory and backed by the hub DB.

Memory layout (designed for a national population of 11.5 million NISS): two parallel sorted
``array('q')`` — the NISS as an integer and one packed 64-bit span (insurer, first day, last day) — so the
common case (one affiliation at one insurer) costs 16 bytes per person. People with several periods (a
change of mutuality) have their spans in two more sorted arrays, 16 bytes per span. Changes land in a
delta dict that is merged into the arrays when it grows past a fraction of the base (amortised: each merge
copies the arrays once, with C slices). Member numbers are not held in memory: they are looked up in the
DB (indexed) when a request names a patient by member number.
"""

from __future__ import annotations

import datetime as dt
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from hub.models import Affiliation, FeedCursor
from mycarenet_core.identifiers import INSURER_CODES, IdentifierError, parse_member_number

# (insurer index 1..7, first day, last day or OPEN), days counted from EPOCH.
Span = tuple[int, int, int]
EPOCH = dt.date(1800, 1, 1).toordinal() - 1
OPEN = 0
_DAY_BITS = 20
_DAY_MASK = (1 << _DAY_BITS) - 1
INSURER_INDEX: dict[str, int] = {code: i + 1 for i, code in enumerate(INSURER_CODES)}
_MULTI = 0  # packed value meaning "see the side dict"


def day(value: dt.date) -> int:
    return value.toordinal() - EPOCH


def make_span(insurer_code: str, start: dt.date, end: dt.date | None) -> Span:
    return (INSURER_INDEX[insurer_code], day(start), OPEN if end is None else day(end))


def _pack(span: Span) -> int:
    insurer, start, end = span
    return (insurer << (2 * _DAY_BITS)) | (start << _DAY_BITS) | end


def _unpack(value: int) -> Span:
    return (value >> (2 * _DAY_BITS), (value >> _DAY_BITS) & _DAY_MASK, value & _DAY_MASK)


class RoutingIndex:
    """NISS (as int) → affiliation spans; answers "which insurer on this date"."""

    def __init__(self, *, min_delta: int = 65_536, delta_fraction: float = 0.125) -> None:
        # One row per NISS: the NISS and its packed span, or _MULTI when it has several spans, which are
        # then in the overflow arrays (one row per span, sorted by NISS).
        self._keys = array("q")
        self._vals = array("q")
        self._mkeys = array("q")
        self._mvals = array("q")
        self._delta: dict[int, tuple[Span, ...]] = {}
        self._min_delta = min_delta
        self._fraction = delta_fraction

    def __len__(self) -> int:
        """Number of NISS known (the delta is merged first)."""
        self.compact()
        return len(self._keys)

    def _base_spans(self, niss: int) -> tuple[Span, ...]:
        keys = self._keys
        i = bisect_left(keys, niss)
        if i < len(keys) and keys[i] == niss:
            value = self._vals[i]
            if value != _MULTI:
                return (_unpack(value),)
            lo, hi = bisect_left(self._mkeys, niss), bisect_right(self._mkeys, niss)
            return tuple(_unpack(v) for v in self._mvals[lo:hi])
        return ()

    def spans(self, niss: int) -> tuple[Span, ...]:
        found = self._delta.get(niss)
        return found if found is not None else self._base_spans(niss)

    def route(self, niss: int, on: dt.date) -> str | None:
        """The insurer the NISS is affiliated with on ``on``, or None."""
        when = day(on)
        for insurer, start, end in self.spans(niss):
            if start <= when and (end == OPEN or when <= end):
                return INSURER_CODES[insurer - 1]
        return None

    def known(self, niss: int) -> bool:
        return bool(self.spans(niss))

    def replace(self, niss: int, insurer_code: str, spans: Iterable[Span]) -> None:
        """Replace every span of ``insurer_code`` for ``niss`` (an affiliation-feed change)."""
        index = INSURER_INDEX[insurer_code]
        kept = [s for s in self.spans(niss) if s[0] != index]
        self._delta[niss] = tuple(sorted([*kept, *spans], key=lambda s: (s[1], s[0])))
        if len(self._delta) > max(self._min_delta, int(len(self._keys) * self._fraction)):
            self.compact()

    def _append(self, keys: array[int], vals: array[int], niss: int, spans: Sequence[Span]) -> None:
        keys.append(niss)
        if len(spans) == 1:
            vals.append(_pack(spans[0]))
            return
        vals.append(_MULTI)
        for span in spans:
            self._mkeys.append(niss)
            self._mvals.append(_pack(span))

    def load_sorted(self, entries: Iterable[tuple[int, Sequence[Span]]]) -> None:
        """Bulk-append entries in strictly increasing NISS order, all greater than what is loaded."""
        for niss, spans in entries:
            if spans:
                self._append(self._keys, self._vals, niss, spans)

    def compact(self) -> None:
        """Merge the delta into the sorted arrays (one pass, copying runs with C slices)."""
        if not self._delta:
            return
        old_keys, old_vals, old_mkeys, old_mvals = self._keys, self._vals, self._mkeys, self._mvals
        keys, vals = array("q"), array("q")
        self._mkeys, self._mvals = array("q"), array("q")
        prev = mprev = 0
        for niss, spans in sorted(self._delta.items()):
            i = bisect_left(old_keys, niss, prev)
            keys.extend(old_keys[prev:i])
            vals.extend(old_vals[prev:i])
            prev = i + 1 if i < len(old_keys) and old_keys[i] == niss else i
            lo = bisect_left(old_mkeys, niss, mprev)
            hi = bisect_right(old_mkeys, niss, lo)
            self._mkeys.extend(old_mkeys[mprev:lo])
            self._mvals.extend(old_mvals[mprev:lo])
            mprev = hi
            if spans:
                self._append(keys, vals, niss, spans)
        keys.extend(old_keys[prev:])
        vals.extend(old_vals[prev:])
        self._mkeys.extend(old_mkeys[mprev:])
        self._mvals.extend(old_mvals[mprev:])
        self._keys, self._vals = keys, vals
        self._delta.clear()


# --- periods as stored in the DB ----------------------------------------------------------------------


def format_periods(periods: Iterable[tuple[dt.date, dt.date | None]]) -> str:
    return ";".join(f"{s.isoformat()}/{e.isoformat() if e else ''}" for s, e in periods)


def parse_periods(text: str) -> list[tuple[dt.date, dt.date | None]]:
    out: list[tuple[dt.date, dt.date | None]] = []
    for item in filter(None, text.split(";")):
        start, _, end = item.partition("/")
        out.append((dt.date.fromisoformat(start), dt.date.fromisoformat(end) if end else None))
    return out


def spans_of(insurer_code: str, periods: Iterable[tuple[dt.date, dt.date | None]]) -> list[Span]:
    return [make_span(insurer_code, s, e) for s, e in periods]


def normalise_registration(mutuality_code: str, registration_number: str) -> str:
    try:
        return parse_member_number(mutuality_code, registration_number).registration_number
    except IdentifierError:
        return registration_number.strip().upper()


# --- repository -----------------------------------------------------------------------------------------


class RoutingRepository:
    """The routing tables in one session (the caller owns the transaction)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def cursor(self, insurer_code: str) -> int:
        row = await self.session.get(FeedCursor, insurer_code)
        return row.sequence if row else 0

    async def cursors(self) -> dict[str, int]:
        rows = (await self.session.execute(select(FeedCursor))).scalars().all()
        return {r.insurer_code: r.sequence for r in rows}

    async def apply(
        self,
        insurer_code: str,
        changes: Sequence[tuple[str, str, list[tuple[dt.date, dt.date | None]]]],
        sequence: int,
    ) -> None:
        """Store the periods of each (niss, registration number) at this insurer and move the cursor."""
        latest: dict[str, tuple[str, list[tuple[dt.date, dt.date | None]]]] = {}
        for niss, registration, periods in changes:
            latest[niss] = (registration, periods)
        nisses = list(latest)
        for start in range(0, len(nisses), 500):
            chunk = nisses[start : start + 500]
            await self.session.execute(
                delete(Affiliation).where(
                    col(Affiliation.insurer_code) == insurer_code, col(Affiliation.niss).in_(chunk)
                )
            )
        rows = [
            Affiliation(
                niss=niss,
                insurer_code=insurer_code,
                registration_number=normalise_registration(insurer_code, registration),
                periods=format_periods(periods),
            )
            for niss, (registration, periods) in latest.items()
            if periods
        ]
        self.session.add_all(rows)
        cursor = await self.session.get(FeedCursor, insurer_code)
        if cursor is None:
            self.session.add(FeedCursor(insurer_code=insurer_code, sequence=sequence))
        else:
            cursor.sequence = max(cursor.sequence, sequence)

    async def niss_by_member(self, insurer_code: str, registration_number: str) -> str | None:
        reg = normalise_registration(insurer_code, registration_number)
        result = await self.session.execute(
            select(Affiliation.niss).where(
                col(Affiliation.insurer_code) == insurer_code,
                col(Affiliation.registration_number) == reg,
            )
        )
        return result.scalars().first()

    async def load_into(self, index: RoutingIndex, *, batch: int = 10_000) -> int:
        """Fill an empty index from the table (streamed in NISS order); return the number of NISS."""
        stream = await self.session.stream(
            select(Affiliation.niss, Affiliation.insurer_code, Affiliation.periods).order_by(
                col(Affiliation.niss), col(Affiliation.insurer_code)
            ),
            execution_options={"yield_per": batch},
        )
        count = 0
        current: int | None = None
        spans: list[Span] = []
        pending: list[tuple[int, list[Span]]] = []
        async for niss, insurer_code, periods in stream:
            key = int(niss)
            if key != current:
                if current is not None:
                    pending.append((current, spans))
                    count += 1
                current, spans = key, []
            if insurer_code in INSURER_INDEX:
                spans.extend(spans_of(insurer_code, parse_periods(periods)))
            if len(pending) >= batch:
                index.load_sorted((k, sorted(v, key=lambda s: s[1])) for k, v in pending)
                pending = []
        if current is not None:
            pending.append((current, spans))
            count += 1
        index.load_sorted((k, sorted(v, key=lambda s: s[1])) for k, v in pending)
        return count
