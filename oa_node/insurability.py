"""The insurability services of one insurer node (OaInsurabilityService): MemberData, the pharmacist's rights
consultation with payment commitment (seed 003 §5), the check of an agreement number for the trusted third
party (§5.4.2), and the validation of a pharmacy's tarification lines (§5.1). Reads only, but for the
rejected tarification lines, recorded with the audit row: a tarification office consults only for those
(seed 003 §8.2.2.7).

The rules are :mod:`oa_node.rules.insurability` (pure); this module reads the member's rows, calls them and
answers in protos.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from mycarenet_core import dates
from mycarenet_core.codes import McnCode
from mycarenet_core.errors import permission_denied
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.insurability.v1 import insurability_pb2 as ins_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import oa_insurability_service_pb2 as oa_ins_pb2
from mycarenet_core.reads import HotReads, Query
from mycarenet_core.validation import Checker
from oa_node import controls as c
from oa_node import convert
from oa_node import models as m
from oa_node.audit import AuditEntry
from oa_node.repositories.consult import REQUESTER, Registration
from oa_node.repositories.members import MemberRow
from oa_node.rules import insurability as r

MAX_AGREEMENT_NUMBER = 64
CARE_KINDS = {
    "CHRONIC_CONDITION": ins_pb2.CARE_STATUS_KIND_CHRONIC_CONDITION,
    "PALLIATIVE": ins_pb2.CARE_STATUS_KIND_PALLIATIVE,
    "HOSPITALISED": ins_pb2.CARE_STATUS_KIND_HOSPITALISED,
}
CARE_KIND_NAMES = {value: name for name, value in CARE_KINDS.items()}

_insurability = m.table_of(m.InsurabilityRow)
_care = m.table_of(m.CareStatusRow)
_holdings = m.table_of(m.HoldingRow)
_members = m.table_of(m.Member)
_affiliations = m.table_of(m.Affiliation)
_day = bindparam("day", type_=_holdings.c.start.type)
# The reads of these services, each compiled once and run on the hot-read driver (no ORM, no write
# transaction, no thread hop on SQLite).
REQUESTER_Q = Query(REQUESTER)
MEMBER_BY_NISS = Query(select(_members).where(_members.c.niss == bindparam("key")))
MEMBER_BY_NUMBER = Query(select(_members).where(_members.c.registration_number == bindparam("key")))
AFFILIATIONS = Query(
    select(_affiliations.c.start, _affiliations.c.end)
    .where(_affiliations.c.niss == bindparam("niss"))
    .order_by(_affiliations.c.start)
)
INSURABILITY = Query(select(_insurability).where(_insurability.c.niss == bindparam("niss")))
CARE_STATUSES = Query(select(_care).where(_care.c.niss == bindparam("niss")))
HOLDER_ON = Query(
    select(_holdings.c.holder)
    .where(
        _holdings.c.niss == bindparam("niss"),
        _holdings.c.start <= _day,
        _holdings.c.end >= _day,
        _holdings.c.status != "CANCELLED",
    )
    .order_by(_holdings.c.start, _holdings.c.seq)
    .limit(1)
)
_rejected = m.table_of(m.RejectedTarificationRow)
REJECTED_LINE = Query(
    select(_rejected.c.line_id)
    .where(
        _rejected.c.provider_inami == bindparam("provider"),
        _rejected.c.niss == bindparam("niss"),
        _rejected.c.dispensing_date == bindparam("day", type_=_rejected.c.dispensing_date.type),
    )
    .limit(1)
)
_key = m.table_of(m.AgreementKey)
SECRET = Query(select(_key.c.secret).where(_key.c.id == 1))
VERDICTS = {
    r.Verdict.PAID_BASIC_PRINCIPLE: oa_ins_pb2.TARIFICATION_VERDICT_PAID_BASIC_PRINCIPLE,
    r.Verdict.PAID_COMMITMENT: oa_ins_pb2.TARIFICATION_VERDICT_PAID_COMMITMENT,
    r.Verdict.REJECTED: oa_ins_pb2.TARIFICATION_VERDICT_REJECTED,
}


# --- rejected tarification lines ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rejection:
    """A rejected tarification line, as recorded."""

    provider_inami: str
    niss: str
    dispensing: dt.date
    line_id: str
    reason: str


async def record_rejections(session: AsyncSession, rejections: Sequence[Rejection], now: dt.datetime) -> None:
    """Record the rejected lines not recorded yet (a retried validation records nothing twice; the first
    reason stays)."""
    keys = {(x.provider_inami, x.niss, x.dispensing, x.line_id): x for x in rejections}
    for (provider, niss, day, line_id), x in keys.items():
        if await session.get(m.RejectedTarificationRow, (provider, niss, day, line_id)) is None:
            session.add(
                m.RejectedTarificationRow(
                    provider_inami=provider,
                    niss=niss,
                    dispensing_date=day,
                    line_id=line_id,
                    reason=x.reason[:32],
                    rejected_at=now,
                )
            )


# --- requests -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InsurabilityQuery:
    caller: c.Caller
    patient: c.PatientKey
    day: dt.date


def parse_member_data(request: oa_ins_pb2.GetMemberDataRequest, insurer_code: str) -> InsurabilityQuery:
    asked = request.request
    with Checker() as check:
        who = c.caller(check, request.context)
        key = c.patient_key(check, asked.patient, insurer_code)
        day = check.date("date", asked.date) if asked.HasField("date") else None
    today = c.parsed(who).today
    return InsurabilityQuery(c.parsed(who), c.parsed(key), day or today)


def parse_rights(request: oa_ins_pb2.ConsultRightsRequest, insurer_code: str) -> InsurabilityQuery:
    asked = request.request
    with Checker() as check:
        who = c.caller(check, request.context)
        key = c.patient_key(check, asked.patient, insurer_code)
        day = check.date("dispensing_date", asked.dispensing_date)
    return InsurabilityQuery(c.parsed(who), c.parsed(key), c.parsed(day))


def status_of(message: ins_pb2.InsurabilityStatus) -> r.InsurabilityStatus:
    return r.InsurabilityStatus(message.ct1, message.ct2, message.preferential_rate, message.maximum_billing)


def parse_verify(
    request: oa_ins_pb2.VerifyAgreementRequest, insurer_code: str
) -> tuple[r.AgreementFields, str]:
    with Checker() as check:
        number = check.text("agreement_number", request.agreement_number, max_length=MAX_AGREEMENT_NUMBER)
        niss = check.niss("niss", request.niss)
        inami = check.inami("provider_inami", request.provider_inami)
        dispensing = check.date("dispensing_date", request.dispensing_date)
        start = check.date("coverage.start", request.coverage.start)
        end = check.date("coverage.end", request.coverage.end)
        status = _status(check, "status", request.status)
    coverage = r.Coverage(c.parsed(start), c.parsed(end), status)
    fields = r.AgreementFields(
        insurer_code, c.parsed(niss), c.parsed(inami).value, c.parsed(dispensing), coverage
    )
    return fields, c.parsed(number)


MAX_LINES = 1000
MAX_LINE_ID = 64
_BASES = {
    oa_ins_pb2.CONSULTATION_BASIS_UNSPECIFIED: r.Basis.UNKNOWN,
    oa_ins_pb2.CONSULTATION_BASIS_CONSULTED_AT_DISPENSING: r.Basis.CONSULTED,
    oa_ins_pb2.CONSULTATION_BASIS_REUSED: r.Basis.REUSED,
}


def _status(check: Checker, field: str, message: ins_pb2.InsurabilityStatus) -> r.InsurabilityStatus:
    for name in ("ct1", "ct2"):
        value = getattr(message, name)
        if len(value) != 3 or not value.isascii() or not value.isdigit():
            check.add(f"{field}.{name}", McnCode.BAD_FORMAT, f"{name} must be 3 digits")
    return status_of(message)


def parse_lines(
    request: oa_ins_pb2.ValidateTarificationRequest,
) -> list[tuple[str, r.TarificationLine]]:
    """(line id, line) of each line; every violation at once (at most 1000 lines, ids of 64 characters)."""
    with Checker() as check:
        if not check.items("lines", request.lines, maximum=MAX_LINES, required=True):
            return []
        found: list[tuple[str, r.TarificationLine | None]] = []
        for index, raw in enumerate(request.lines):
            at = f"lines[{index}]"
            line_id = check.text(f"{at}.line_id", raw.line_id, max_length=MAX_LINE_ID)
            niss = check.niss(f"{at}.niss", raw.niss)
            inami = check.inami(f"{at}.provider_inami", raw.provider_inami)
            day = check.date(f"{at}.dispensing_date", raw.dispensing_date)
            status = _status(check, f"{at}.status", raw.status)
            basis = _BASES.get(raw.basis)
            if basis is None:
                check.add(f"{at}.basis", McnCode.VALUE_NOT_ALLOWED, "unknown consultation basis")
            commitment = None
            if raw.HasField("commitment"):
                given = raw.commitment
                number = check.text(
                    f"{at}.commitment.agreement_number",
                    given.agreement_number,
                    max_length=MAX_AGREEMENT_NUMBER,
                )
                start = check.date(f"{at}.commitment.coverage.start", given.coverage.start)
                end = check.date(f"{at}.commitment.coverage.end", given.coverage.end)
                committed_on = check.date(f"{at}.commitment.dispensing_date", given.dispensing_date)
                committed = _status(check, f"{at}.commitment.status", given.status)
                if start and end and committed_on and number:
                    commitment = r.Commitment(committed_on, r.Coverage(start, end, committed), number)
            line = None
            if niss and inami and day and basis is not None:
                line = r.TarificationLine(niss, inami.value, day, status, basis, commitment)
            found.append((line_id, line))
    return [(line_id, c.parsed(line)) for line_id, line in found]


# --- answers --------------------------------------------------------------------------------------------


def status_proto(status: r.InsurabilityStatus) -> ins_pb2.InsurabilityStatus:
    return ins_pb2.InsurabilityStatus(
        ct1=status.ct1,
        ct2=status.ct2,
        preferential_rate=status.preferential_rate,
        maximum_billing=status.maximum_billing,
    )


def period_proto(start: dt.date, end: dt.date | None) -> common_pb2.Period:
    return common_pb2.Period(start=dates.to_proto(start), end=dates.to_proto(end))


@dataclass(frozen=True)
class MemberFile:
    """What the insurer knows of a member for insurability: the row, its periods and care statuses."""

    member: MemberRow
    periods: list[r.InsurabilityPeriod]
    care: list[tuple[str, dt.date, dt.date | None]]
    holder: str

    def proto(self, insurer_code: str, day: dt.date) -> ins_pb2.MemberData:
        member = self.member
        data = ins_pb2.MemberData(
            patient=convert.patient(member),
            insurer_code=insurer_code,
            insurability=[
                ins_pb2.InsurabilityPeriod(period=period_proto(p.start, p.end), status=status_proto(p.status))
                for p in r.around(self.periods, day)
            ],
            care_statuses=[
                ins_pb2.CareStatusPeriod(kind=CARE_KINDS[kind], period=period_proto(start, end))
                for kind, start, end in sorted(self.care, key=lambda x: (x[1], x[0]))
                if start <= day and (end is None or day <= end)
            ],
            dmg_holder_inami=self.holder,
        )
        start, end = member.medical_house_start, member.medical_house_end
        if member.medical_house_inami and start is not None and start <= day and (end is None or day <= end):
            data.medical_house_inami = member.medical_house_inami
            data.medical_house_period.CopyFrom(period_proto(start, end))
        return data


class InsurabilityOperations:
    """The OaInsurabilityService behaviour of one insurer node: reads only, on the hot-read driver."""

    def __init__(self, *, insurer_code: str, reads: HotReads) -> None:
        self.insurer_code = insurer_code
        self._reads = reads
        self._secret: bytes | None = None

    async def member_data(
        self, query: InsurabilityQuery, entry: AuditEntry
    ) -> oa_ins_pb2.GetMemberDataResponse:
        c.check_consult_date(query.day, query.caller.today, field="date")
        found = await self._file(query, c.Request.MEMBER_DATA, entry)
        return oa_ins_pb2.GetMemberDataResponse(member_data=found.proto(self.insurer_code, query.day))

    async def consult_rights(
        self, query: InsurabilityQuery, entry: AuditEntry
    ) -> oa_ins_pb2.ConsultRightsResponse:
        who = query.caller
        c.check_consult_date(query.day, who.today, field="dispensing_date")
        found = await self._file(query, c.Request.RIGHTS, entry)
        answer = oa_ins_pb2.ConsultRightsResponse(member_data=found.proto(self.insurer_code, query.day))
        coverage = r.payment_commitment(found.periods, query.day)
        if coverage is None:
            entry.incidents.append("no right on the dispensing date: no commitment")
            return answer
        fields = r.AgreementFields(self.insurer_code, found.member.niss, who.inami.value, query.day, coverage)
        answer.commitment.CopyFrom(
            ins_pb2.PaymentCommitment(
                coverage=period_proto(coverage.start, coverage.end),
                status=status_proto(coverage.status),
                agreement_number=r.agreement_number(await self._key(), fields),
                dispensing_date=dates.to_proto(query.day),
                provider_inami=who.inami.value,
                consulted_on=dates.to_proto(who.today),
                pharmacist_inami=who.user,
            )
        )
        return answer

    async def verify(self, request: oa_ins_pb2.VerifyAgreementRequest) -> oa_ins_pb2.VerifyAgreementResponse:
        fields, number = parse_verify(request, self.insurer_code)
        return oa_ins_pb2.VerifyAgreementResponse(
            genuine=r.agreement_is_genuine(await self._key(), fields, number)
        )

    async def validate(
        self, lines: list[tuple[str, r.TarificationLine]], entry: AuditEntry
    ) -> tuple[oa_ins_pb2.ValidateTarificationResponse, list[Rejection]]:
        """Each line against the insurer's own data, then its proof (:func:`oa_node.rules.insurability.
        validate_line`); a patient unknown here is a rejected line, not a failed request. The answer, and
        the rejected lines to record (:func:`record_rejections`)."""
        key = await self._key()
        periods: dict[str, list[r.InsurabilityPeriod] | None] = {}
        results = []
        rejections: list[Rejection] = []
        for line_id, line in lines:
            if line.niss not in periods:
                member = await self._reads.first(MEMBER_BY_NISS, {"key": line.niss})
                periods[line.niss] = (
                    None if member is None else await self._periods(line.niss, line.dispensing)
                )
            known = periods[line.niss]
            decision = (
                r.LineDecision(r.Verdict.REJECTED, "PATIENT_UNKNOWN")
                if known is None
                else r.validate_line(known, line, insurer_code=self.insurer_code, key=key)
            )
            results.append(
                oa_ins_pb2.TarificationResult(
                    line_id=line_id, verdict=VERDICTS[decision.verdict], reason=decision.reason
                )
            )
            if decision.verdict is r.Verdict.REJECTED:
                rejections.append(
                    Rejection(line.provider_inami, line.niss, line.dispensing, line_id, decision.reason)
                )
        entry.incidents.append(f"{len(results)} lines, {len(rejections)} rejected")
        return oa_ins_pb2.ValidateTarificationResponse(results=results), rejections

    async def _key(self) -> bytes:
        if self._secret is None:
            row = await self._reads.first(SECRET, {})
            if row is None:
                raise RuntimeError("oa_agreement_key has no row: the database was not migrated")
            self._secret = bytes(row.secret)
        return self._secret

    async def _file(self, query: InsurabilityQuery, request: c.Request, entry: AuditEntry) -> MemberFile:
        who, key = query.caller, query.patient
        reads = self._reads
        rows = await reads.all(REQUESTER_Q, {"inami": who.inami.value})
        registered = None
        if rows:
            row = min(rows, key=lambda x: x.kind)
            registered = Registration(row.role, row.valid_from, row.valid_until)
        c.check_requester(who, request, registered)
        member = (
            await reads.first(MEMBER_BY_NISS, {"key": key.niss})
            if key.niss is not None
            else await reads.first(MEMBER_BY_NUMBER, {"key": key.registration_number or ""})
        )
        affiliations = await self._affiliations(member.niss) if member is not None else ()
        member = c.check_patient(key, member, periods=affiliations, on=query.day)
        entry.patient_niss = member.niss
        day = query.day
        if who.rejected_invoices_only:
            await self._check_rejected_line(who.inami.value, member.niss, day, entry)
        periods = await self._periods(member.niss, day, affiliations)
        care = [
            (row.kind, row.start, row.end) for row in await reads.all(CARE_STATUSES, {"niss": member.niss})
        ]
        if member.chronic_condition and not any(kind == "CHRONIC_CONDITION" for kind, _, _ in care):
            # The member's flag of the DMG tariff (seed 002) has no period: since the first affiliation.
            since = min((start for start, _ in affiliations), default=day)
            care.append(("CHRONIC_CONDITION", since, None))
        holder = await reads.first(HOLDER_ON, {"niss": member.niss, "day": day})
        return MemberFile(member, periods, care, holder.holder if holder is not None else "")

    async def _check_rejected_line(self, provider: str, niss: str, day: dt.date, entry: AuditEntry) -> None:
        """A tarification office consults only for a tarification line of the provider (its principal) this
        insurer rejected for the patient and the date (seed 003 §8.2.2.7): PERMISSION_DENIED 140
        NO_REJECTED_INVOICE otherwise."""
        line = await self._reads.first(REJECTED_LINE, {"provider": provider, "niss": niss, "day": day})
        if line is None:
            raise permission_denied(
                "NO_REJECTED_INVOICE",
                f"a tarification office consults only for an invoice line of {provider} this insurer rejected"
                f" for this patient on {day.isoformat()} (seed 003 §8.2.2.7)",
                code=McnCode.PROVIDER_NOT_ENTITLED,
            )
        entry.incidents.append(f"tarification office, rejected line {line.line_id}")

    async def _affiliations(self, niss: str) -> tuple[tuple[dt.date, dt.date | None], ...]:
        return tuple((row.start, row.end) for row in await self._reads.all(AFFILIATIONS, {"niss": niss}))

    async def _periods(
        self,
        niss: str,
        day: dt.date,
        affiliations: Sequence[tuple[dt.date, dt.date | None]] | None = None,
    ) -> list[r.InsurabilityPeriod]:
        """The member's insurability periods, or the default on its affiliations when none is recorded."""
        rows = await self._reads.all(INSURABILITY, {"niss": niss})
        if rows:
            return [
                r.InsurabilityPeriod(
                    row.start,
                    row.end,
                    r.InsurabilityStatus(row.ct1, row.ct2, row.preferential_rate, row.maximum_billing),
                )
                for row in rows
            ]
        if affiliations is None:
            affiliations = await self._affiliations(niss)
        return r.default_periods(affiliations, day)
