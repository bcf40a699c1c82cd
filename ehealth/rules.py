"""eHealth business rules as pure functions over plain data: no I/O, no clock (dates are parameters)."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mycarenet_core.errors import McnCode, MeshError, business_error, field_error

ONE_DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Period:
    """Closed interval of civil dates; ``end`` None = open. ``end = start - 1 day`` is an empty period."""

    start: dt.date
    end: dt.date | None = None

    def contains(self, day: dt.date) -> bool:
        return self.start <= day and (self.end is None or day <= self.end)

    @property
    def is_empty(self) -> bool:
        """True for a cancelled period (ended before it started)."""
        return self.end is not None and self.end < self.start

    def overlaps(self, other: Period) -> bool:
        if self.is_empty or other.is_empty:
            return False
        return (self.end is None or other.start <= self.end) and (
            other.end is None or self.start <= other.end
        )

    def covers(self, other: Period) -> bool:
        """True when every day of ``other`` lies in this period."""
        if other.start < self.start:
            return False
        if self.end is None:
            return True
        return other.end is not None and other.end <= self.end

    def ended_by(self, last_day: dt.date) -> Period:
        """This period cut to end at ``last_day`` at the latest (never lengthened)."""
        end = last_day if self.end is None else min(self.end, last_day)
        return Period(self.start, end)


def earliest_end(start: dt.date) -> dt.date:
    """The smallest end a period starting on ``start`` may be given: the day before (an empty period)."""
    return start - ONE_DAY


def check_end(end: dt.date, start: dt.date, field: str) -> None:
    """An end date given to revoke something may be at most one day before its start (an empty period,
    i.e. cancelled); earlier is 113."""
    if end < earliest_end(start):
        raise field_error(field, McnCode.IMPLAUSIBLE_DATE, "the end is more than a day before the start")


# --- sessions -------------------------------------------------------------------------------------------


def token_lifetime(requested_seconds: int, maximum: dt.timedelta) -> dt.timedelta:
    """The lifetime to grant: the maximum for 0, else the request capped at the maximum (12 h at most)."""
    if requested_seconds < 0:
        raise ValueError("a lifetime cannot be negative")
    if requested_seconds == 0:
        return maximum
    return min(dt.timedelta(seconds=requested_seconds), maximum)


# --- therapeutic relations -------------------------------------------------------------------------------


class Proof(enum.Enum):
    """Proof of a therapeutic relation, strongest first in :data:`PROOF_STRENGTH`."""

    EID_READ = "RELATION_PROOF_EID_READ"
    ISI_PLUS_READ = "RELATION_PROOF_ISI_PLUS_READ"
    DMG = "RELATION_PROOF_DMG"
    PATIENT_DECLARATION = "RELATION_PROOF_PATIENT_DECLARATION"


PROOF_STRENGTH: dict[Proof, int] = {
    Proof.DMG: 4,
    Proof.EID_READ: 3,
    Proof.ISI_PLUS_READ: 2,
    Proof.PATIENT_DECLARATION: 1,
}


@dataclass(frozen=True)
class Relation:
    """A therapeutic relation as the rules see it."""

    relation_id: str
    provider_inami: str
    patient_niss: str
    proof: Proof
    period: Period


def strongest_relation(candidates: Iterable[Relation], provider_inami: str, day: dt.date) -> Relation | None:
    """Of the relations granting access on ``day``, the strongest proof; the provider's own before one
    held by an organisation it belongs to; then the oldest start, then the id (deterministic)."""
    valid = [r for r in candidates if r.period.contains(day)]
    if not valid:
        return None
    return min(
        valid,
        key=lambda r: (
            -PROOF_STRENGTH[r.proof],
            r.provider_inami != provider_inami,
            r.period.start,
            r.relation_id,
        ),
    )


@dataclass(frozen=True)
class DmgTransferPlan:
    """What a DMG relation move does: relations to end (id → new end), and the new holder's relation:
    ``reuse_id`` when an existing DMG relation of the new holder already runs on the start date (its end
    is then set to ``new_end``), else a new relation over ``Period(start, new_end)``."""

    ends: dict[str, dt.date]
    reuse_id: str | None
    new_end: dt.date | None


def plan_dmg_transfer(
    dmg_relations: Sequence[Relation], new_holder: str, start: dt.date, *, until: dt.date | None = None
) -> DmgTransferPlan:
    """Move the patient's DMG relation to ``new_holder`` from ``start`` to ``until`` (the last day of its
    holding, None: open): the relation follows the holding and ends with it (issue 14).

    One DMG holder per patient per day: every other holder's DMG relation that runs on or after
    ``start`` and began before it ends the day before ``start``; one that begins on ``start`` itself is
    superseded (emptied). A DMG relation that begins after ``start`` belongs to a later move and bounds
    the new holder's relation (it ends the day before). The new holder's own running relation is reused
    and given the new end (a prolongation moves it later). Applying the plan twice changes nothing more.
    """
    later = [r.period.start for r in dmg_relations if r.period.start > start]
    new_end = min(later) - ONE_DAY if later else None
    if until is not None:
        new_end = until if new_end is None else min(new_end, until)
    ends: dict[str, dt.date] = {}
    reuse_id: str | None = None
    for rel in dmg_relations:
        if rel.period.start > start:
            continue
        if rel.provider_inami == new_holder:
            if rel.period.end is None or rel.period.end >= start - ONE_DAY:
                reuse_id = reuse_id or rel.relation_id
            continue
        if rel.period.end is None or rel.period.end >= start:
            ends[rel.relation_id] = start - ONE_DAY
    return DmgTransferPlan(ends, reuse_id, new_end)


def plan_dmg_end(
    dmg_relations: Sequence[Relation], previous_holder: str, start: dt.date
) -> dict[str, dt.date]:
    """End the patient's DMG relation from ``start``: the insurer's holding ended, nobody holds it now.

    The DMG relations of ``previous_holder`` (of any holder when it is not known) that run on ``start``
    end the day before; one that begins on ``start`` itself is cancelled (emptied). A relation that begins
    after ``start`` belongs to a later move and is left alone. Applying the plan twice changes nothing more.
    """
    return {
        rel.relation_id: start - ONE_DAY
        for rel in dmg_relations
        if (not previous_holder or rel.provider_inami == previous_holder)
        and rel.period.start <= start
        and (rel.period.end is None or rel.period.end >= start)
    }


# --- mandates ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MandateView:
    """A mandate as the overlap rule sees it."""

    mandate_id: str
    services: frozenset[str]
    period: Period


def plan_mandate_closures(new: MandateView, existing: Iterable[MandateView]) -> dict[str, dt.date]:
    """Which mandates of the same principal a new one closes, and their new end.

    No two mandates of one principal overlap for a service: an existing mandate sharing a service with the
    new one and overlapping it is closed the day before the new start when it started earlier. One that
    starts on or after the new start cannot be closed that way: FAILED_PRECONDITION ``MANDATE_OVERLAP``
    (revoke it first). Mandates that end before the new start, or share no service, coexist.
    """
    closures: dict[str, dt.date] = {}
    for old in existing:
        if not (old.services & new.services) or not old.period.overlaps(new.period):
            continue
        if old.period.start >= new.period.start:
            raise mandate_overlap(old.mandate_id)
        closures[old.mandate_id] = new.period.start - ONE_DAY
    return closures


def mandate_overlap(mandate_id: str) -> MeshError:
    return business_error(
        McnCode.VALUE_NOT_ALLOWED,
        "MANDATE_OVERLAP",
        f"mandate {mandate_id} for the same service starts on or after the new start; revoke it first",
        field_path="mandate.period.start",
    )
