"""The DMG operations of an insurer node: consult, notify, list, enrol, and the invoicing intake.

Each operation takes a request already parsed by :mod:`oa_node.controls` (all format violations raised at
once before anything is read). A consult, the hot path, is one statement built at import
(:mod:`oa_node.repositories.consult`, run by :mod:`oa_node.reads`) and never opens a write transaction;
its audit row is queued.
A change runs in ONE transaction: take the per-patient lock, load the patient's DMG file, run the pure
rule (:mod:`oa_node.rules`), save the diff, write the outbox messages and the holder changes it causes,
the idempotency record and the audit row. A rejection (a :class:`~mycarenet_core.errors.MeshError`)
rolls everything back. Once a change has committed, the outbox relay and the watchers of the holder feed
are woken.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import bindparam
from sqlalchemy import select as core_select
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
from mycarenet_core.reads import HotReads
from mycarenet_core.telemetry import stamp_trace_context
from mycarenet_core.validation import encode_page_token
from oa_node import controls as c
from oa_node import convert, rules
from oa_node.audit import AuditEntry, AuditTrail
from oa_node.feeds import FeedSignal, Wakeup
from oa_node.holdings import log_moves
from oa_node.models import CareStatusRow, table_of
from oa_node.repositories import (
    ConsultRepository,
    DmgFileRepository,
    EnrolmentRepository,
    LoadedFile,
    MemberRepository,
    MemberRow,
    OutboxRepository,
    ReferenceRepository,
    RequestRecordRepository,
    outbox_row,
)
from oa_node.repositories.consult import requester

T = TypeVar("T")
R = TypeVar(
    "R",
    intake_pb2.RegisterContactResponse,
    intake_pb2.RegisterPaperAttestationResponse,
    oa_pb2.NotifyDmgResponse,
)
RI = TypeVar("RI", intake_pb2.RegisterContactResponse, intake_pb2.RegisterPaperAttestationResponse)
IntakeRule = Callable[[rules.DmgFile, rules.RuleContext, c.IntakeEvent], rules.Decision]

ALL_YEARS = frozenset(range(1900, 2200))

# Rule codes about the request's content (INVALID_ARGUMENT); the others are business refusals.
_INVALID_CODES = frozenset({100, 111, 112, 113, 130, 145, 146, 156, 158, 166})
_NOTIFY_FIELDS = {
    "requester": "context.requester_inami",
    "supervisor": "supervisor_inami",
    "code": "nomenclature_code",
    "requester_reference": "context.requester_reference",
}
_INTAKE_FIELDS = {"requester": "provider_inami", "code": "nomenclature_code", "patient": "patient_niss"}


def rule_error(error: rules.DmgRuleError, fields: dict[str, str]) -> MeshError:
    """The MeshError of a rule's rejection, with the request's field path."""
    path = fields.get(error.field or "", error.field or "")
    if error.code in _INVALID_CODES:
        return invalid_argument([FieldViolation(path, error.code, error.reason)])
    return business_error(error.code, error.code.name, error.reason, field_path=path or None)


@dataclass
class Written:
    """What a committed change leaves for the node's wake-ups."""

    outbox: int = 0
    holder_sequence: int = 0


