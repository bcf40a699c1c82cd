"""Members and the affiliation feed that keeps the hub's routing index (NISS + date -> insurer) current.

The feed is a table of changes with a monotonic sequence allocated under one lock row, so sequence order
is commit order. A consumer catches up with ``ListAffiliationChanges(after_sequence)`` a page at a time,
then follows ``WatchAffiliationChanges(after_sequence)``: the backlog from the database, then live
changes, woken by the writer's commit through a :class:`~oa_node.feeds.FeedSignal` (no polling; a long
safety timeout only). A watch ends when the caller cancels or the node stops.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import AsyncIterator, Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mycarenet_core import dates
from mycarenet_core.clock import Clock
from mycarenet_core.errors import McnCode, not_found
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.insurability.v1 import insurability_pb2 as ins_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import membership_service_pb2 as ms_pb2
from mycarenet_core.identifiers import IdentifierError, parse_member_number, parse_niss, routing_insurer
from mycarenet_core.validation import Checker
from oa_node import controls as c
from oa_node import convert
from oa_node.audit import AuditEntry, AuditTrail
from oa_node.feeds import SAFETY_TIMEOUT, FeedSignal
from oa_node.repositories import FeedEntry, MemberData, MemberRepository, MemberRow
from oa_node.repositories.members import CareFields, InsurabilityFields

MAX_MEMBERS = 10_000
MAX_PERIODS = 100
"""Insurability periods, and care statuses, of one member in an upsert."""
_CT = re.compile(r"^[0-9]{3}$")
_CARE_KINDS = {
    ins_pb2.CARE_STATUS_KIND_CHRONIC_CONDITION: "CHRONIC_CONDITION",
    ins_pb2.CARE_STATUS_KIND_PALLIATIVE: "PALLIATIVE",
    ins_pb2.CARE_STATUS_KIND_HOSPITALISED: "HOSPITALISED",
}
DEFAULT_FEED_PAGE, MAX_FEED_PAGE = 1000, 50_000
WATCH_BATCH = 500


def member_data(check: Checker, index: int, member: ms_pb2.Member, insurer_code: str) -> MemberData | None:
    """One member of an upsert, parsed (its violations recorded in ``check``)."""
    field = f"members[{index}]"
    before = len(check.violations)
    niss = check.niss(f"{field}.patient.niss", member.patient.niss)
    number = member.patient.member
    try:
        parsed = parse_member_number(number.mutuality_code, number.registration_number)
        if routing_insurer(parsed.mutuality_code) != insurer_code:
            check.add(
                f"{field}.patient.member.mutuality_code",
                McnCode.ROUTING_INCONSISTENT,
                f"mutuality {parsed.mutuality_code} is not served by insurer {insurer_code}",
            )
    except IdentifierError as error:
        check.add(f"{field}.patient.member", error.code, error.reason)
        parsed = None
    first = check.text(
        f"{field}.patient.first_name", member.patient.first_name, max_length=c.MAX_NAME, required=False
    )
    last = check.text(
        f"{field}.patient.last_name", member.patient.last_name, max_length=c.MAX_NAME, required=False
    )
    birth = check.optional_date(f"{field}.patient.birth_date", member.patient.birth_date)
    death = check.optional_date(f"{field}.patient.death_date", member.patient.death_date)
    periods = c.periods(check, member.affiliations, f"{field}.affiliations")
    house = check.optional_inami(f"{field}.medical_house_inami", member.medical_house_inami)
    house_period = (
        c.periods(check, [member.medical_house_period], f"{field}.medical_house_period") if house else ()
    )
    insurability = _insurability(check, member.insurability, f"{field}.insurability")
    care = _care_statuses(check, member.care_statuses, f"{field}.care_statuses")
    if len(check.violations) > before or not niss or parsed is None:
        return None
    return MemberData(
        niss=niss,
        mutuality_code=parsed.mutuality_code,
        registration_number=parsed.registration_number,
        first_name=first,
        last_name=last,
        birth_date=birth or parse_niss(niss).birth_date,
        sex=int(member.patient.sex),
        death_date=death,
        chronic_condition=member.chronic_condition,
        medical_house_inami=house.value if house else None,
        medical_house_start=house_period[0][0] if house_period else None,
        medical_house_end=house_period[0][1] if house_period else None,
        affiliations=periods,
        insurability=insurability,
        care_statuses=care,
    )


def _insurability(
    check: Checker, raw: Sequence[ins_pb2.InsurabilityPeriod], field: str
) -> tuple[InsurabilityFields, ...]:
    """At most 100 periods, each with both ends (100 / 113), CT1 and CT2 of 3 digits (111), none overlapping
    another (113)."""
    if len(raw) > MAX_PERIODS:
        check.add(field, McnCode.VALUE_NOT_ALLOWED, f"at most {MAX_PERIODS} insurability periods")
        return ()
    found: list[InsurabilityFields] = []
    for index, item in enumerate(raw):
        at = f"{field}[{index}]"
        start = check.date(f"{at}.period.start", item.period.start)
        end = check.date(f"{at}.period.end", item.period.end)
        if start is not None and end is not None and end < start:
            check.add(f"{at}.period.end", McnCode.IMPLAUSIBLE_DATE, "end before start")
            continue
        for name in ("ct1", "ct2"):
            if not _CT.match(getattr(item.status, name)):
                check.add(f"{at}.status.{name}", McnCode.BAD_FORMAT, f"{name} must be 3 digits")
        if start is None or end is None:
            continue
        status = item.status
        found.append((start, end, status.ct1, status.ct2, status.preferential_rate, status.maximum_billing))
    ordered = sorted(found)
    for previous, following in itertools.pairwise(ordered):
        if following[0] <= previous[1]:
            check.add(field, McnCode.IMPLAUSIBLE_DATE, f"periods overlap on {following[0].isoformat()}")
            break
    return tuple(ordered)


def _care_statuses(
    check: Checker, raw: Sequence[ins_pb2.CareStatusPeriod], field: str
) -> tuple[CareFields, ...]:
    """At most 100 care statuses, each of a known kind (130) with a start (100) and an end not before it."""
    if len(raw) > MAX_PERIODS:
        check.add(field, McnCode.VALUE_NOT_ALLOWED, f"at most {MAX_PERIODS} care statuses")
        return ()
    found: list[CareFields] = []
    for index, item in enumerate(raw):
        kind = _CARE_KINDS.get(item.kind)
        if kind is None:
            check.add(f"{field}[{index}].kind", McnCode.VALUE_NOT_ALLOWED, "unknown care status kind")
        span = c.periods(check, [item.period], f"{field}[{index}].period")
        if kind is not None and span:
            found.append((kind, span[0][0], span[0][1]))
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
        audit: AuditTrail,
        signal: FeedSignal,
    ) -> None:
        self.insurer_code = insurer_code
        self._sessions = sessions
        self._clock = clock
        self._audit = audit
        self.signal = signal

    def parse_upsert(self, request: ms_pb2.UpsertMembersRequest) -> list[MemberData]:
        with Checker() as check:
            members = (
                [member_data(check, i, member, self.insurer_code) for i, member in enumerate(request.members)]
                if check.items("members", request.members, maximum=MAX_MEMBERS)
                else []
            )
        return [d for d in members if d is not None]

    async def upsert_members(
        self, members: list[MemberData], entry: AuditEntry
    ) -> ms_pb2.UpsertMembersResponse:
        async with self._audit.transaction(entry) as session:
            result = await MemberRepository(session).upsert(members, now=self._clock.now())
            entry.incidents.append(f"{result.created} created, {result.updated} updated")
        self.signal.publish(result.last_sequence)
        return ms_pb2.UpsertMembersResponse(
            created=result.created, updated=result.updated, last_sequence=result.last_sequence
        )

    async def get_member(self, request: ms_pb2.GetMemberRequest) -> ms_pb2.GetMemberResponse:
        with Checker() as check:
            found = c.patient_key(check, request.patient, self.insurer_code)
        key = c.parsed(found)
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
            statuses = await members.statuses(member.niss)
        answer = _member_proto(member, periods)
        answer.insurability.extend(statuses.insurability)
        answer.care_statuses.extend(statuses.care_statuses)
        return ms_pb2.GetMemberResponse(member=answer)

    async def list_changes(
        self, request: ms_pb2.ListAffiliationChangesRequest
    ) -> ms_pb2.ListAffiliationChangesResponse:
        with Checker() as check:
            after = check.number("after_sequence", request.after_sequence, minimum=0, maximum=2**62)
            size = check.page_size(
                "page_size", request.page_size, default=DEFAULT_FEED_PAGE, maximum=MAX_FEED_PAGE
            )
        async with self._sessions() as session:
            members = MemberRepository(session)
            last = await members.last_sequence()
            changes = await members.changes_after(after, size)
        return ms_pb2.ListAffiliationChangesResponse(
            changes=[change_proto(e, self.insurer_code) for e in changes], last_sequence=last
        )

    async def watch(
        self, request: ms_pb2.WatchAffiliationChangesRequest
    ) -> AsyncIterator[ms_pb2.WatchAffiliationChangesResponse]:
        """The backlog after ``after_sequence``, then every change as it is committed."""
        with Checker() as check:
            cursor = check.number("after_sequence", request.after_sequence, minimum=0, maximum=2**62)
        while not self.signal.closed:
            async with self._sessions() as session:
                batch = await MemberRepository(session).changes_after(cursor, WATCH_BATCH)
            for change in batch:
                yield ms_pb2.WatchAffiliationChangesResponse(change=change_proto(change, self.insurer_code))
                cursor = change.sequence
            if len(batch) < WATCH_BATCH:
                await self.signal.wait_beyond(cursor, SAFETY_TIMEOUT)


def _member_proto(member: MemberRow, periods: tuple[tuple[dt.date, dt.date | None], ...]) -> ms_pb2.Member:
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
