"""The DMG file of a patient: load its rows into :class:`oa_node.rules.DmgFile`, lock it, save the diff.

The rule engine returns a new file whose collections keep the order of the old one and only append or
replace in place; :meth:`DmgFileRepository.save` therefore compares position by position and issues an
UPDATE for a changed row and an INSERT for a new one (nothing is ever deleted).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, union, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel, col, select

from oa_node import models as m
from oa_node import rules as r

# (dataclass of the rules, table, column holding the NISS)
_COLLECTIONS: tuple[tuple[str, type[Any], type[SQLModel], str], ...] = (
    ("holdings", r.Holding, m.HoldingRow, "niss"),
    ("payments", r.Payment, m.PaymentRow, "patient"),
    ("contacts", r.Contact, m.ContactRow, "niss"),
    ("attestations", r.PaperAttestation, m.AttestationRow, "niss"),
    ("notifications", r.Notification, m.NotificationRow, "niss"),
)


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _from_db(hint: Any, value: Any) -> Any:
    """Turn a column value back into the dataclass field's type (enums, Decimal; Optional allowed)."""
    if value is None:
        return None
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    if hint is Decimal:
        return Decimal(value)
    return value


def _to_db(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    return value


def to_dataclass(cls: type[Any], row: SQLModel) -> Any:
    """The rules' dataclass ``cls`` from its row."""
    hints = _hints(cls)
    return cls(**{f.name: _from_db(hints[f.name], getattr(row, f.name)) for f in dataclasses.fields(cls)})


def _values(item: Any) -> dict[str, Any]:
    return {f.name: _to_db(getattr(item, f.name)) for f in dataclasses.fields(item)}


@dataclass
class LoadedFile:
    """A patient's file as the rules see it, with the rows it came from (for :meth:`save`)."""

    file: r.DmgFile
    rows: dict[str, list[SQLModel]]


@dataclass(frozen=True)
class HolderYearEntry:
    """One patient of a physician's list for a year: holdings and payments to that physician."""

    niss: str
    holdings: tuple[r.Holding, ...]
    payments: tuple[r.Payment, ...]


class DmgFileRepository:
    """Rows of patients' DMG files. The caller owns the transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lock(self, niss: str) -> bool:
        """Take the per-patient lock (bump ``file_version``); False when the patient is not a member.

        Issued as the first write of the transaction, it takes the row lock on PostgreSQL and the
        database write lock on SQLite, so concurrent changes of one patient run one after the other.
        """
        result = await self.session.execute(
            update(m.Member).where(col(m.Member.niss) == niss).values(file_version=m.Member.file_version + 1)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def load(self, niss: str) -> LoadedFile:
        rows: dict[str, list[SQLModel]] = {}
        parts: dict[str, tuple[Any, ...]] = {}
        for name, cls, table, key in _COLLECTIONS:
            stmt = select(table).where(getattr(table, key) == niss).order_by(_rowid(table))
            found = list((await self.session.execute(stmt)).scalars())
            rows[name] = found
            parts[name] = tuple(to_dataclass(cls, row) for row in found)
        return LoadedFile(r.DmgFile(patient=niss, **parts), rows)

    async def save(self, loaded: LoadedFile, after: r.DmgFile) -> None:
        """Persist what the rules changed between ``loaded.file`` and ``after``."""
        for name, _cls, table, key in _COLLECTIONS:
            before_items: tuple[Any, ...] = getattr(loaded.file, name)
            after_items: tuple[Any, ...] = getattr(after, name)
            rows = loaded.rows[name]
            if len(after_items) < len(before_items):
                raise RuntimeError(f"the rules removed {name} rows: not supported")
            for index, item in enumerate(after_items):
                if index < len(before_items):
                    if item != before_items[index]:
                        for column, value in _values(item).items():
                            setattr(rows[index], column, value)
                    continue
                values = _values(item)
                values.setdefault(key, after.patient)
                self.session.add(table(**values))
        await self.session.flush()

    async def patients_with_holdings(self) -> list[str]:
        """Every NISS that has at least one holding (candidates for a year-end run)."""
        stmt = select(m.HoldingRow.niss).distinct().order_by(m.HoldingRow.niss)
        return list((await self.session.execute(stmt)).scalars())

    async def holder_year(
        self, holder: str, year: int, *, after_niss: str, limit: int
    ) -> list[HolderYearEntry]:
        """Patients whose DMG ``holder`` held during ``year`` or who paid ``holder`` a fee for it,
        in NISS order after ``after_niss``, at most ``limit``."""
        first, last = dt.date(year, 1, 1), dt.date(year, 12, 31)
        held: Any = select(col(m.HoldingRow.niss).label("niss")).where(
            col(m.HoldingRow.holder) == holder,
            col(m.HoldingRow.status) != r.HoldingStatus.CANCELLED.value,
            col(m.HoldingRow.start) <= last,
            col(m.HoldingRow.end) >= first,
        )
        paid: Any = select(col(m.PaymentRow.patient).label("niss")).where(
            col(m.PaymentRow.beneficiary) == holder, col(m.PaymentRow.year) == year
        )
        both = union(held, paid).subquery()
        stmt = select(both.c.niss).where(both.c.niss > after_niss).order_by(both.c.niss).limit(limit)
        patients = list((await self.session.execute(stmt)).scalars())
        if not patients:
            return []
        holdings = await self._in(m.HoldingRow, "niss", patients, m.HoldingRow.holder == holder)
        payments = await self._in(
            m.PaymentRow,
            "patient",
            patients,
            and_(col(m.PaymentRow.beneficiary) == holder, col(m.PaymentRow.year) == year),
        )
        entries: list[HolderYearEntry] = []
        for niss in patients:
            mine = tuple(
                h
                for h in (to_dataclass(r.Holding, row) for row in holdings if row.niss == niss)
                if h.live and h.start <= last and h.end >= first
            )
            fees = tuple(to_dataclass(r.Payment, row) for row in payments if row.patient == niss)
            entries.append(HolderYearEntry(niss, mine, fees))
        return entries

    async def _in(self, table: type[Any], key: str, values: Sequence[str], condition: Any) -> list[Any]:
        column = getattr(table, key)
        stmt = select(table).where(column.in_(values), condition).order_by(_rowid(table))
        return list((await self.session.execute(stmt)).scalars())


def _rowid(table: type[Any]) -> Any:
    return table.id
