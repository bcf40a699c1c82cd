"""The cadastre follower: eHealth's provider cadastre is the authentic source, and the node follows it.

A provider or an organisation registered once in eHealth's cadastre reaches every insurer: the follower
catches up with ``CadastreService.ListCadastreChanges`` pages from the position stored in the node's
database, then holds ``WatchCadastreChanges`` open from there, and reconnects with exponential backoff
when eHealth goes away. Providers (role from the INAMI number, names, supervisor, validity) and
organisations (kind, name, validity, members with their periods) become the node's reference data, the
same tables the back office fills through ``ReferenceDataService``.

Live changes are applied in bursts: a reader queues them, the applier takes everything queued so far
(a bulk registration arrives as thousands of changes). Each burst is ONE transaction that claims the
position row first, applies only the changes after the stored position and advances it: every change is
applied exactly once, whatever eHealth replays and however often the node restarts. An entry the node
cannot use (a malformed INAMI number, an organisation whose kind contradicts its number) is skipped with
an incident in the audit trail; the position still moves past it, so one bad entry never stalls the feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass, field

import grpc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mycarenet_core import dates
from mycarenet_core.clock import Clock
from mycarenet_core.db import transaction
from mycarenet_core.errors import FieldViolation
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import cadastre_pb2 as cad_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import cadastre_pb2_grpc as cad_grpc
from mycarenet_core.identifiers import IdentifierError, Role, parse_inami
from mycarenet_core.lifecycle import Backoff
from oa_node import convert
from oa_node import models as m
from oa_node.audit import INSERT_AUDIT, AuditEntry
from oa_node.repositories import CadastreRepository, OrganisationData, ReferenceRepository

log = logging.getLogger(__name__)

ORGANISATION_KINDS: dict[int, Role] = {
    cad_pb2.ORGANISATION_KIND_MEDICAL_HOUSE: Role.MEDICAL_HOUSE,
    cad_pb2.ORGANISATION_KIND_GROUP_PRACTICE: Role.GROUP_PRACTICE,
    cad_pb2.ORGANISATION_KIND_PHARMACY: Role.PHARMACY,
}
_ORGANISATION_ROLES = frozenset(ORGANISATION_KINDS.values())
AUDIT_RPC = "ApplyCadastreChanges"


# --- from changes to reference data (pure) -------------------------------------------------------------


@dataclass
class Translation:
    """What a run of changes makes of the node's reference data (the last change of an entry wins)."""

    providers: dict[str, m.KnownProvider] = field(default_factory=dict)
    organisations: dict[str, OrganisationData] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    """One line per entry (or part of one) the node could not use, with the change's sequence."""


Span = tuple[dt.date | None, dt.date | None]


def _validity(period: common_pb2.Period, where: str, problems: list[str]) -> Span:
    start = dates.check(period.start, f"{where}.start", required=False)
    end = dates.check(period.end, f"{where}.end", required=False)
    for value in (start, end):
        if isinstance(value, FieldViolation):
            problems.append(f"{value.field}: {value.description}")
    first = start if isinstance(start, dt.date) else None
    last = end if isinstance(end, dt.date) else None
    if first is not None and last is not None and last < first:
        problems.append(f"{where}: ends before it starts")
        return first, first - dt.timedelta(days=1)  # an empty period: never valid
    return first, last


def provider_row(change: cad_pb2.CadastreChange, problems: list[str]) -> m.KnownProvider | None:
    """The node's row for a provider change, or None (with the reason in ``problems``)."""
    entry = change.provider
    try:
        found = parse_inami(entry.inami)
    except IdentifierError as error:
        problems.append(f"provider {entry.inami!r}: {error.reason}")
        return None
    if found.role in _ORGANISATION_ROLES:
        problems.append(f"provider {found.value}: an organisation's number")
        return None
    supervisor: str | None = None
    if entry.supervisor_inami.strip():
        try:
            supervisor = parse_inami(entry.supervisor_inami).value
        except IdentifierError as error:
            problems.append(f"provider {found.value}: supervisor {entry.supervisor_inami!r}: {error.reason}")
    valid_from, valid_until = (
        _validity(entry.validity, f"provider {found.value} validity", problems)
        if entry.HasField("validity")
        else (None, None)
    )
    return m.KnownProvider(
        inami=found.value,
        role=int(convert.role_to_proto(found.role)),
        first_name=entry.first_name,
        last_name=entry.last_name,
        supervisor_inami=supervisor,
        valid_from=valid_from,
        valid_until=valid_until,
    )


