"""The patient's timeline of holders: one holder at a time, each closed the day before the next.

Every change to the holdings (a new holder, a prolonged right, a cancelled paper holding) is made on
the *granted* rights (``start`` .. ``right_end``); :func:`normalise` then derives the effective ``end``
and status of every live holding from its successor (seed 000 §3.3.5: "date de fin = date prestation
donnant droit au DMG au nouveau médecin - 1 jour"). Cancelling a holding therefore reopens its
predecessor automatically (seed 000 §5.2.2.2.2 "Réouverture ... du droit DMG chez M1").
:func:`diff` turns the before/after pair into the effects of a :class:`~oa_node.rules.model.Decision`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta

from .context import RuleContext
from .model import ClosureMessage, HolderMove, Holding, HoldingStatus, Procedure, StatusReason

ONE_DAY = timedelta(days=1)


def year_end(year: int) -> date:
    """31 December of ``year``."""
    return date(year, 12, 31)


def granted_right_end(service_year: int) -> date:
    """End of a right opened or prolonged for ``service_year``: 31 Dec of year + 2 (seed 002)."""
    return year_end(service_year + 2)


def normalise(holdings: tuple[Holding, ...], *, on: date) -> tuple[Holding, ...]:
    """Recompute ``end``/status of every live holding from its successor; ``on`` dates status changes."""
    live = sorted((h for h in holdings if h.live), key=lambda h: (h.start, h.seq))
    fixed: dict[int, Holding] = {}
    for index, holding in enumerate(live):
        successor = live[index + 1] if index + 1 < len(live) else None
        fixed[holding.seq] = _fit(holding, successor, on=on)
    return tuple(fixed.get(h.seq, h) for h in holdings)


def _fit(holding: Holding, successor: Holding | None, *, on: date) -> Holding:
    if successor is not None and successor.start <= holding.right_end:
        end = successor.start - ONE_DAY
        if holding.status is HoldingStatus.CLOSED and holding.end == end:
            return holding
        return replace(
            holding,
            end=end,
            status=HoldingStatus.CLOSED,
            status_reason=StatusReason.TAKEOVER,
            status_date=on,
        )
    if holding.status is HoldingStatus.ACTIVE and holding.end == holding.right_end:
        return holding
    return replace(
        holding,
        end=holding.right_end,
        status=HoldingStatus.ACTIVE,
        status_reason=None,
        status_date=on if holding.status is HoldingStatus.CLOSED else holding.status_date,
        reopened=holding.reopened or holding.status is HoldingStatus.CLOSED,
    )


def successor_of(holdings: tuple[Holding, ...], holding: Holding) -> Holding | None:
    """The live holding that starts the day after ``holding`` ends, if any."""
    return next((h for h in holdings if h.live and h.start == holding.end + ONE_DAY), None)


def latest_started(holdings: tuple[Holding, ...], day: date) -> Holding | None:
    """The last live holding that started on or before ``day`` (in force on ``day`` or expired)."""
    started = [h for h in holdings if h.live and h.start <= day]
    return max(started, key=lambda h: (h.start, h.seq), default=None)


@dataclass(frozen=True, slots=True)
class HoldingChanges:
    """The holding effects of one decision."""

    opened: tuple[Holding, ...] = ()
    extended: tuple[Holding, ...] = ()
    closed: tuple[Holding, ...] = ()
    cancelled: tuple[Holding, ...] = ()
    reopened: tuple[Holding, ...] = ()


def diff(before: tuple[Holding, ...], after: tuple[Holding, ...]) -> HoldingChanges:
    """Classify what changed between two versions of the holdings (matched by ``seq``)."""
    old = {h.seq: h for h in before}
    opened: list[Holding] = []
    extended: list[Holding] = []
    closed: list[Holding] = []
    cancelled: list[Holding] = []
    reopened: list[Holding] = []
    for new in after:
        previous = old.get(new.seq)
        if previous is None:
            opened.append(new)
        elif new.status is HoldingStatus.CANCELLED and previous.status is not HoldingStatus.CANCELLED:
            cancelled.append(new)
        elif new.status is HoldingStatus.CLOSED and previous.status is HoldingStatus.ACTIVE:
            closed.append(new)
        elif new.status is HoldingStatus.ACTIVE and previous.status is HoldingStatus.CLOSED:
            reopened.append(new)
        elif new.status is HoldingStatus.ACTIVE and new.end > previous.end:
            extended.append(new)
    return HoldingChanges(tuple(opened), tuple(extended), tuple(closed), tuple(cancelled), tuple(reopened))


def closure_messages(
    patient: str, closed: tuple[Holding, ...], holdings: tuple[Holding, ...], ctx: RuleContext
) -> tuple[ClosureMessage, ...]:
    """GMD-CLOSURE for every closed holding whose holder is enrolled (seed 000 §3.3.5)."""
    messages: list[ClosureMessage] = []
    for holding in closed:
        successor = successor_of(holdings, holding)
        if successor is None or not ctx.is_enrolled(holding.holder):
            continue
        if successor.procedure is Procedure.PAPER and not ctx.closure_on_paper_takeover:
            continue
        messages.append(
            ClosureMessage(
                patient=patient,
                previous_holder=holding.holder,
                previous_end=holding.end,
                new_holder=successor.holder,
                new_start=successor.start,
            )
        )
    return tuple(messages)


def holder_on(holdings: tuple[Holding, ...], day: date) -> str | None:
    """The holder in force on ``day`` (the first live holding covering it, in timeline order)."""
    holding = holding_on(holdings, day)
    return holding.holder if holding is not None else None


def holding_on(holdings: tuple[Holding, ...], day: date) -> Holding | None:
    """The holding in force on ``day`` (the first live holding covering it, in timeline order)."""
    covering = [h for h in holdings if h.covers(day)]
    return min(covering, key=lambda h: (h.start, h.seq)) if covering else None


def holder_moves(
    patient: str, before: tuple[Holding, ...], after: tuple[Holding, ...], changes: HoldingChanges
) -> tuple[HolderMove, ...]:
    """The changes of who holds the DMG between two versions of the holdings, each with the last day of the
    holding (the DMG relation follows the holding and ends with it): an opened holding takes it from whoever
    held it on its first day; a cancelled one gives it back, from its first day, to whoever holds it then
    (its reopened predecessor, or nobody); a holding whose end moved (a prolongation) keeps its holder to its
    new end. A closure is the other side of an opening: not a move of its own."""
    moves: list[HolderMove] = []
    for new in changes.opened:
        previous = holder_on(before, new.start)
        if previous != new.holder:
            moves.append(HolderMove(patient, new.holder, previous, new.start, new.end))
    for gone in changes.cancelled:
        now = holder_on(after, gone.start)
        if now != gone.holder:
            back = holding_on(after, gone.start)
            moves.append(HolderMove(patient, now, gone.holder, gone.start, back.end if back else None))
    was = {h.seq: h.end for h in before}
    for kept in (*changes.extended, *changes.reopened):
        if (
            kept.live
            and kept.seq in was
            and was[kept.seq] != kept.end
            and not any((m.holder, m.end) == (kept.holder, kept.end) for m in moves)
        ):
            moves.append(HolderMove(patient, kept.holder, kept.holder, kept.start, kept.end))
    return tuple(moves)
