"""Members and the affiliation feed that keeps the hub's routing index (NISS + date -> insurer) current.

The feed is a table of changes with a monotonic sequence allocated under one lock row, so sequence order
is commit order. A consumer catches up with ``ListAffiliationChanges(after_sequence)`` a page at a time,
then follows ``WatchAffiliationChanges(after_sequence)``: the backlog from the database, then live
changes, woken in-process by :class:`FeedNotifier` (and by a short poll, for writers in other processes
on the same database). A watch ends when the caller cancels or the node stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Iterable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mycarenet_core import dates
from mycarenet_core.clock import Clock
from mycarenet_core.errors import FieldViolation, McnCode, invalid_argument, not_found
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import membership_service_pb2 as ms_pb2
from mycarenet_core.identifiers import IdentifierError, parse_member_number, routing_insurer
from oa_node import controls as c
from oa_node import convert
from oa_node import models as m
from oa_node.audit import AuditEntry, Auditor
from oa_node.repositories import FeedEntry, MemberData, MemberRepository

MAX_MEMBERS = 10_000
DEFAULT_FEED_PAGE, MAX_FEED_PAGE = 1000, 50_000
WATCH_BATCH = 500


class FeedNotifier:
    """In-process wake-up of the watchers when the feed grows; :meth:`close` ends every watch."""

    def __init__(self) -> None:
        self._condition = asyncio.Condition()
        self._last = 0
        self.closed = False

    async def publish(self, last_sequence: int) -> None:
        async with self._condition:
            self._last = max(self._last, last_sequence)
            self._condition.notify_all()

    async def close(self) -> None:
        async with self._condition:
            self.closed = True
            self._condition.notify_all()

    async def wait_beyond(self, sequence: int, max_wait: float) -> None:
        """Return when the feed passed ``sequence``, the notifier closed, or ``max_wait`` seconds passed."""
        async with self._condition:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._condition.wait_for(lambda: self.closed or self._last > sequence), max_wait
                )


def periods_from(
    raw: Iterable[common_pb2.Period], field: str, out: c.Violations
) -> tuple[tuple[dt.date, dt.date | None], ...]:
    """Validated periods: start mandatory (100), dates plausible and end not before start (113)."""
    found: list[tuple[dt.date, dt.date | None]] = []
    for index, period in enumerate(raw):
        start = c.date(period.start, f"{field}[{index}].start", out)
        end = c.date(period.end, f"{field}[{index}].end", out, required=False)
        if start is not None and end is not None and end < start:
            out.append(FieldViolation(f"{field}[{index}].end", McnCode.IMPLAUSIBLE_DATE, "end before start"))
        elif start is not None:
            found.append((start, end))
    return tuple(found)


def change_proto(entry: FeedEntry, insurer_code: str) -> ms_pb2.AffiliationChange:
    return ms_pb2.AffiliationChange(
        sequence=entry.sequence,
        niss=entry.niss,
        insurer_code=insurer_code,
        registration_number=entry.registration_number,
        periods=[convert.period(s, e) for s, e in entry.periods],
    )


class MembershipOperations:
    """The MembershipService behaviour of one insurer node."""

    def __init__(
        self,
        *,
        insurer_code: str,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        auditor: Auditor,
        notifier: FeedNotifier,
        poll_interval: float = 1.0,
    ) -> None:
        self.insurer_code = insurer_code
        self._sessions = sessions
        self._clock = clock
        self._auditor = auditor
        self.notifier = notifier
        self._poll = poll_interval

    def _member_data(self, index: int, member: ms_pb2.Member, out: c.Violations) -> MemberData | None:
        field = f"members[{index}]"
        before = len(out)
        niss = c.niss(member.patient.niss, f"{field}.patient.niss", out)
        number = member.patient.member
        try:
            parsed = parse_member_number(number.mutuality_code, number.registration_number)
            if routing_insurer(parsed.mutuality_code) != self.insurer_code:
                out.append(
                    FieldViolation(
                        f"{field}.patient.member.mutuality_code",
                        McnCode.ROUTING_INCONSISTENT,
                        f"mutuality {parsed.mutuality_code} is not served by insurer {self.insurer_code}",
                    )
                )
        except IdentifierError as error:
            out.append(FieldViolation(f"{field}.patient.member", error.code, error.reason))
            parsed = None
        birth = c.date(member.patient.birth_date, f"{field}.patient.birth_date", out, required=False)
        death = c.date(member.patient.death_date, f"{field}.patient.death_date", out, required=False)
        periods = periods_from(member.affiliations, f"{field}.affiliations", out)
        house = c.inami(member.medical_house_inami, f"{field}.medical_house_inami", out, required=False)
        house_period = (
            periods_from([member.medical_house_period], f"{field}.medical_house_period", out) if house else ()
        )
        if len(out) > before or niss is None or parsed is None:
            return None
        return MemberData(
            niss=niss.value,
            mutuality_code=parsed.mutuality_code,
            registration_number=parsed.registration_number,
            first_name=member.patient.first_name,
            last_name=member.patient.last_name,
            birth_date=birth or niss.birth_date,
            sex=int(member.patient.sex),
            death_date=death,
            chronic_condition=member.chronic_condition,
            medical_house_inami=house.value if house else None,
            medical_house_start=house_period[0][0] if house_period else None,
            medical_house_end=house_period[0][1] if house_period else None,
            affiliations=periods,
        )

    async def upsert_members(
        self, request: ms_pb2.UpsertMembersRequest, peer: str = ""
    ) -> ms_pb2.UpsertMembersResponse:
        entry = AuditEntry("UpsertMembers", {"peer": peer})

        async def work(session: AsyncSession) -> ms_pb2.UpsertMembersResponse:
            if len(request.members) > MAX_MEMBERS:
                raise invalid_argument(
                    [FieldViolation("members", McnCode.VALUE_NOT_ALLOWED, f"at most {MAX_MEMBERS} members")]
                )
            out: c.Violations = []
            members = [self._member_data(i, member, out) for i, member in enumerate(request.members)]
            c.reject(out)
            result = await MemberRepository(session).upsert([d for d in members if d], now=self._clock.now())
            entry.incidents.append(f"{result.created} created, {result.updated} updated")
            return ms_pb2.UpsertMembersResponse(
                created=result.created, updated=result.updated, last_sequence=result.last_sequence
            )

        response = await self._auditor.run(entry, work)
        await self.notifier.publish(response.last_sequence)
        return response

    async def get_member(self, request: ms_pb2.GetMemberRequest) -> ms_pb2.GetMemberResponse:
        out: c.Violations = []
        key = c.patient_key(request.patient, self.insurer_code, out)
        c.reject(out)
        assert key is not None
        async with self._sessions() as session:
            members = MemberRepository(session)
            member = (
                await members.get(key.niss)
                if key.niss
                else await members.by_registration(key.registration_number or "")
            )
            if member is None:
                code, path = (
                    (McnCode.PATIENT_UNKNOWN, "patient.niss")
                    if key.niss
                    else (McnCode.MEMBER_NUMBER_UNKNOWN, "patient.member.registration_number")
                )
                raise not_found("MEMBER_UNKNOWN", "not a member of this insurer", code=code, field_path=path)
            periods = await members.periods(member.niss)
        return ms_pb2.GetMemberResponse(member=_member_proto(member, periods))

    async def list_changes(
        self, request: ms_pb2.ListAffiliationChangesRequest
    ) -> ms_pb2.ListAffiliationChangesResponse:
        if request.page_size < 0 or request.after_sequence < 0:
            raise invalid_argument(
                [
                    FieldViolation(
                        "page_size", McnCode.BAD_FORMAT, "page size and sequence must not be negative"
                    )
                ]
            )
        size = min(request.page_size or DEFAULT_FEED_PAGE, MAX_FEED_PAGE)
        async with self._sessions() as session:
            members = MemberRepository(session)
            last = await members.last_sequence()
            changes = await members.changes_after(request.after_sequence, size)
        return ms_pb2.ListAffiliationChangesResponse(
            changes=[change_proto(e, self.insurer_code) for e in changes], last_sequence=last
        )

    async def watch(
        self, request: ms_pb2.WatchAffiliationChangesRequest
    ) -> AsyncIterator[ms_pb2.WatchAffiliationChangesResponse]:
        """The backlog after ``after_sequence``, then every change as it is committed."""
        cursor = max(request.after_sequence, 0)
        while not self.notifier.closed:
            async with self._sessions() as session:
                batch = await MemberRepository(session).changes_after(cursor, WATCH_BATCH)
            for change in batch:
                yield ms_pb2.WatchAffiliationChangesResponse(change=change_proto(change, self.insurer_code))
                cursor = change.sequence
            if len(batch) < WATCH_BATCH:
                await self.notifier.wait_beyond(cursor, self._poll)


def _member_proto(member: m.Member, periods: tuple[tuple[dt.date, dt.date | None], ...]) -> ms_pb2.Member:
    proto = ms_pb2.Member(
        patient=convert.patient(member),
        affiliations=[convert.period(s, e) for s, e in periods],
        chronic_condition=member.chronic_condition,
        medical_house_inami=member.medical_house_inami or "",
    )
    if member.medical_house_start is not None:
        proto.medical_house_period.CopyFrom(
            common_pb2.Period(
                start=dates.to_proto(member.medical_house_start), end=dates.to_proto(member.medical_house_end)
            )
        )
    return proto
