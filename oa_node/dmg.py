"""The DMG operations of an insurer node: consult, notify, list, enrol, and the invoicing intake.

Every operation runs the primary controls (:mod:`oa_node.controls`) first, then, for a change, in ONE
transaction: take the per-patient lock, load the patient's DMG file, run the pure rule
(:mod:`oa_node.rules`), save the diff, write the outbox messages it causes, the idempotency record and
the audit row. A rejection (a :class:`~mycarenet_core.errors.MeshError`) rolls everything back.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

from google.protobuf.message import Message as ProtoMessage
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mycarenet_core import dates
from mycarenet_core.clock import Clock
from mycarenet_core.db import transaction
from mycarenet_core.errors import (
    FieldViolation,
    McnCode,
    MeshError,
    business_error,
    field_error,
    invalid_argument,
)
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import intake_service_pb2 as intake_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import oa_dmg_service_pb2 as oa_pb2
from mycarenet_core.identifiers import parse_niss
from mycarenet_core.telemetry import stamp_trace_context
from oa_node import controls as c
from oa_node import convert, rules
from oa_node import models as m
from oa_node.audit import AuditEntry, Auditor, context_fields
from oa_node.repositories import (
    DmgFileRepository,
    EnrolmentRepository,
    LoadedFile,
    MemberRepository,
    OutboxRepository,
    ReferenceRepository,
    RequestRecordRepository,
)

T = TypeVar("T")
R = TypeVar(
    "R",
    intake_pb2.RegisterContactResponse,
    intake_pb2.RegisterPaperAttestationResponse,
    oa_pb2.NotifyDmgResponse,
)
RI = TypeVar("RI", intake_pb2.RegisterContactResponse, intake_pb2.RegisterPaperAttestationResponse)
IntakeRequest = intake_pb2.RegisterContactRequest | intake_pb2.RegisterPaperAttestationRequest
IntakeRule = Callable[[rules.DmgFile, rules.RuleContext, str, dt.date], rules.Decision]

ALL_YEARS = frozenset(range(1900, 2200))
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 500, 5000

# Rule codes about the request's content (INVALID_ARGUMENT); the others are business refusals.
_INVALID_CODES = frozenset({100, 111, 112, 113, 130, 145, 146, 156, 158, 166})
_NOTIFY_FIELDS = {
    "requester": "context.requester_inami",
    "supervisor": "supervisor_inami",
    "code": "nomenclature_code",
    "requester_reference": "context.requester_reference",
}
_INTAKE_RPCS = {"contact": "RegisterContact", "attestation": "RegisterPaperAttestation"}
_INTAKE_FIELDS = {"requester": "provider_inami", "code": "nomenclature_code", "patient": "patient_niss"}


def rule_error(error: rules.DmgRuleError, fields: dict[str, str]) -> MeshError:
    """The MeshError of a rule's rejection, with the request's field path."""
    path = fields.get(error.field or "", error.field or "")
    if error.code in _INVALID_CODES:
        return invalid_argument([FieldViolation(path, error.code, error.reason)])
    try:
        reason = McnCode(error.code).name
    except ValueError:
        reason = f"DMG_RULE_{error.code}"
    return business_error(error.code, reason, error.reason, field_path=path or None)


def fingerprint(request: ProtoMessage, *, drop: Sequence[str] = ()) -> str:
    """SHA-256 of a request's content without the fields in ``drop`` (e.g. the context)."""
    copy = type(request)()
    copy.CopyFrom(request)
    for name in drop:
        copy.ClearField(name)
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