def organisation_data(change: cad_pb2.CadastreChange, problems: list[str]) -> OrganisationData | None:
    """The node's data for an organisation change, or None (with the reason in ``problems``)."""
    entry = change.organisation
    try:
        found = parse_inami(entry.inami)
    except IdentifierError as error:
        problems.append(f"organisation {entry.inami!r}: {error.reason}")
        return None
    if found.role not in _ORGANISATION_ROLES:
        problems.append(f"organisation {found.value}: not a medical house or group practice number")
        return None
    declared = ORGANISATION_KINDS.get(entry.kind)
    if entry.kind and declared is not found.role:
        problems.append(f"organisation {found.value}: kind contradicts its number ({found.role.value})")
        return None
    members: list[tuple[str, dt.date, dt.date | None]] = []
    for index, member in enumerate(entry.members):
        where = f"organisation {found.value} members[{index}]"
        try:
            who = parse_inami(member.inami).value
        except IdentifierError as error:
            problems.append(f"{where}: {error.reason}")
            continue
        start, end = _validity(member.period, f"{where}.period", problems)
        if start is None:
            problems.append(f"{where}: a membership without a start is ignored")
            continue
        members.append((who, start, end))
    valid_from, valid_until = (
        _validity(entry.validity, f"organisation {found.value} validity", problems)
        if entry.HasField("validity")
        else (None, None)
    )
    return OrganisationData(
        inami=found.value,
        role=int(convert.role_to_proto(found.role)),
        name=entry.name,
        members=tuple(members),
        valid_from=valid_from,
        valid_until=valid_until,
    )


def translate(changes: Sequence[cad_pb2.CadastreChange]) -> Translation:
    """The reference data a run of changes (in sequence order) leaves behind."""
    out = Translation()
    for change in changes:
        problems: list[str] = []
        which = change.WhichOneof("entry")
        if which == "provider":
            row = provider_row(change, problems)
            if row is not None:
                out.providers[row.inami] = row
        elif which == "organisation":
            data = organisation_data(change, problems)
            if data is not None:
                out.organisations[data.inami] = data
        else:
            problems.append("a change with neither a provider nor an organisation")
        out.skipped += [f"#{change.sequence} {problem}" for problem in problems]
    return out


# --- the follower --------------------------------------------------------------------------------------


async def apply_changes(
    sessions: async_sessionmaker[AsyncSession], changes: Sequence[cad_pb2.CadastreChange], now: dt.datetime
) -> tuple[int, int]:
    """Apply, in ONE transaction, the changes after the stored position; return (position, applied).

    The position row is claimed first, so a change already applied (a replay, a second applier) is
    never applied again."""
    async with transaction(sessions) as session:
        position = CadastreRepository(session)
        applied = await position.claim()
        fresh = sorted((c for c in changes if c.sequence > applied), key=lambda c: c.sequence)
        if not fresh:
            return applied, 0
        found = translate(fresh)
        reference = ReferenceRepository(session)
        await reference.upsert_providers(list(found.providers.values()))
        await reference.upsert_organisations(list(found.organisations.values()))
        last = fresh[-1].sequence
        await position.advance(last, now)
        summary = (
            f"cadastre #{fresh[0].sequence}..#{last}: {len(found.providers)} providers, "
            f"{len(found.organisations)} organisations"
        )
        entry = AuditEntry(
            AUDIT_RPC,
            {"peer": "ehealth"},
            outcome="APPLIED_WITH_SKIPS" if found.skipped else "OK",
            incidents=[summary, *found.skipped],
        )
        await session.execute(INSERT_AUDIT, [entry.row(at=now, status="OK", codes="")])
        if found.skipped:
            log.warning("cadastre: %d entries skipped: %s", len(found.skipped), "; ".join(found.skipped[:5]))
        return last, len(fresh)