class DmgOperations:
    """The OaDmgService and InvoicingIntakeService behaviour of one insurer node."""

    def __init__(
        self,
        *,
        insurer_code: str,
        reads: HotReads,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        audit: AuditTrail,
        outbox: Wakeup | None = None,
        holders: FeedSignal | None = None,
        contact_codes: frozenset[str] = rules.DEFAULT_CONTACT_CODES,
        max_notification_delay_days: int | None = 7,
    ) -> None:
        self.insurer_code = insurer_code
        self._reads = reads
        self._sessions = sessions
        self._clock = clock
        self._audit = audit
        self._outbox = outbox or Wakeup()
        self.holders = holders or FeedSignal()
        self.contact_codes = contact_codes
        self._max_days = max_notification_delay_days
        self._tariffs: rules.TariffTable | None = None
        """The tariff, read once: it is seeded when the database is initialised and no request changes it."""

    # --- consult ---------------------------------------------------------------------------------------

    async def consult(self, query: c.ConsultQuery, entry: AuditEntry) -> oa_pb2.ConsultDmgResponse:
        who, key = query.caller, query.patient
        c.check_consult_date(query.day, who.today)
        registration, found = await ConsultRepository(self._reads).consult(
            requester=who.inami.value,
            niss=key.niss,
            registration_number=key.registration_number,
            day=query.day,
        )
        c.check_requester(who, c.Request.CONSULT, registration)
        found = c.check_patient(key, found, periods=found.periods if found else (), on=query.day)
        entry.patient_niss = found.niss
        response = oa_pb2.ConsultDmgResponse(
            patient=convert.patient(found),
            insurer_code=self.insurer_code,
            payment_made_this_year=found.paid_this_year,
        )
        if found.holding is not None:
            response.holding.CopyFrom(convert.holding(found.holding, found.names, today=who.today))
        if found.requester_fee is not None:
            response.requester_payment.CopyFrom(
                convert.payment(found.requester_fee, found.names, today=who.today)
            )
        return response

    # --- notify ----------------------------------------------------------------------------------------

    async def notify(self, command: c.NotifyCommand, entry: AuditEntry) -> oa_pb2.NotifyDmgResponse:
        return await self._write(
            entry, lambda session, written: self._notify(session, command, entry, written)
        )

    async def _notify(
        self, session: AsyncSession, command: c.NotifyCommand, entry: AuditEntry, written: Written
    ) -> oa_pb2.NotifyDmgResponse:
        who, contact, sup = command.caller, command.contact_date, command.supervisor
        records = RequestRecordRepository(session)
        replay = await self._replay(
            records, "notify", who.inami.value, who.reference, command.fingerprint, entry
        )
        if replay is not None:
            return _replayed(oa_pb2.NotifyDmgResponse(), replay)
        c.check_contact_date(contact, who.today, max_days=self._max_days)
        await self._check_requester(session, who, c.Request.NOTIFY)
        if sup is not None and not await ReferenceRepository(session).known(sup):
            raise field_error(
                "supervisor_inami", McnCode.PROVIDER_UNKNOWN, "supervisor unknown to this insurer"
            )
        member = await self._member(session, command.patient, on=contact, entry=entry)
        files = DmgFileRepository(session)
        await files.lock(member.niss)
        replay = await self._replay(
            records, "notify", who.inami.value, who.reference, command.fingerprint, entry
        )
        if replay is not None:
            return _replayed(oa_pb2.NotifyDmgResponse(), replay)
        loaded = await files.load(member.niss)
        ctx = await self._rule_context(
            session, member, loaded, [who.inami.value, sup], on=contact, today=who.today
        )
        try:
            decision = rules.notify(
                loaded.file,
                provider=who.inami.value,
                contact_date=contact,
                code=command.code,
                requester_reference=who.reference,
                processing_date=who.today,
                ctx=ctx,
                supervisor=sup,
            )
        except rules.DmgRuleError as error:
            raise rule_error(error, _NOTIFY_FIELDS) from None
        answer = decision.answer
        if answer is None:
            raise RuntimeError("rules.notify decided without an answer")
        previous = decision.holdings_closed[0].holder if decision.holdings_closed else None
        names = await self._names(
            session, [answer.holder, previous, *(msg.recipient for msg in decision.messages)]
        )
        cause = f"notify:{who.inami.value}:{who.reference}"
        await self._apply(session, loaded, decision, member, ctx, names, who.reference, entry, written, cause)
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
            "notify",
            who.inami.value,
            who.reference,
            command.fingerprint,
            response.SerializeToString(),
            self._clock.now(),
        )
        return response

    # --- list ------------------------------------------------------------------------------------------

    async def list_holdings(self, query: c.ListQuery, entry: AuditEntry) -> oa_pb2.ListHoldingsResponse:
        who = query.caller
        c.check_list_year(query.year, who.today)
        async with self._sessions() as session:  # reads only: never a write transaction
            await self._check_requester(session, who, c.Request.LIST)
            rows = await DmgFileRepository(session).holder_year(
                who.inami.value, query.year, after_niss=query.after_niss, limit=query.page_size + 1
            )
            page, more = rows[: query.page_size], len(rows) > query.page_size
            members = MemberRepository(session)
            people = {item.niss: await members.get(item.niss) for item in page}
            names = await self._names(session, [who.inami.value])
        first, last = dt.date(query.year, 1, 1), dt.date(query.year, 12, 31)
        response = oa_pb2.ListHoldingsResponse(
            next_page_token=encode_page_token([page[-1].niss]) if more and page else ""
        )
        for item in page:
            member = people[item.niss]
            response.entries.append(
                dmg_pb2.PatientListEntry(
                    patient=convert.patient(member) if member else None,
                    insurer_code=self.insurer_code,
                    periods=[convert.period(max(h.start, first), min(h.end, last)) for h in item.holdings],
                    payments=[convert.payment(p, names, today=who.today) for p in item.payments],
                )
            )
        return response

    # --- enrolment -------------------------------------------------------------------------------------

    async def enrol(self, command: c.EnrolCommand, entry: AuditEntry) -> oa_pb2.EnrolDmgResponse:
        who = command.caller

        async def work(session: AsyncSession, _written: Written) -> oa_pb2.EnrolDmgResponse:
            await self._check_requester(session, who, c.Request.ENROL)
            enrolments = EnrolmentRepository(session)
            existing = await enrolments.get(who.inami.value)
            if existing is not None:
                raise c.already_enrolled(existing.enrolled_since)
            start = command.since or who.today
            await enrolments.add(
                {
                    "inami": who.inami.value,
                    "enrolled_since": start,
                    "iban": command.iban,
                    "bic": command.bic,
                    "holder_name": command.holder_name,
                    "requested_at": self._clock.now(),
                }
            )
            return oa_pb2.EnrolDmgResponse(
                insurer_code=self.insurer_code, enrolled_since=dates.to_proto(start)
            )

        return await self._write(entry, work)

    async def get_enrolment(self, inami: str) -> oa_pb2.GetEnrolmentResponse:
        async with self._sessions() as session:
            enrolment = await EnrolmentRepository(session).get(inami)
        if enrolment is None:
            return oa_pb2.GetEnrolmentResponse(enrolled=False)
        return oa_pb2.GetEnrolmentResponse(
            enrolled=True,
            enrolled_since=dates.to_proto(enrolment.enrolled_since),
            bank_account=common_pb2.BankAccount(
                iban=enrolment.iban, bic=enrolment.bic, holder_name=enrolment.holder_name
            ),
        )

    # --- intake ----------------------------------------------------------------------------------------

    async def register_contact(
        self, event: c.IntakeEvent, entry: AuditEntry
    ) -> intake_pb2.RegisterContactResponse:
        def rule(file: rules.DmgFile, ctx: rules.RuleContext, event: c.IntakeEvent) -> rules.Decision:
            return rules.register_contact(
                file,
                provider=event.provider,
                contact_date=event.on,
                code=event.code,
                submission_date=event.submitted,
                ctx=ctx,
            )

        response = intake_pb2.RegisterContactResponse(intake_reference=event.reference)
        return await self._register(event, response, rule, entry)

    async def register_paper_attestation(
        self, event: c.IntakeEvent, entry: AuditEntry
    ) -> intake_pb2.RegisterPaperAttestationResponse:
        def rule(file: rules.DmgFile, ctx: rules.RuleContext, event: c.IntakeEvent) -> rules.Decision:
            return rules.register_paper_attestation(
                file,
                provider=event.provider,
                attestation_date=event.on,
                submission_date=event.submitted,
                ctx=ctx,
                payee=event.payee,
            )

        response = intake_pb2.RegisterPaperAttestationResponse(intake_reference=event.reference)
        return await self._register(event, response, rule, entry)

    async def _register(self, event: c.IntakeEvent, response: RI, rule: IntakeRule, entry: AuditEntry) -> RI:
        """An intake event for one patient: replay, lock, rule, save, outbox, holder changes, record."""
        entry.patient_niss = event.niss

        async def work(session: AsyncSession, written: Written) -> RI:
            records = RequestRecordRepository(session)
            replay = await self._replay(
                records, event.kind, "", event.reference, event.fingerprint, entry, field="intake_reference"
            )
            if replay is not None:
                return _replayed(response, replay)
            member = await MemberRepository(session).get(event.niss)
            if member is None:
                raise field_error("patient_niss", McnCode.PATIENT_UNKNOWN, "NISS unknown to this insurer")
            files = DmgFileRepository(session)
            await files.lock(event.niss)
            replay = await self._replay(
                records, event.kind, "", event.reference, event.fingerprint, entry, field="intake_reference"
            )
            if replay is not None:
                return _replayed(response, replay)
            loaded = await files.load(event.niss)
            ctx = await self._rule_context(
                session, member, loaded, [event.provider], on=event.on, today=event.submitted
            )
            try:
                decision = rule(loaded.file, ctx, event)
            except rules.DmgRuleError as error:
                raise rule_error(error, _INTAKE_FIELDS) from None
            names = await self._names(session, _people(decision))
            cause = f"{event.kind}:{event.reference}"
            ids = await self._apply(session, loaded, decision, member, ctx, names, "", entry, written, cause)
            response.effects.CopyFrom(_effects(decision, names, event.submitted, ids))
            await records.add(
                event.kind,
                "",
                event.reference,
                event.fingerprint,
                response.SerializeToString(),
                self._clock.now(),
            )
            return response

        return await self._write(entry, work)

    async def process_year_end(
        self, order: c.YearEnd, entry: AuditEntry
    ) -> intake_pb2.ProcessYearEndResponse:
        """The year-end run, one transaction per patient (running it again is harmless)."""
        response = intake_pb2.ProcessYearEndResponse()
        async with self._sessions() as session:
            patients = await DmgFileRepository(session).patients_with_holdings()
        try:
            for niss in patients:
                await self._year_end_of(niss, order.year, order.today, response, entry)
        finally:
            self._outbox.set()
        done = response.patients_affected, response.payments_created
        entry.incidents.append(f"year {order.year}: {done[0]} patients, {done[1]} payments")
        return response

    async def _year_end_of(
        self,
        niss: str,
        year: int,
        today: dt.date,
        response: intake_pb2.ProcessYearEndResponse,
        entry: AuditEntry,
    ) -> None:
        written = Written()
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
            cause = f"year-end:{year}:{niss}"
            await self._apply(session, loaded, decision, member, ctx, names, "", entry, written, cause)
            response.patients_affected += 1
            response.payments_created += len(decision.payments_created)
            response.payments_recovered += len(decision.payments_recovered)
        self.holders.publish(written.holder_sequence)

    # --- shared steps ----------------------------------------------------------------------------------

    async def _write(self, entry: AuditEntry, work: Callable[[AsyncSession, Written], Awaitable[T]]) -> T:
        """Run a change in ONE transaction with its audit row; run it once more when a concurrent request
        won a unique key (the second run then sees it: a replay, 158, or 168). After the commit, wake the
        outbox relay and the watchers of the holder feed."""
        try:
            written = Written()
            async with self._audit.transaction(entry) as session:
                result = await work(session, written)
        except IntegrityError:
            written = Written()
            async with self._audit.transaction(entry) as session:
                result = await work(session, written)
        if written.outbox:
            self._outbox.set()
        self.holders.publish(written.holder_sequence)
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
        c.check_requester(who, request, await requester(await session.connection(), who.inami.value))

    async def _member(
        self, session: AsyncSession, key: c.PatientKey, *, on: dt.date, entry: AuditEntry
    ) -> MemberRow:
        members = MemberRepository(session)
        if key.niss is not None:
            member = await members.get(key.niss)
        else:
            member = await members.by_registration(key.registration_number or "")
        periods = await members.periods(member.niss) if member is not None else ()
        member = c.check_patient(key, member, periods=periods, on=on)
        entry.patient_niss = member.niss
        return member

    async def _rule_context(
        self,
        session: AsyncSession,
        member: MemberRow,
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
        since = await EnrolmentRepository(session).enrolled_since(people | set(groups.values()))
        chronic = await session.execute(CHRONIC_PERIODS, {"niss": member.niss})
        return rules.RuleContext(
            patient=_profile(member, tuple((row.start, row.end) for row in chronic)),
            enrolled=frozenset(inami for inami, start in since.items() if start <= today),
            enrolled_since=since,
            group_of=groups,
            supervisor_of=supervisors,
            contact_codes=self.contact_codes,
            tariffs=self._tariffs or await self._tariff_table(reference),
            max_notification_delay_days=self._max_days,
        )

    async def _tariff_table(self, reference: ReferenceRepository) -> rules.TariffTable:
        self._tariffs = await reference.tariff_table()
        return self._tariffs

    async def _names(self, session: AsyncSession, inamis: Iterable[str | None]) -> convert.Names:
        wanted = [i for i in inamis if i]
        reference = ReferenceRepository(session)
        return convert.names_of(await reference.providers(wanted), await reference.organisations(wanted))

    async def _apply(
        self,
        session: AsyncSession,
        loaded: LoadedFile,
        decision: rules.Decision,
        member: MemberRow,
        ctx: rules.RuleContext,
        names: convert.Names,
        requester_reference: str,
        entry: AuditEntry,
        written: Written,
        cause: str,
    ) -> list[str]:
        """Save the new file, write its messages to the outbox and its holder moves to the holder-change
        log; return the message ids."""
        await DmgFileRepository(session).save(loaded, decision.file)
        now = self._clock.now()
        patient = convert.patient(member)
        rows: list[dict[str, object]] = []
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
            rows.append(outbox_row(proto, now))
        await OutboxRepository(session).add(rows)
        written.outbox += len(rows)
        # Last: the holder feed's head row is locked from here to the commit.
        last = await log_moves(
            session, decision.holder_moves, insurer_code=self.insurer_code, cause=cause, now=now
        )
        written.holder_sequence = max(written.holder_sequence, last)
        return [str(row["message_id"]) for row in rows]


# --- helpers ---------------------------------------------------------------------------------------------


_care_status = table_of(CareStatusRow)
CHRONIC_PERIODS = (
    core_select(_care_status.c.start, _care_status.c.end)
    .where(_care_status.c.niss == bindparam("niss"), _care_status.c.kind == "CHRONIC_CONDITION")
    .order_by(_care_status.c.start)
)
"""The patient's chronic-condition periods (the 55 EUR category of seed 002 is judged on the contact date)."""


def _profile(
    member: MemberRow, chronic: tuple[tuple[dt.date, dt.date | None], ...] = ()
) -> rules.PatientProfile:
    """The patient as the rules see it. The chronic status is held by period (oa_care_status); a member
    flagged chronic without periods (the earlier membership data) has it every year."""
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
        chronic_status_years=ALL_YEARS if member.chronic_condition and not chronic else frozenset(),
        chronic_periods=chronic,
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
        payments=[convert.payment(p, names, today=today) for p in decision.payments_created],
        recoveries=[convert.payment(p, names, today=today) for p in decision.payments_recovered],
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
