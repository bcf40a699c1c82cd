"""The therapeutic-relation check of a patient-bound call, answered at the hub.

eHealth's register publishes its changes (``ListRelationChanges`` from a sequence number, then
``WatchRelationChanges``); each change carries the relation as it is after it (a revocation shows its end
date). The :class:`RelationFollower` keeps them in a :class:`RelationIndex` in memory, (provider, patient) →
the validity periods of their relations, replaced by relation id; it starts from zero at every start of the
hub (the register is eHealth's, nothing of it is stored here).

:class:`RelationCheck` answers a consult or a notify:

* a relation valid today in the index, while the follower is **current** (caught up with eHealth's log and
  its watch stream open): yes, without a call;
* anything else asks eHealth's ``CheckRelation``, as before: a follower that lost its stream (or has not
  caught up yet) never answers a possibly stale "yes"; and an answer the index cannot give is asked too — a
  relation held by an organisation the provider is a member of (eHealth knows the memberships), or one
  registered a moment ago whose change is still on its way. So the index only ever saves the round trip; an
  unreachable eHealth makes those calls UNAVAILABLE, exactly as before.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import grpc
from opentelemetry import trace

from hub.upstream import EhealthClient
from mycarenet_core import dates
from mycarenet_core.clock import Clock
from mycarenet_core.errors import McnCode, permission_denied
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import therapeutic_relation_pb2 as tr
from mycarenet_core.lifecycle import Backoff

log = logging.getLogger(__name__)

OPEN_END = dt.date.max.toordinal()
Pair = tuple[str, str]  # (provider INAMI, patient NISS)


def _ordinal(value: common_pb2.Date) -> int | None:
    if not dates.is_set(value):
        return None
    try:
        return dt.date(value.year, value.month, value.day).toordinal()
    except ValueError:
        return None


class RelationIndex:
    """(provider, patient) → {relation id: (first day, last day)} as day ordinals, the last day of an open
    relation being :data:`OPEN_END`."""

    def __init__(self) -> None:
        self._pairs: dict[Pair, dict[str, tuple[int, int]]] = {}
        self._pair_of: dict[str, Pair] = {}

    def __len__(self) -> int:
        """Number of relations held."""
        return len(self._pair_of)

    def clear(self) -> None:
        self._pairs.clear()
        self._pair_of.clear()

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
        start = _ordinal(relation.period.start)
        if not relation_id or start is None:
            return
        end = _ordinal(relation.period.end) if relation.period.HasField("end") else None
        pair = (relation.provider_inami, relation.patient_niss)
        self._pairs.setdefault(pair, {})[relation_id] = (start, OPEN_END if end is None else end)
        self._pair_of[relation_id] = pair

    def allows(self, provider: str, patient: str, day: dt.date) -> bool:
        """True when a relation of this provider with this patient is valid on ``day``."""
        periods = self._pairs.get((provider, patient))
        if not periods:
            return False
        when = day.toordinal()
        return any(start <= when <= end for start, end in periods.values())


class RelationFollower:
    """Keeps a :class:`RelationIndex` in step with eHealth's relation change log (a background job)."""

    def __init__(
        self,
        ehealth: EhealthClient,
        index: RelationIndex,
        *,
        page_size: int = 5000,
        backoff: Backoff | None = None,
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

    @property
    def current(self) -> bool:
        """May the index answer "yes"? Only while caught up and following the live changes."""
        return self.following

    async def _applied(self, changes: list[tr.RelationChange]) -> None:
        for change in changes:
            if change.sequence > self.sequence:
                self.index.put(change.relation)
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
            page = await self.ehealth.relations.ListRelationChanges(
                tr.ListRelationChangesRequest(after_sequence=before, page_size=self.page_size), timeout=30
            )
            if page.head_sequence < before:
                # eHealth's log ends before what was applied here: its register was reset. Start again
                # from nothing rather than keep relations it no longer has.
                log.warning(
                    "relation log of eHealth ends at #%d, before #%d applied here: reloading",
                    page.head_sequence,
                    before,
                )
                self.index.clear()
                self.sequence = 0
                continue
            if page.changes:
                await self._applied(list(page.changes))
            # Current once the head is reached; a page that moved nothing on ends the catch-up too (the
            # watch, which starts after the same sequence, replays the rest).
            if not page.changes or self.sequence >= page.head_sequence or self.sequence <= before:
                return

    async def _follow(self) -> None:
        call = self.ehealth.relations.WatchRelationChanges(
            tr.WatchRelationChangesRequest(after_sequence=self.sequence)
        )
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
                log.info("relation watch of eHealth ended; reconnecting")
            except asyncio.CancelledError:
                raise
            except grpc.RpcError as error:
                log.info("relation feed of eHealth: %s", error.code())
            except Exception:
                log.exception("relation feed of eHealth failed")
            await self._backoff.sleep()


class RelationCheck:
    """The therapeutic relation of a patient-bound call (module docstring): from the index when it may
    answer, else from eHealth."""

    def __init__(self, follower: RelationFollower, ehealth: EhealthClient, clock: Clock) -> None:
        self.follower = follower
        self.ehealth = ehealth
        self.clock = clock
        self.answered_here = 0
        self.asked_ehealth = 0

    async def require(self, provider: str, patient: str, remaining: float | None) -> None:
        """Return when ``provider`` may see ``patient`` today; PERMISSION_DENIED 140 otherwise."""
        today = self.clock.today()
        follower = self.follower
        if follower.following and follower.index.allows(provider, patient, today):
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


__all__ = ["RelationCheck", "RelationFollower", "RelationIndex"]