class CadastreFollower:
    """Keeps the node's providers and organisations in step with eHealth's cadastre (``target``)."""

    def __init__(
        self,
        *,
        insurer_code: str,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        channel: grpc.aio.Channel,
        page_size: int = 500,
        burst_size: int = 1000,
        deadline: float = 30.0,
        initial_backoff: float = 0.2,
        max_backoff: float = 5.0,
    ) -> None:
        self.insurer_code = insurer_code
        self._sessions = sessions
        self._clock = clock
        self._stub: cad_grpc.CadastreServiceAsyncStub = cad_grpc.CadastreServiceStub(channel)
        self._page_size = page_size
        self._burst_size = burst_size
        self._deadline = deadline
        self._backoff = Backoff(initial_backoff, max_backoff)
        self._advanced = asyncio.Condition()
        self.sequence = 0
        """The last applied sequence (the database has the same; read at start)."""
        self.following = False
        """True while the watch on eHealth is open."""
        self.caught_up = asyncio.Event()
        self.applied = 0
        self.failures = 0

    async def wait_for(self, sequence: int, within: float) -> None:
        """Wait until the changes up to ``sequence`` are applied (tests, tooling)."""

        async def reached() -> None:
            async with self._advanced:
                await self._advanced.wait_for(lambda: self.sequence >= sequence)

        await asyncio.wait_for(reached(), within)

    async def _apply(self, changes: Sequence[cad_pb2.CadastreChange]) -> None:
        last, applied = await apply_changes(self._sessions, changes, self._clock.now())
        self.applied += applied
        async with self._advanced:
            self.sequence = max(self.sequence, last)
            self._advanced.notify_all()

    async def _catch_up(self, stub: cad_grpc.CadastreServiceAsyncStub) -> None:
        while True:
            before = self.sequence
            page = await stub.ListCadastreChanges(
                cad_pb2.ListCadastreChangesRequest(after_sequence=before, page_size=self._page_size),
                timeout=self._deadline,
            )
            if page.head_sequence < before:
                log.warning(
                    "cadastre of oa-%s: eHealth's log ends at #%d, before #%d applied here (reset?)",
                    self.insurer_code,
                    page.head_sequence,
                    before,
                )
            if page.changes:
                await self._apply(page.changes)
            # Done when current, or when a page moved nothing on (a source replaying old changes must not
            # keep the catch-up asking for the same page forever; the watch takes over).
            if not page.changes or self.sequence >= page.head_sequence or self.sequence <= before:
                return

    async def _follow(self, stream: AsyncIterable[cad_pb2.WatchCadastreChangesResponse]) -> None:
        """Apply the live changes in bursts: one transaction for everything queued so far."""
        queue: asyncio.Queue[cad_pb2.CadastreChange | None] = asyncio.Queue(maxsize=4 * self._burst_size)
        failed: list[BaseException] = []

        async def read() -> None:
            try:
                async for event in stream:
                    await queue.put(event.change)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # handed to the applier, which re-raises it
                failed.append(error)
            await queue.put(None)

        reader = asyncio.ensure_future(read())
        try:
            ended = False
            while not ended:
                burst = [await queue.get()]
                while len(burst) < self._burst_size and not queue.empty():
                    burst.append(queue.get_nowait())
                ended = burst[-1] is None
                changes = [c for c in burst if c is not None and c.sequence > self.sequence]
                if changes:
                    await self._apply(changes)
                self._backoff.reset()
            if failed:
                raise failed[0]
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def run(self) -> None:
        """Follow until cancelled (a background job of the node): catch up, watch, reconnect with backoff.
        Cancelled, a burst being applied is rolled back and applied again after the restart."""
        stub = self._stub
        async with self._sessions() as session:
            self.sequence = await CadastreRepository(session).applied()
        while True:
            try:
                await self._catch_up(stub)
                self.caught_up.set()
                self._backoff.reset()
                call = stub.WatchCadastreChanges(
                    cad_pb2.WatchCadastreChangesRequest(after_sequence=self.sequence)
                )
                try:
                    self.following = True
                    await self._follow(call)
                finally:
                    self.following = False
                    call.cancel()
                log.info("cadastre watch of oa-%s ended; reconnecting", self.insurer_code)
            except asyncio.CancelledError:
                raise
            except grpc.RpcError as error:
                self.failures += 1
                log.info("cadastre feed of oa-%s: %s", self.insurer_code, error.code())
            except Exception:
                self.failures += 1
                log.exception("cadastre feed of oa-%s failed", self.insurer_code)
            await self._backoff.sleep()
