"""The DMG file of a patient: load its rows into :class:`oa_node.rules.DmgFile`, lock it, save the diff.

SQLAlchemy Core statements built once, at import, run on the connection of the caller's transaction (no
ORM objects, no identity map, no unit of work). The rule engine returns a new file whose collections keep
the order of the old one and only append or replace in place; :meth:`DmgFileRepository.save` therefore
compares position by position and issues one batched UPDATE (by row id) for the changed rows and one
batched INSERT for the new ones per table (nothing is ever deleted).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, and_, bindparam, insert, select, union, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from oa_node import models as m
from oa_node import rules as r


@dataclass(frozen=True)
class _Collection:
    """A collection of :class:`oa_node.rules.DmgFile`, its dataclass, its table and statements."""

    name: str
    cls: type[Any]
    table: Table
    key: str
    """The column holding the patient's NISS."""
    fields: tuple[str, ...]
    converters: tuple[Callable[[Any], Any], ...]
    load: Any
    insert: Any
    update: Any


def _converter(hint: Any) -> Callable[[Any], Any]:
    """Turn a column value back into the dataclass field's type (enums, Decimal, bool; Optional allowed)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        kind = hint
        return lambda value: None if value is None else kind(value)
    if hint is Decimal:
        return lambda value: None if value is None else Decimal(value)
    if hint is bool:
        return lambda value: None if value is None else bool(value)
    return lambda value: value


def _collection(name: str, cls: type[Any], model: Any, key: str) -> _Collection:
    table = m.table_of(model)
    hints = typing.get_type_hints(cls)
    fields = tuple(f.name for f in dataclasses.fields(cls))
    return _Collection(
        name=name,
        cls=cls,
        table=table,
        key=key,
        fields=fields,
        converters=tuple(_converter(hints[f]) for f in fields),
        load=select(table.c.id, *(table.c[f] for f in fields))
        .where(table.c[key] == bindparam("niss"))
        .order_by(table.c.id),
        insert=insert(table),
        update=update(table)
        .where(table.c.id == bindparam("row_id"))
        .values({f: bindparam(f"v_{f}") for f in fields}),
    )


COLLECTIONS: tuple[_Collection, ...] = (
    _collection("holdings", r.Holding, m.HoldingRow, "niss"),
    _collection("payments", r.Payment, m.PaymentRow, "patient"),
    _collection("contacts", r.Contact, m.ContactRow, "niss"),
    _collection("attestations", r.PaperAttestation, m.AttestationRow, "niss"),
    _collection("notifications", r.Notification, m.NotificationRow, "niss"),
)
_BY_CLASS = {c.cls: c for c in COLLECTIONS}
_members = m.table_of(m.Member)
_holdings = m.table_of(m.HoldingRow)
_payments = m.table_of(m.PaymentRow)

LOCK = (
    update(_members)
    .where(_members.c.niss == bindparam("patient"))
    .values(file_version=_members.c.file_version + 1)
)
PATIENTS_WITH_HOLDINGS = select(_holdings.c.niss).distinct().order_by(_holdings.c.niss)


def to_dataclass(cls: type[Any], row: Any) -> Any:
    """The rules' dataclass ``cls`` from its row (anything with the columns as attributes)."""
    spec = _BY_CLASS[cls]
    return cls(*(convert(getattr(row, f)) for f, convert in zip(spec.fields, spec.converters, strict=True)))


