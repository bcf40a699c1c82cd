"""The therapeutic-relation check of a patient-bound call, answered at the hub.

eHealth publishes the changes of its relation register (``ListRelationChanges`` from a sequence number, then
``WatchRelationChanges``; each change carries the relation as it is after it, a revocation shows its end date)
and of its cadastre (``List/WatchCadastreChanges``: each organisation with its validity and its members).
Two :class:`ChangeLogFollower` keep them in memory in one :class:`RelationIndex`: (provider, patient) → the
validity periods of their relations, replaced by relation id; organisation → its validity and its members'
periods, replaced whole. Both start from zero at every start of the hub (the register and the cadastre are
eHealth's; nothing of them is stored here).

:class:`RelationCheck` answers a consult or a notify as eHealth's ``CheckRelation`` does — a relation of the
provider valid today, or of an organisation (valid today) the provider is a member of today:

* "yes" from the index, without a call, only while the followers it rests on are **current** (caught up
  with eHealth's log and their watch stream open);
* anything else asks eHealth's ``CheckRelation``, as before: a hub that lost a stream (or has not caught up
  yet) never answers a possibly stale "yes"; a "no" of the index is asked too (a relation registered a moment
  ago may still be on its way), so the index only ever saves the round trip. An unreachable eHealth makes
  those calls UNAVAILABLE, exactly as before.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry import trace

from hub.upstream import EhealthClient
from mycarenet_core import dates
from mycarenet_core.clock import Clock
from mycarenet_core.errors import McnCode, permission_denied
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import cadastre_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import therapeutic_relation_pb2 as tr
from mycarenet_core.lifecycle import Backoff

log = logging.getLogger(__name__)

OPEN_END = dt.date.max.toordinal()
Pair = tuple[str, str]  # (provider INAMI, patient NISS)
Span = tuple[int, int]  # (first day, last day) as ordinals


def _ordinal(value: common_pb2.Date) -> int | None:
    if not dates.is_set(value):
        return None
    try:
        return dt.date(value.year, value.month, value.day).toordinal()
    except ValueError:
        return None


def _span(period: common_pb2.Period) -> Span | None:
    """The period as ordinals (an open end is :data:`OPEN_END`), None without a usable start."""
    start = _ordinal(period.start)
    if start is None:
        return None
    end = _ordinal(period.end) if period.HasField("end") else None
    return start, OPEN_END if end is None else end


@dataclass(frozen=True)
class Organisation:
    validity: Span | None
    members: dict[str, list[Span]]


class RelationIndex:
    """Relations: (provider, patient) → {relation id: span}; organisations: INAMI → validity and members'
    spans, with member → the organisations it belongs to."""

    def __init__(self) -> None:
        self._pairs: dict[Pair, dict[str, Span]] = {}
        self._pair_of: dict[str, Pair] = {}
        self._organisations: dict[str, Organisation] = {}
        self._member_of: dict[str, set[str]] = {}

    def __len__(self) -> int:
        """Number of relations held."""
        return len(self._pair_of)

    def clear(self) -> None:
        """Forget the relations (eHealth's register was reset)."""
        self._pairs.clear()
        self._pair_of.clear()

    def clear_organisations(self) -> None:
        """Forget the organisations (eHealth's cadastre was reset)."""
        self._organisations.clear()
        self._member_of.clear()

    def _drop(self, relation_id: str) -> None:
        pair = self._pair_of.pop(relation_id, None)
        if pair is None:
            return
        periods = self._pairs.get(pair)
        if periods is not None:
            periods.pop(relation_id, None)
            if not periods:
                del self._pairs[pair]

    def put(self, relation: tr.TherapeuticRelation) -> None:
        """The relation as it is now replaces what was held under its id (a relation without a usable
        start is dropped: the check then asks eHealth)."""
        relation_id = relation.relation_id
        self._drop(relation_id)
        span = _span(relation.period)
        if not relation_id or span is None:
            return
        pair = (relation.provider_inami, relation.patient_niss)
        self._pairs.setdefault(pair, {})[relation_id] = span
        self._pair_of[relation_id] = pair

    def put_organisation(self, organisation: cadastre_pb2.Organisation) -> None:
        """The organisation as it is now (validity and members) replaces what was held."""
        inami = organisation.inami
        old = self._organisations.pop(inami, None)
        for former in old.members if old is not None else ():
            groups = self._member_of.get(former)
            if groups is not None:
                groups.discard(inami)
                if not groups:
                    del self._member_of[former]
        if not inami:
            return
        members: dict[str, list[Span]] = {}
        for member in organisation.members:
            span = _span(member.period)
            if member.inami and span is not None:
                members.setdefault(member.inami, []).append(span)
        self._organisations[inami] = Organisation(_span(organisation.validity), members)
        for provider in members:
            self._member_of.setdefault(provider, set()).add(inami)

    def _holds(self, holder: str, patient: str, when: int) -> bool:
        periods = self._pairs.get((holder, patient))
        return periods is not None and any(start <= when <= end for start, end in periods.values())

    def allows(self, provider: str, patient: str, day: dt.date, *, organisations: bool = True) -> bool:
        """True when a relation of the provider, or (with ``organisations``) of an organisation valid on
        ``day`` that the provider is a member of on ``day``, is valid on ``day``."""
        when = day.toordinal()
        if self._holds(provider, patient, when):
            return True
        if not organisations:
            return False
        for inami in self._member_of.get(provider, ()):
            organisation = self._organisations[inami]
            validity = organisation.validity
            if validity is None or not validity[0] <= when <= validity[1]:
                continue
            if any(s <= when <= e for s, e in organisation.members.get(provider, ())) and self._holds(
                inami, patient, when
            ):
                return True
        return False


class ChangeLogFollower:
    """Follows one of eHealth's change logs (a background job): pages from the last applied sequence until
    the head, then the watch stream; reconnects after the core :class:`Backoff`. :attr:`following` is True
    only while caught up and the stream is open."""

    name = "change log"

    def __init__(
        self, ehealth: EhealthClient, index: RelationIndex, *, page_size: int, backoff: Backoff | None = None
    ) -> None:
        self.ehealth = ehealth
        self.index = index
        self.page_size = page_size
        self._backoff = backoff or Backoff(0.2, 5.0)
        self.sequence = 0
        """The last change applied."""
        self.following = False
        """True while caught up and the watch stream is open."""
        self.caught_up = asyncio.Event()
        """Set once the first catch-up is done (stays set)."""
        self._advanced = asyncio.Condition()

    # --- what differs between the logs ------------------------------------------------------------------

    async def page(self, after: int) -> tuple[Sequence[Any], int]:
        """The changes after ``after`` (one page) and the head of the log."""
        raise NotImplementedError

    def watch(self, after: int) -> Any:
        """The watch call from ``after`` on (a stream of responses with a ``change``)."""
        raise NotImplementedError

    def apply(self, change: Any) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    # --- the one way of following ----------------------------------------------------------------------

    async def _applied(self, changes: Sequence[Any]) -> None:
        for change in changes:
            if change.sequence > self.sequence:
                self.apply(change)
                self.sequence = change.sequence
        async with self._advanced:
            self._advanced.notify_all()

    async def wait_for(self, sequence: int, within: float) -> None:
        """Wait until the changes up to ``sequence`` are applied and the follower is current (tests)."""

        async def reached() -> None:
            async with self._advanced:
                await self._advanced.wait_for(lambda: self.sequence >= sequence and self.following)

        await asyncio.wait_for(reached(), within)

    async def _catch_up(self) -> None:
        while True:
            before = self.sequence
            changes, head = await self.page(before)
            if head < before:
                # eHealth's log ends before what was applied here: it was reset. Start again from nothing
                # rather than keep what it no longer has.
                log.warning(
                    "%s of eHealth ends at #%d, before #%d applied here: reloading", self.name, head, before
                )
                self.reset()
                self.sequence = 0
                continue
            if changes:
                await self._applied(changes)
            # Current once the head is reached; a page that moved nothing on ends the catch-up too (the
            # watch, which starts after the same sequence, replays the rest).
            if not changes or self.sequence >= head or self.sequence <= before:
                return

    async def _follow(self) -> None:
        call = self.watch(self.sequence)
        self.following = True
        async with self._advanced:
            self._advanced.notify_all()
        try:
            async for event in call:
                await self._applied([event.change])
                self._backoff.reset()
        finally:
            self.following = False
            call.cancel()

    async def run(self) -> None:
        while True:
            try:
                await self._catch_up()
                self.caught_up.set()
                self._backoff.reset()
                await self._follow()
                log.info("%s watch of eHealth ended; reconnecting", self.name)
            except asyncio.CancelledError:
                raise
            except grpc.RpcError as error:
                log.info("%s feed of eHealth: %s", self.name, error.code())
            except Exception:
                log.exception("%s feed of eHealth failed", self.name)
            await self._backoff.sleep()


class RelationFollower(ChangeLogFollower):
    """eHealth's relation register → the index's relations."""

    name = "relation log"

    def __init__(
        self,
        ehealth: EhealthClient,
        index: RelationIndex,
        *,
        page_size: int = 5000,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(ehealth, index, page_size=page_size, backoff=backoff)

    async def page(self, after: int) -> tuple[Sequence[Any], int]:
        answer = await self.ehealth.relations.ListRelationChanges(
            tr.ListRelationChangesRequest(after_sequence=after, page_size=self.page_size), timeout=30
        )
        return answer.changes, answer.head_sequence

    def watch(self, after: int) -> Any:
        return self.ehealth.relations.WatchRelationChanges(
            tr.WatchRelationChangesRequest(after_sequence=after)
        )

    def apply(self, change: tr.RelationChange) -> None:
        self.index.put(change.relation)

    def reset(self) -> None:
        self.index.clear()


class OrganisationFollower(ChangeLogFollower):
    """eHealth's cadastre → the index's organisations (the providers' entries are not needed here)."""

    name = "cadastre"

    def __init__(
        self,
        ehealth: EhealthClient,
        index: RelationIndex,
        *,
        page_size: int = 5000,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(ehealth, index, page_size=page_size, backoff=backoff)

    async def page(self, after: int) -> tuple[Sequence[Any], int]:
        answer = await self.ehealth.cadastre.ListCadastreChanges(
            cadastre_pb2.ListCadastreChangesRequest(after_sequence=after, page_size=self.page_size),
            timeout=30,
        )
        return answer.changes, answer.head_sequence

    def watch(self, after: int) -> Any:
        return self.ehealth.cadastre.WatchCadastreChanges(
            cadastre_pb2.WatchCadastreChangesRequest(after_sequence=after)
        )

    def apply(self, change: cadastre_pb2.CadastreChange) -> None:
        if change.WhichOneof("entry") == "organisation":
            self.index.put_organisation(change.organisation)

    def reset(self) -> None:
        self.index.clear_organisations()


class RelationCheck:
    """The therapeutic relation of a patient-bound call (module docstring): from the index when it may
    answer, else from eHealth."""

    def __init__(
        self,
        follower: RelationFollower,
        ehealth: EhealthClient,
        clock: Clock,
        organisations: OrganisationFollower | None = None,
    ) -> None:
        self.follower = follower
        self.organisations = organisations
        self.ehealth = ehealth
        self.clock = clock
        self.answered_here = 0
        self.asked_ehealth = 0

    async def require(self, provider: str, patient: str, remaining: float | None) -> None:
        """Return when ``provider`` may see ``patient`` today; PERMISSION_DENIED 140 otherwise."""
        today = self.clock.today()
        follower = self.follower
        if follower.following and follower.index.allows(
            provider,
            patient,
            today,
            organisations=self.organisations is not None and self.organisations.following,
        ):
            self.answered_here += 1
            return
        self.asked_ehealth += 1
        trace.get_current_span().set_attribute("mycarenet.relation_check", "ehealth")
        request = tr.CheckRelationRequest(
            provider_inami=provider, patient_niss=patient, date=dates.to_proto(today)
        )
        answer = await self.ehealth.call(
            lambda t: self.ehealth.relations.CheckRelation(request, timeout=t), remaining
        )
        if not answer.exists:
            raise permission_denied(
                "NO_THERAPEUTIC_RELATION",
                "no therapeutic relation between the requester and the patient (eHealth)",
                code=McnCode.PROVIDER_NOT_ENTITLED,
            )


__all__ = ["ChangeLogFollower", "OrganisationFollower", "RelationCheck", "RelationFollower", "RelationIndex"]
