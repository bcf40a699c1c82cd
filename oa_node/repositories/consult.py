"""The reads of a consult (the hot path of an insurer node): ONE statement, built once, at import.

:data:`CONSULT_BY_NISS` / :data:`CONSULT_BY_NUMBER` return, in one round trip, the requester's registration
(its provider row and its organisation row, both joined), the member with each affiliation period (one row
per period), the holding in force on the day asked (with its holder's and trainee's names, joined), and
whether a fee of that year was paid and not recovered. The rows hang on a one-row anchor, so that an unknown
requester or an unknown patient still gives one row (of NULLs), and the controls run in their order.
:data:`REQUESTER` alone serves the other requests (the provider's row, else the organisation's).

The consult runs through :class:`~mycarenet_core.reads.HotReads` (SQLAlchemy Core compiled once per
dialect and run by the driver: no ORM, no session, autocommit, nothing written, no transaction opened around
the read); :func:`requester` runs on the connection of the caller's transaction.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, bindparam, exists, false, literal, literal_column, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from mycarenet_core.reads import HotReads, Query
from oa_node import models as m
from oa_node import rules as r
from oa_node.convert import Names
from oa_node.repositories.dmg_files import to_dataclass

_provider = m.table_of(m.KnownProvider)
_organisation = m.table_of(m.Organisation)
_requester_p = m.table_of(m.KnownProvider).alias("rp")
_requester_o = m.table_of(m.Organisation).alias("ro")
_anchor = select(literal_column("1").label("one")).subquery("q")
_member = m.table_of(m.Member).alias("m")
_affiliation = m.table_of(m.Affiliation).alias("a")
_holding = m.table_of(m.HoldingRow).alias("h")
_covering = m.table_of(m.HoldingRow).alias("hc")
_payment = m.table_of(m.PaymentRow).alias("p")
_mine = m.table_of(m.PaymentRow).alias("pm")
"""The year's fee paid to the requester (at most one is not recovered: one fee per patient and year)."""
_holder_p = m.table_of(m.KnownProvider).alias("hp")
_holder_o = m.table_of(m.Organisation).alias("ho")
_trainee_p = m.table_of(m.KnownProvider).alias("tp")
_trainee_o = m.table_of(m.Organisation).alias("to")

REQUESTER = union_all(
    select(literal(0).label("kind"), _provider.c.role, _provider.c.valid_from, _provider.c.valid_until).where(
        _provider.c.inami == bindparam("inami")
    ),
    select(
        literal(1).label("kind"),
        _organisation.c.role,
        _organisation.c.valid_from,
        _organisation.c.valid_until,
    ).where(_organisation.c.inami == bindparam("inami")),
)
"""The requester's registration: kind 0 a provider, 1 an organisation (the provider wins)."""

_day = bindparam("day", type_=m.table_of(m.HoldingRow).c.start.type)
# The holding in force on the day: live (not cancelled), started on or before it, ending on or after it;
# the first in timeline order (start, seq), as DmgFile.holding_at.
_in_force = (
    select(_covering.c.id)
    .where(
        _covering.c.niss == _member.c.niss,
        _covering.c.status != r.HoldingStatus.CANCELLED.value,
        _covering.c.start <= _day,
        _covering.c.end >= _day,
    )
    .order_by(_covering.c.start, _covering.c.seq)
    .limit(1)
    .correlate(_member)
    .scalar_subquery()
)
_paid = exists().where(
    _payment.c.patient == _member.c.niss,
    _payment.c.year == bindparam("year"),
    _payment.c.recovered == false(),
)


_MINE = tuple(f.name for f in dataclasses.fields(r.Payment))


def _consult(where: Any) -> Select[Any]:
    return (
        select(
            _requester_p.c.role.label("requester_role"),
            _requester_p.c.valid_from.label("requester_from"),
            _requester_p.c.valid_until.label("requester_until"),
            _requester_o.c.role.label("requester_org_role"),
            _requester_o.c.valid_from.label("requester_org_from"),
            _requester_o.c.valid_until.label("requester_org_until"),
            _member.c.niss,
            _member.c.mutuality_code,
            _member.c.registration_number,
            _member.c.first_name,
            _member.c.last_name,
            _member.c.birth_date,
            _member.c.sex,
            _member.c.death_date,
            _affiliation.c.start.label("period_start"),
            _affiliation.c.end.label("period_end"),
            _holding.c.seq,
            _holding.c.holder,
            _holding.c.start,
            _holding.c.end,
            _holding.c.right_end,
            _holding.c.procedure,
            _holding.c.status,
            _holding.c.status_reason,
            _holding.c.status_date,
            _holding.c.reopened,
            _holding.c.trainee,
            _holding.c.payment_reference,
            _holder_p.c.role.label("holder_role"),
            _holder_p.c.first_name.label("holder_first"),
            _holder_p.c.last_name.label("holder_last"),
            _holder_o.c.role.label("holder_org_role"),
            _holder_o.c.name.label("holder_org_name"),
            _trainee_p.c.role.label("trainee_role"),
            _trainee_p.c.first_name.label("trainee_first"),
            _trainee_p.c.last_name.label("trainee_last"),
            _trainee_o.c.role.label("trainee_org_role"),
            _trainee_o.c.name.label("trainee_org_name"),
            _paid.label("paid"),
            *(_mine.c[f].label(f"mine_{f}") for f in _MINE),
        )
        .select_from(
            _anchor.outerjoin(_requester_p, _requester_p.c.inami == bindparam("inami"))
            .outerjoin(_requester_o, _requester_o.c.inami == bindparam("inami"))
            .outerjoin(_member, where)
            .outerjoin(_affiliation, _affiliation.c.niss == _member.c.niss)
            .outerjoin(
                _mine,
                and_(
                    _mine.c.patient == _member.c.niss,
                    _mine.c.year == bindparam("year"),
                    _mine.c.beneficiary == bindparam("inami"),
                    _mine.c.recovered == false(),
                    _mine.c.payee == r.Payee.PROVIDER.value,
                ),
            )
            .outerjoin(_holding, _holding.c.id == _in_force)
            .outerjoin(_holder_p, _holder_p.c.inami == _holding.c.holder)
            .outerjoin(_holder_o, _holder_o.c.inami == _holding.c.holder)
            .outerjoin(
                _trainee_p, and_(_holding.c.trainee.is_not(None), _trainee_p.c.inami == _holding.c.trainee)
            )
            .outerjoin(
                _trainee_o, and_(_holding.c.trainee.is_not(None), _trainee_o.c.inami == _holding.c.trainee)
            )
        )
        .order_by(_affiliation.c.start)
    )