def _to_db(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    return value


def _values(spec: _Collection, item: Any) -> dict[str, Any]:
    return {f: _to_db(getattr(item, f)) for f in spec.fields}


@dataclass
class LoadedFile:
    """A patient's file as the rules see it, with the ids of the rows it came from (for :meth:`save`)."""

    file: r.DmgFile
    ids: dict[str, list[int]]


@dataclass(frozen=True)
class HolderYearEntry:
    """One patient of a physician's list for a year: holdings and payments to that physician (not those
    reimbursed to the patient)."""

    niss: str
    holdings: tuple[r.Holding, ...]
    payments: tuple[r.Payment, ...]


class DmgFileRepository:
    """Rows of patients' DMG files, on the connection of the session's transaction (the caller owns it)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _conn(self) -> AsyncConnection:
        return await self.session.connection()

    async def lock(self, niss: str) -> bool:
        """Take the per-patient lock (bump ``file_version``); False when the patient is not a member.

        Issued as the first write of the transaction, it takes the row lock on PostgreSQL and the
        database write lock on SQLite, so concurrent changes of one patient run one after the other.
        """
        result = await (await self._conn()).execute(LOCK, {"patient": niss})
        return bool(result.rowcount == 1)

    async def load(self, niss: str) -> LoadedFile:
        conn = await self._conn()
        parts: dict[str, tuple[Any, ...]] = {}
        ids: dict[str, list[int]] = {}
        for spec in COLLECTIONS:
            rows = (await conn.execute(spec.load, {"niss": niss})).all()
            ids[spec.name] = [row.id for row in rows]
            parts[spec.name] = tuple(
                spec.cls(*(convert(value) for convert, value in zip(spec.converters, row[1:], strict=True)))
                for row in rows
            )
        return LoadedFile(r.DmgFile(patient=niss, **parts), ids)

    async def save(self, loaded: LoadedFile, after: r.DmgFile) -> None:
        """Persist what the rules changed between ``loaded.file`` and ``after``."""
        conn = await self._conn()
        for spec in COLLECTIONS:
            before_items: tuple[Any, ...] = getattr(loaded.file, spec.name)
            after_items: tuple[Any, ...] = getattr(after, spec.name)
            if len(after_items) < len(before_items):
                raise RuntimeError(f"the rules removed {spec.name} rows: not supported")
            changed = [
                {"row_id": row_id, **{f"v_{k}": v for k, v in _values(spec, item).items()}}
                for row_id, old, item in zip(loaded.ids[spec.name], before_items, after_items, strict=False)
                if item != old
            ]
            added = [
                {**_values(spec, item), spec.key: after.patient} for item in after_items[len(before_items) :]
            ]
            if changed:
                await conn.execute(spec.update, changed)
            if added:
                await conn.execute(spec.insert, added)

    async def patients_with_holdings(self) -> list[str]:
        """Every NISS that has at least one holding (candidates for a year-end run)."""
        return list((await (await self._conn()).execute(PATIENTS_WITH_HOLDINGS)).scalars())

    async def holder_year(
        self, holder: str, year: int, *, after_niss: str, limit: int
    ) -> list[HolderYearEntry]:
        """Patients whose DMG ``holder`` held during ``year`` or who paid ``holder`` a fee for it,
        in NISS order after ``after_niss``, at most ``limit``."""
        conn = await self._conn()
        first, last = dt.date(year, 1, 1), dt.date(year, 12, 31)
        held = select(_holdings.c.niss.label("niss")).where(
            _holdings.c.holder == holder,
            _holdings.c.status != r.HoldingStatus.CANCELLED.value,
            _holdings.c.start <= last,
            _holdings.c.end >= first,
        )
        # Fees paid to the physician: a 102771 reimbursed to the patient is not a payment to the GP.
        to_holder = and_(
            _payments.c.beneficiary == holder,
            _payments.c.year == year,
            _payments.c.payee == r.Payee.PROVIDER.value,
        )
        paid = select(_payments.c.patient.label("niss")).where(to_holder)
        both = union(held, paid).subquery()
        stmt = select(both.c.niss).where(both.c.niss > after_niss).order_by(both.c.niss).limit(limit)
        patients = list((await conn.execute(stmt)).scalars())
        if not patients:
            return []
        holdings = await self._in(conn, _BY_CLASS[r.Holding], patients, _holdings.c.holder == holder)
        payments = await self._in(
            conn,
            _BY_CLASS[r.Payment],
            patients,
            to_holder,
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

    async def _in(
        self, conn: AsyncConnection, spec: _Collection, values: Sequence[str], condition: Any
    ) -> Sequence[Any]:
        table = spec.table
        stmt = select(table).where(table.c[spec.key].in_(values), condition).order_by(table.c.id)
        return (await conn.execute(stmt)).all()


__all__ = ["COLLECTIONS", "DmgFileRepository", "HolderYearEntry", "LoadedFile", "to_dataclass"]