class DmgOperations:
    """The OaDmgService and InvoicingIntakeService behaviour of one insurer node."""

    def __init__(
        self,
        *,
        insurer_code: str,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        auditor: Auditor,
        on_outbox: Callable[[], None] = lambda: None,
        contact_codes: frozenset[str] = rules.DEFAULT_CONTACT_CODES,
        max_notification_delay_days: int | None = 7,
    ) -> None:
        self.insurer_code = insurer_code
        self._sessions = sessions
        self._clock = clock
        self._auditor = auditor
        self._on_outbox = on_outbox
        self._contact_codes = contact_codes
        self._max_days = max_notification_delay_days

    # --- consult ---------------------------------------------------------------------------------------

    async def consult(self, request: oa_pb2.ConsultDmgRequest, peer: str = "") -> oa_pb2.ConsultDmgResponse:
        entry = AuditEntry("ConsultDmg", context_fields(request.context, peer))

        async def work(session: AsyncSession) -> oa_pb2.ConsultDmgResponse:
            out: c.Violations = []
            who = c.caller(request.context, out)
            key = c.patient_key(request.patient, self.insurer_code, out)
            day = c.date(request.request_date, "request_date", out)
            c.reject(out)
            assert who is not None
            assert key is not None
            assert day is not None
            c.reject(c.consult_date(day, who.today))
            await self._check_requester(session, who, c.Request.CONSULT)
            member = await self._member(session, key, on=day, entry=entry)
            file = (await DmgFileRepository(session).load(member.niss)).file
            holding = file.holding_at(day)
            response = oa_pb2.ConsultDmgResponse(
                patient=convert.patient(member),
                insurer_code=self.insurer_code,
                payment_made_this_year=file.paid_for(day.year) is not None,
            )
            if holding is not None:
                names = await self._names(session, [holding.holder, holding.trainee])
                response.holding.CopyFrom(convert.holding(holding, names, today=who.today))
            return response

        return await self._auditor.run(entry, work)

    # --- notify ----------------------------------------------------------------------------------------

    async def notify(self, request: oa_pb2.NotifyDmgRequest, peer: str = "") -> oa_pb2.NotifyDmgResponse:
        entry = AuditEntry("NotifyDmg", context_fields(request.context, peer))
        return await self._once(lambda: self._auditor.run(entry, lambda s: self._notify(s, request, entry)))

    async def _notify(
        self, session: AsyncSession, request: oa_pb2.NotifyDmgRequest, entry: AuditEntry
    ) -> oa_pb2.NotifyDmgResponse:
        out: c.Violations = []
        who = c.caller(request.context, out)
        key = c.patient_key(request.patient, self.insurer_code, out)
        contact = c.date(request.contact_date, "contact_date", out)
        out += c.contact_time(request.contact_time)
        out += c.nomenclature(request.nomenclature_code, self._contact_codes)
        supervisor = c.inami(request.supervisor_inami, "supervisor_inami", out, required=False)
        c.reject(out)
        assert who is not None
        assert key is not None
        assert contact is not None
        print_ = fingerprint(request, drop=["context"])
        records = RequestRecordRepository(session)
        replay = await self._replay(records, "notify", who.inami.value, who.reference, print_, entry)
        if replay is not None:
            return _replayed(oa_pb2.NotifyDmgResponse(), replay)
        c.reject(c.contact_date(contact, who.today, max_days=self._max_days))
        await self._check_requester(session, who, c.Request.NOTIFY)
        if supervisor is not None:
            known = await ReferenceRepository(session).provider(supervisor.value)
            if known is None:
                raise field_error(
                    "supervisor_inami", McnCode.PROVIDER_UNKNOWN, "supervisor unknown to this insurer"
                )
        member = await self._member(session, key, on=contact, entry=entry)
        files = DmgFileRepository(session)
        await files.lock(member.niss)
        replay = await self._replay(records, "notify", who.inami.value, who.reference, print_, entry)
        if replay is not None:
            return _replayed(oa_pb2.NotifyDmgResponse(), replay)
        loaded = await files.load(member.niss)
        sup = supervisor.value if supervisor is not None else None
        ctx = await self._rule_context(
            session, member, loaded, [who.inami.value, sup], on=contact, today=who.today
        )
        try:
            decision = rules.notify(
                loaded.file,
                provider=who.inami.value,
                contact_date=contact,
                code=request.nomenclature_code.strip(),
                requester_reference=who.reference,
                processing_date=who.today,
                ctx=ctx,
                supervisor=sup,
            )
        except rules.DmgRuleError as error:
            raise rule_error(error, _NOTIFY_FIELDS) from None
        answer = decision.answer
        assert answer is not None
        previous = decision.holdings_closed[0].holder if decision.holdings_closed else None
        names = await self._names(
            session, [answer.holder, previous, *(msg.recipient for msg in decision.messages)]
        )
        await self._apply(session, loaded, decision, member, ctx, names, who.reference, entry)
        response = oa_pb2.NotifyDmgResponse(
            patient=convert.patient(member),
            insurer_code=self.insurer_code,
            holder=convert.provider(answer.holder, names),
            start_date=dates.to_proto(answer.start),
            end_date=dates.to_proto(answer.end),
            payment=convert.INDICATORS[answer.indicator],
            previous_holder=convert.provider(previous, names),
        )
        await records.add(
            "notify", who.inami.value, who.reference, print_, response.SerializeToString(), self._clock.now()
        )
        return response

    # --- list ------------------------------------------------------------------------------------------

    async def list_holdings(
        self, request: oa_pb2.ListHoldingsRequest, peer: str = ""
    ) -> oa_pb2.ListHoldingsResponse:
        entry = AuditEntry("ListHoldings", context_fields(request.context, peer))

        async def work(session: AsyncSession) -> oa_pb2.ListHoldingsResponse:
            out: c.Violations = []
            who = c.caller(request.context, out)
            if request.page_size < 0:
                out.append(FieldViolation("page_size", McnCode.BAD_FORMAT, "page size must not be negative"))
            after = _decode_token(request.page_token, out)
            c.reject(out)
            assert who is not None
            c.reject(c.list_year(request.year, who.today))
            await self._check_requester(session, who, c.Request.LIST)
            size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
            rows = await DmgFileRepository(session).holder_year(
                who.inami.value, request.year, after_niss=after, limit=size + 1
            )
            page, more = rows[:size], len(rows) > size
            members = {niss: await MemberRepository(session).get(niss) for niss in (e.niss for e in page)}
            names = await self._names(session, [who.inami.value])
            first, last = dt.date(request.year, 1, 1), dt.date(request.year, 12, 31)
            response = oa_pb2.ListHoldingsResponse(
                next_page_token=_encode_token(page[-1].niss) if more and page else ""
            )
            for item in page:
                member = members[item.niss]
                response.entries.append(
                    dmg_pb2.PatientListEntry(
                        patient=convert.patient(member) if member else None,
                        insurer_code=self.insurer_code,
                        periods=[
                            convert.period(max(h.start, first), min(h.end, last)) for h in item.holdings
                        ],
                        payments=[convert.payment(p, names) for p in item.payments],
                    )
                )
            return response

        return await self._auditor.run(entry, work)

    # --- enrolment -------------------------------------------------------------------------------------

    async def enrol(self, request: oa_pb2.EnrolDmgRequest, peer: str = "") -> oa_pb2.EnrolDmgResponse:
        entry = AuditEntry("EnrolDmg", context_fields(request.context, peer))

        async def work(session: AsyncSession) -> oa_pb2.EnrolDmgResponse:
            out: c.Violations = []
            who = c.caller(request.context, out)
            out += c.bank_account(request.bank_account)
            since = c.date(request.start_date, "start_date", out, required=False)
            c.reject(out)
            assert who is not None
            await self._check_requester(session, who, c.Request.ENROL)
            enrolments = EnrolmentRepository(session)
            existing = await enrolments.get(who.inami.value)
            if existing is not None:
                raise c.already_enrolled(existing.enrolled_since)
            account = request.bank_account
            start = since or who.today
            await enrolments.add(
                m.Enrolment(
                    inami=who.inami.value,
                    enrolled_since=start,
                    iban=account.iban.replace(" ", "").upper(),
                    bic=account.bic.upper(),
                    holder_name=account.holder_name,
                    requested_at=self._clock.now(),
                )
            )
            return oa_pb2.EnrolDmgResponse(
                insurer_code=self.insurer_code, enrolled_since=dates.to_proto(start)
            )

        return await self._once(lambda: self._auditor.run(entry, work))

    async def get_enrolment(
        self, request: oa_pb2.GetEnrolmentRequest, peer: str = ""
    ) -> oa_pb2.GetEnrolmentResponse:
        entry = AuditEntry("GetEnrolment", {"requester_inami": request.inami, "peer": peer})

        async def work(session: AsyncSession) -> oa_pb2.GetEnrolmentResponse:
            out: c.Violations = []
            found = c.inami(request.inami, "inami", out)
            c.reject(out)
            assert found is not None
            enrolment = await EnrolmentRepository(session).get(found.value)
            if enrolment is None:
                return oa_pb2.GetEnrolmentResponse(enrolled=False)
            return oa_pb2.GetEnrolmentResponse(
                enrolled=True,
                enrolled_since=dates.to_proto(enrolment.enrolled_since),
                bank_account=common_pb2.BankAccount(
                    iban=enrolment.iban, bic=enrolment.bic, holder_name=enrolment.holder_name
                ),
            )

        return await self._auditor.run(entry, work)

    # --- intake ----------------------------------------------------------------------------------------

    async def register_contact(
        self, request: intake_pb2.RegisterContactRequest, peer: str = ""
    ) -> intake_pb2.RegisterContactResponse:
        def parse(out: c.Violations) -> tuple[dt.date | None, IntakeRule]:
            contact = c.date(request.contact_date, "contact_date", out)
            code = c.text(request.nomenclature_code, "nomenclature_code", out)

            def rule(
                file: rules.DmgFile, ctx: rules.RuleContext, provider: str, submitted: dt.date
            ) -> rules.Decision:
                assert contact is not None
                return rules.register_contact(
                    file,
                    provider=provider,
                    contact_date=contact,
                    code=code,
                    submission_date=submitted,
                    ctx=ctx,
                )

            return contact, rule

        response = intake_pb2.RegisterContactResponse(intake_reference=request.intake_reference)
        return await self._register("contact", request, response, parse, peer)

    async def register_paper_attestation(
        self, request: intake_pb2.RegisterPaperAttestationRequest, peer: str = ""
    ) -> intake_pb2.RegisterPaperAttestationResponse:
        def parse(out: c.Violations) -> tuple[dt.date | None, IntakeRule]:
            attested = c.date(request.attestation_date, "attestation_date", out)

            def rule(
                file: rules.DmgFile, ctx: rules.RuleContext, provider: str, submitted: dt.date
            ) -> rules.Decision:
                assert attested is not None
                return rules.register_paper_attestation(
                    file, provider=provider, attestation_date=attested, submission_date=submitted, ctx=ctx
                )

            return attested, rule

        response = intake_pb2.RegisterPaperAttestationResponse(intake_reference=request.intake_reference)
        return await self._register("attestation", request, response, parse, peer)

    async def _register(
        self,
        kind: str,
        request: IntakeRequest,
        response: RI,
        parse: Callable[[c.Violations], tuple[dt.date | None, IntakeRule]],
        peer: str,
    ) -> RI:
        """An intake event for one patient: controls, replay, lock, rule, save, outbox, record.

        ``parse`` checks the event's own fields and returns its date and the rule to run; the fields
        both requests share (reference, patient, provider, submission date) are checked here.
        """
        entry = AuditEntry(
            _INTAKE_RPCS[kind], {"requester_reference": request.intake_reference, "peer": peer}
        )

        async def work(session: AsyncSession) -> RI:
            out: c.Violations = []
            reference = c.text(request.intake_reference, "intake_reference", out)
            niss = c.niss(request.patient_niss, "patient_niss", out)
            provider = c.inami(request.provider_inami, "provider_inami", out)
            on, rule = parse(out)
            submitted = c.date(request.submission_date, "submission_date", out)
            c.reject(out)
            assert niss is not None
            assert provider is not None
            assert on is not None
            assert submitted is not None
            entry.patient_niss = niss.value
            print_ = fingerprint(request)
            records = RequestRecordRepository(session)
            replay = await self._replay(records, kind, "", reference, print_, entry, field="intake_reference")
            if replay is not None:
                return _replayed(response, replay)
            member = await MemberRepository(session).get(niss.value)
            if member is None:
                raise field_error("patient_niss", McnCode.PATIENT_UNKNOWN, "NISS unknown to this insurer")
            files = DmgFileRepository(session)
            await files.lock(niss.value)
            replay = await self._replay(records, kind, "", reference, print_, entry, field="intake_reference")
            if replay is not None:
                return _replayed(response, replay)
            loaded = await files.load(niss.value)
            ctx = await self._rule_context(session, member, loaded, [provider.value], on=on, today=submitted)
            try:
                decision = rule(loaded.file, ctx, provider.value, submitted)
            except rules.DmgRuleError as error:
                raise rule_error(error, _INTAKE_FIELDS) from None
            names = await self._names(session, _people(decision))
            ids = await self._apply(session, loaded, decision, member, ctx, names, "", entry)
            response.effects.CopyFrom(_effects(decision, names, submitted, ids))
            await records.add(kind, "", reference, print_, response.SerializeToString(), self._clock.now())
            return response

        return await self._once(lambda: self._auditor.run(entry, work))

    async def process_year_end(
        self, request: intake_pb2.ProcessYearEndRequest, peer: str = ""
    ) -> intake_pb2.ProcessYearEndResponse:
        """The year-end run, one transaction per patient (running it again is harmless)."""
        entry = AuditEntry("ProcessYearEnd", {"peer": peer})

        async def work(_session: AsyncSession) -> intake_pb2.ProcessYearEndResponse:
            # The audit row goes in ``_session`` at the end; each patient gets a transaction of its own.
            out: c.Violations = []
            if not request.year:
                out.append(FieldViolation("year", McnCode.MANDATORY_FIELD_MISSING, "year is mandatory"))
            today = c.date(request.processing_date, "processing_date", out)
            c.reject(out)
            assert today is not None
            if today < dt.date(request.year, 12, 31):
                raise field_error(
                    "processing_date", McnCode.DATE_IN_FUTURE, f"year {request.year} is not over"
                )
            response = intake_pb2.ProcessYearEndResponse()
            async with self._sessions() as session:
                patients = await DmgFileRepository(session).patients_with_holdings()
            for niss in patients:
                await self._year_end_of(niss, request.year, today, response, entry)
            done = response.patients_affected, response.payments_created
            entry.incidents.append(f"year {request.year}: {done[0]} patients, {done[1]} payments")
            return response

        response = await self._auditor.run(entry, work)
        self._on_outbox()
        return response

    async def _year_end_of(
        self,
        niss: str,
        year: int,
        today: dt.date,
        response: intake_pb2.ProcessYearEndResponse,
        entry: AuditEntry,
    ) -> None:
        async with transaction(self._sessions) as session:
            member = await MemberRepository(session).get(niss)
            files = DmgFileRepository(session)
            if member is None or not await files.lock(niss):
                return
            loaded = await files.load(niss)
            ctx = await self._rule_context(session, member, loaded, [], on=dt.date(year, 12, 31), today=today)
            try:
                decision = rules.process_year_end(loaded.file, year=year, processing_date=today, ctx=ctx)
            except rules.DmgRuleError as error:
                entry.incidents.append(f"{niss}: {error}")
                return
            if decision.file == loaded.file:
                return
            names = await self._names(session, _people(decision))
            await self._apply(session, loaded, decision, member, ctx, names, "", entry)
            response.patients_affected += 1
            response.payments_created += len(decision.payments_created)
            response.payments_recovered += len(decision.payments_recovered)

    # --- shared steps ----------------------------------------------------------------------------------

    async def _once(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run a write; retry once when a concurrent request won a unique key (the retry then sees it:
        a replay, 158, or 168), and wake the outbox relay after a commit."""
        try:
            result = await attempt()
        except IntegrityError:
            result = await attempt()
        self._on_outbox()
        return result

    async def _replay(
        self,
        records: RequestRecordRepository,
        kind: str,
        requester: str,
        reference: str,
        print_: str,
        entry: AuditEntry,
        *,
        field: str = "context.requester_reference",
    ) -> bytes | None:
        """The first answer to an identical request; 158 when the reference was used for another one."""
        found = await records.find(kind, requester, reference)
        if found is None:
            return None
        if found.fingerprint != print_:
            raise field_error(
                field, McnCode.IDENTIFICATION_INCONSISTENT, "reference already used for a different request"
            )
        entry.outcome = "REPLAYED"
        return found.response

    async def _check_requester(self, session: AsyncSession, who: c.Caller, request: c.Request) -> None:
        reference = ReferenceRepository(session)
        provider = await reference.provider(who.inami.value)
        organisation = await reference.organisation(who.inami.value) if provider is None else None
        entry = provider if provider is not None else organisation
        c.reject(
            c.requester(
                who,
                request,
                known=entry is not None,
                registered_role=entry.role if entry is not None else None,
                valid_from=entry.valid_from if entry is not None else None,
                valid_until=entry.valid_until if entry is not None else None,
            )
        )

    async def _member(
        self, session: AsyncSession, key: c.PatientKey, *, on: dt.date, entry: AuditEntry
    ) -> m.Member:
        members = MemberRepository(session)
        if key.niss is not None:
            member = await members.get(key.niss)
        else:
            assert key.registration_number is not None
            member = await members.by_registration(key.registration_number)
        periods = await members.periods(member.niss) if member is not None else ()
        c.reject(c.patient(key, member_niss=member.niss if member else None, periods=periods, on=on))
        assert member is not None
        entry.patient_niss = member.niss
        return member

    async def _rule_context(
        self,
        session: AsyncSession,
        member: m.Member,
        loaded: LoadedFile,
        providers: Iterable[str | None],
        *,
        on: dt.date,
        today: dt.date,
    ) -> rules.RuleContext:
        """What the rules need besides the file: enrolments, groups and supervisors of the providers
        concerned (the file's holders, payees and contact providers, and those of the request)."""
        file = loaded.file
        people = {p for p in providers if p}
        people |= {h.holder for h in file.holdings} | {p.beneficiary for p in file.payments}
        people |= {x.provider for x in file.contacts} | {h.trainee for h in file.holdings if h.trainee}
        reference = ReferenceRepository(session)
        known = await reference.providers(people)
        supervisors = {p.inami: p.supervisor_inami for p in known.values() if p.supervisor_inami}
        people |= set(supervisors.values())
        groups = await reference.groups_on(people, on)
        enrolled = await EnrolmentRepository(session).enrolled_on(people | set(groups.values()), today)
        return rules.RuleContext(
            patient=_profile(member),
            enrolled=enrolled,
            group_of=groups,
            supervisor_of=supervisors,
            contact_codes=self._contact_codes,
            tariffs=await reference.tariff_table(),
            max_notification_delay_days=self._max_days,
        )

    async def _names(self, session: AsyncSession, inamis: Iterable[str | None]) -> convert.Names:
        wanted = [i for i in inamis if i]
        reference = ReferenceRepository(session)
        return convert.names_of(await reference.providers(wanted), await reference.organisations(wanted))

    async def _apply(
        self,
        session: AsyncSession,
        loaded: LoadedFile,
        decision: rules.Decision,
        member: m.Member,
        ctx: rules.RuleContext,
        names: convert.Names,
        requester_reference: str,
        entry: AuditEntry,
    ) -> list[str]:
        """Save the new file and write its messages to the outbox; return the message ids."""
        await DmgFileRepository(session).save(loaded, decision.file)
        now = self._clock.now()
        patient = convert.patient(member)
        rows: list[m.OutboxMessage] = []
        for message in decision.messages:
            if not ctx.is_enrolled(message.recipient):  # the rules already check it; never post otherwise
                entry.incidents.append(f"message to non-enrolled {message.recipient} dropped")
                continue
            message_id = f"{self.insurer_code}-{uuid.uuid4()}"
            proto = convert.mailbox_message(
                message,
                message_id=message_id,
                insurer_code=self.insurer_code,
                patient_proto=patient,
                names=names,
                requester_reference=requester_reference,
                now=now,
            )
            stamp_trace_context(proto)  # the delivery and the pick-up link back to this request
            rows.append(
                m.OutboxMessage(
                    message_id=message_id,
                    recipient_inami=message.recipient,
                    kind=int(proto.kind),
                    payload=proto.SerializeToString(),
                    created_at=now,
                )
            )
        await OutboxRepository(session).add(rows)
        return [row.message_id for row in rows]


# --- helpers ---------------------------------------------------------------------------------------------


def _profile(member: m.Member) -> rules.PatientProfile:
    birth = member.birth_date
    if birth is None:
        parsed = parse_niss(member.niss)
        birth = parsed.birth_date or dt.date(parsed.birth_year, 1, 1)
    contracts: tuple[rules.MedicalHouseContract, ...] = ()
    if member.medical_house_inami and member.medical_house_start:
        contracts = (
            rules.MedicalHouseContract(
                member.medical_house_inami, member.medical_house_start, member.medical_house_end
            ),
        )
    return rules.PatientProfile(
        birth_date=birth,
        chronic_status_years=ALL_YEARS if member.chronic_condition else frozenset(),
        medical_house_contracts=contracts,
    )


def _people(decision: rules.Decision) -> list[str]:
    out: list[str] = []
    for h in (
        *decision.holdings_opened,
        *decision.holdings_extended,
        *decision.holdings_closed,
        *decision.holdings_cancelled,
        *decision.holdings_reopened,
    ):
        out += [h.holder, *([h.trainee] if h.trainee else [])]
    out += [p.beneficiary for p in (*decision.payments_created, *decision.payments_recovered)]
    for msg in decision.messages:
        out += [msg.recipient, *([msg.new_holder] if isinstance(msg, rules.ClosureMessage) else [])]
    return out


def _effects(
    decision: rules.Decision, names: convert.Names, today: dt.date, message_ids: list[str]
) -> intake_pb2.IntakeEffects:
    changed: dict[int, rules.Holding] = {}
    for h in (
        *decision.holdings_opened,
        *decision.holdings_extended,
        *decision.holdings_closed,
        *decision.holdings_cancelled,
        *decision.holdings_reopened,
    ):
        changed.setdefault(h.seq, h)
    now = {h.seq: h for h in decision.file.holdings}
    effects = intake_pb2.IntakeEffects(
        holdings=[convert.holding(now.get(seq, h), names, today=today) for seq, h in sorted(changed.items())],
        payments=[convert.payment(p, names) for p in decision.payments_created],
        recoveries=[convert.payment(p, names) for p in decision.payments_recovered],
        message_ids=message_ids,
    )
    attestation = decision.attestation
    if attestation is not None and attestation.outcome is rules.AttestationOutcome.REFUSED:
        reason = attestation.refusal_reason.value if attestation.refusal_reason else "refused"
        effects.note = f"attestation refused: {reason}"
    elif not (changed or decision.payments_created or decision.payments_recovered):
        effects.note = "registered: no effect on the DMG"
    return effects


def _replayed(response: R, stored: bytes) -> R:
    """The stored answer of an intake event, marked as a replay."""
    response.Clear()
    response.MergeFromString(stored)
    response.replayed = True
    return response


def _encode_token(niss: str) -> str:
    return base64.urlsafe_b64encode(niss.encode()).decode()


def _decode_token(token: str, out: c.Violations) -> str:
    if not token:
        return ""
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError):
        out.append(FieldViolation("page_token", McnCode.BAD_FORMAT, "invalid page token"))
        return ""