CONSULT_BY_NISS = Query(_consult(_member.c.niss == bindparam("key")))
CONSULT_BY_NUMBER = Query(_consult(_member.c.registration_number == bindparam("key")))


@dataclass(frozen=True)
class Registration:
    """The requester as the reference data record it."""

    role: int
    valid_from: dt.date | None
    valid_until: dt.date | None


@dataclass(frozen=True)
class PatientOnDay:
    """A member as a consult sees them on a day: identity, periods, the holding then, the year's fee."""

    niss: str
    mutuality_code: str
    registration_number: str
    first_name: str
    last_name: str
    birth_date: dt.date | None
    sex: int
    death_date: dt.date | None
    periods: tuple[tuple[dt.date, dt.date | None], ...]
    holding: r.Holding | None
    names: Names
    paid_this_year: bool
    requester_fee: r.Payment | None = None
    """The year's fee paid to the requester, if any (with its due and paid dates)."""


def _names(row: Any, prefix: str, inami: str | None, names: Names) -> None:
    """Who ``inami`` is, as convert.names_of says it: an organisation's row wins over a provider's."""
    if not inami:
        return
    if getattr(row, f"{prefix}_org_role") is not None:
        names[inami] = (getattr(row, f"{prefix}_org_role"), "", getattr(row, f"{prefix}_org_name"))
    elif getattr(row, f"{prefix}_role") is not None:
        names[inami] = (
            getattr(row, f"{prefix}_role"),
            getattr(row, f"{prefix}_first"),
            getattr(row, f"{prefix}_last"),
        )


async def requester(conn: AsyncConnection, inami: str) -> Registration | None:
    """The registration of ``inami`` (its provider row, else its organisation row), on ``conn``."""
    rows = (await conn.execute(REQUESTER, {"inami": inami})).all()
    if not rows:
        return None
    row = min(rows, key=lambda x: x.kind)
    return Registration(row.role, row.valid_from, row.valid_until)


class ConsultRepository:
    """The consult's read (one statement, one round trip)."""

    def __init__(self, reads: HotReads) -> None:
        self.reads = reads

    async def consult(
        self, *, requester: str, niss: str | None, registration_number: str | None, day: dt.date
    ) -> tuple[Registration | None, PatientOnDay | None]:
        """The requester's registration, and the member named by ``niss`` (else ``registration_number``) as
        on ``day`` (None when unknown), in one round trip."""
        statement, key = (
            (CONSULT_BY_NISS, niss) if niss is not None else (CONSULT_BY_NUMBER, registration_number)
        )
        rows = await self.reads.all(statement, {"inami": requester, "key": key, "day": day, "year": day.year})
        first = rows[0]
        if first.requester_role is not None:
            registration: Registration | None = Registration(
                first.requester_role, first.requester_from, first.requester_until
            )
        elif first.requester_org_role is not None:
            registration = Registration(
                first.requester_org_role, first.requester_org_from, first.requester_org_until
            )
        else:
            registration = None
        if first.niss is None:
            return registration, None
        holding: r.Holding | None = None
        names: Names = {}
        if first.holder is not None:
            holding = r.Holding(
                seq=first.seq,
                holder=first.holder,
                start=first.start,
                end=first.end,
                right_end=first.right_end,
                procedure=r.Procedure(first.procedure),
                status=r.HoldingStatus(first.status),
                status_reason=r.StatusReason(first.status_reason) if first.status_reason else None,
                status_date=first.status_date,
                reopened=bool(first.reopened),
                trainee=first.trainee,
                payment_reference=first.payment_reference,
            )
            _names(first, "holder", holding.holder, names)
            _names(first, "trainee", holding.trainee, names)
        return registration, PatientOnDay(
            niss=first.niss,
            mutuality_code=first.mutuality_code,
            registration_number=first.registration_number,
            first_name=first.first_name,
            last_name=first.last_name,
            birth_date=first.birth_date,
            sex=first.sex,
            death_date=first.death_date,
            periods=tuple((row.period_start, row.period_end) for row in rows if row.period_start is not None),
            holding=holding,
            names=names,
            paid_this_year=bool(first.paid),
            requester_fee=to_dataclass(r.Payment, _Prefixed(first, "mine_"))
            if first.mine_reference
            else None,
        )


class _Prefixed:
    """The ``prefix``-ed columns of a row under their own names (for :func:`to_dataclass`)."""

    def __init__(self, row: Any, prefix: str) -> None:
        self._row, self._prefix = row, prefix

    def __getattr__(self, name: str) -> Any:
        return getattr(self._row, self._prefix + name)


__all__ = [
    "CONSULT_BY_NISS",
    "CONSULT_BY_NUMBER",
    "REQUESTER",
    "ConsultRepository",
    "PatientOnDay",
    "Registration",
    "requester",
]
