"""The four entry points of the OA's DMG rules: notify, register a contact, register a 102771, year end.

Each is a pure function of the patient's :class:`~oa_node.rules.model.DmgFile`, the call's data,
an explicit processing date and a :class:`~oa_node.rules.context.RuleContext`. It either raises
:class:`~oa_node.rules.errors.DmgRuleError` (nothing changes) or returns a
:class:`~oa_node.rules.model.Decision` holding the new file and the effects.

* :func:`notify` - eDMG opening / takeover (seed 000 §3): the right runs from the contact date to
  31 Dec of contact year + 2 and follows the notification, not the payment (§1.3.2.2 "le détenteur
  du DMG est associé à une notification et est dissocié du paiement"); the previous holder is closed
  the day before (§3.3.5); the answer is WITH_PAYMENT iff the year's fee is still free (§3.1.2).
* :func:`register_contact` - a consultation/visit received through invoicing; the first one of year
  t between the patient and an enrolled holder who held the DMG in t-1 pays the accelerated
  prolongation and extends the right to 31 Dec t+2 (§1.3.1, §3.3.6).
* :func:`register_paper_attestation` - a 102771 handed to the OA: fee + paper right, which follows
  the payment (§1.1.1 "Le détenteur du DMG d'un patient est lié au paiement"), unless refused (§5.2.2).
* :func:`process_year_end` - the administrative prolongation of year t for a paper holder (seed 002).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from mycarenet_core.codes import McnCode

from .context import PAPER_DMG_CODE, RuleContext, is_accredited_gp, is_gp_in_training
from .errors import DmgRuleError
from .model import (
    AttestationOutcome,
    Contact,
    Decision,
    DmgFile,
    ExtensionMessage,
    Holding,
    HoldingStatus,
    Notification,
    NotifyAnswer,
    PaperAttestation,
    Payee,
    Payment,
    PaymentIndicator,
    PaymentKind,
    Procedure,
    RefusalReason,
    StatusReason,
)
from .payments import Claim, settle
from .timeline import (
    closure_messages,
    diff,
    granted_right_end,
    holder_moves,
    latest_started,
    normalise,
    year_end,
)

# --------------------------------------------------------------------------------------------------
# notify (seed 000 §3)


def notify(
    file: DmgFile,
    *,
    provider: str,
    contact_date: date,
    code: str,
    requester_reference: str,
    processing_date: date,
    ctx: RuleContext,
    supervisor: str | None = None,
) -> Decision:
    """Process a DMG notification (opening or takeover) sent by ``provider`` (seed 000 §3.3).

    A GP in training notifies with his ``supervisor``, who becomes the holder (SPEC §9). The
    medical house of a patient under contract may notify and holds the DMG; anybody else gets 162.
    Replaying the same (provider, requester reference) returns the stored answer and changes nothing.
    """
    replayed = _replay(file, provider, requester_reference, contact_date, code, supervisor)
    if replayed is not None:
        return replayed
    holder = _notifying_holder(provider, supervisor, ctx)
    _check_contact_code(code, ctx)
    _check_notified_contact_date(contact_date, processing_date, ctx)
    house = ctx.patient.medical_house_on(contact_date)
    if house is not None and holder != house:
        raise DmgRuleError(
            McnCode.MEDICAL_HOUSE_CONTRACT, "patient under a medical-house contract", "patient"
        )
    if not ctx.is_enrolled(holder):
        raise DmgRuleError(McnCode.NOT_ENROLLED, "physician not enrolled for the eDMG", "requester")
    _check_takeover(file, holder, contact_date)

    new = Holding(
        seq=_next_seq(file),
        holder=holder,
        start=contact_date,
        end=granted_right_end(contact_date.year),
        right_end=granted_right_end(contact_date.year),
        procedure=Procedure.ELECTRONIC,
        trainee=provider if supervisor is not None else None,
    )
    holdings = normalise((*file.holdings, new), on=processing_date)
    created: Payment | None = None
    recovered: Payment | None = None
    payments = file.payments
    if house is None:  # a medical house's DMG is covered by its flat fee: no separate DMG fee
        claim = Claim(PaymentKind.NOTIFICATION, holder, contact_date.year, contact_date)
        payments, created, recovered = settle(
            file.patient, payments, claim, registered_on=processing_date, ctx=ctx
        )
    indicator = PaymentIndicator.WITH_PAYMENT if created else PaymentIndicator.WITHOUT_PAYMENT
    opened = next(h for h in holdings if h.seq == new.seq)
    notification = Notification(
        requester_reference=requester_reference,
        provider=provider,
        holder=holder,
        contact_date=contact_date,
        code=code,
        processed_on=processing_date,
        start=opened.start,
        end=opened.end,
        indicator=indicator,
        supervisor=supervisor,
    )
    after = replace(
        file, holdings=holdings, payments=payments, notifications=(*file.notifications, notification)
    )
    return _decide(
        file,
        after,
        ctx,
        answer=_answer(file.patient, notification),
        created=created,
        recovered=recovered,
    )


def _replay(
    file: DmgFile,
    provider: str,
    requester_reference: str,
    contact_date: date,
    code: str,
    supervisor: str | None,
) -> Decision | None:
    """The stored answer of an identical earlier notification; 158 if the reference was reused."""
    earlier = next(
        (
            n
            for n in file.notifications
            if n.provider == provider and n.requester_reference == requester_reference
        ),
        None,
    )
    if earlier is None:
        return None
    if (earlier.contact_date, earlier.code, earlier.supervisor) != (contact_date, code, supervisor):
        raise DmgRuleError(
            McnCode.IDENTIFICATION_INCONSISTENT,
            "requester reference already used for another notification",
            "requester_reference",
        )
    return Decision(file=file, answer=_answer(file.patient, earlier), replayed=True)


def _answer(patient: str, notification: Notification) -> NotifyAnswer:
    return NotifyAnswer(
        patient=patient,
        requester=notification.provider,
        holder=notification.holder,
        start=notification.start,
        end=notification.end,
        indicator=notification.indicator,
        requester_reference=notification.requester_reference,
    )


def _notifying_holder(provider: str, supervisor: str | None, ctx: RuleContext) -> str:
    """The holder of a notification: the supervisor for a GP in training (SPEC §2, §9), who must be the
    supervisor the cadastre records for the trainee (156 otherwise: a trainee cannot make any GP holder)."""
    trainee = is_gp_in_training(provider)
    if trainee and supervisor is None:
        raise DmgRuleError(
            McnCode.MANDATORY_FIELD_MISSING, "a GP in training notifies under a supervisor", "supervisor"
        )
    if supervisor is None:
        return provider
    if not trainee:
        raise DmgRuleError(
            McnCode.VALUE_NOT_ALLOWED, "only a GP in training notifies under a supervisor", "supervisor"
        )
    if not is_accredited_gp(supervisor):
        raise DmgRuleError(McnCode.VALUE_NOT_ALLOWED, "supervisor is not an accredited GP", "supervisor")
    recorded = ctx.supervisor_of.get(provider)
    if recorded != supervisor:
        raise DmgRuleError(
            McnCode.AUTHOR_MISMATCH,
            f"the cadastre records {recorded} as this GP in training's supervisor"
            if recorded
            else "the cadastre records no supervisor for this GP in training",
            "supervisor",
        )
    return supervisor


def _check_contact_code(code: str, ctx: RuleContext) -> None:
    if code not in ctx.contact_codes:
        reason = (
            "102771 is the paper DMG code, not a contact"
            if code == PAPER_DMG_CODE
            else "nomenclature code is not a consultation or visit"
        )
        raise DmgRuleError(McnCode.VALUE_NOT_ALLOWED, reason, "code")


def _check_notified_contact_date(contact_date: date, processing_date: date, ctx: RuleContext) -> None:
    """Seed 000 §3.3.3: not after today; SPEC §3.5: at most 7 days back (code 166)."""
    if contact_date > processing_date:
        raise DmgRuleError(McnCode.DATE_IN_FUTURE, "contact date in the future", "contact_date")
    limit = ctx.max_notification_delay_days
    if limit is not None and (processing_date - contact_date).days > limit:
        raise DmgRuleError(McnCode.CONTACT_TOO_OLD, f"contact more than {limit} days ago", "contact_date")
    ctx.tariffs.require(contact_date.year, "contact_date")


def _check_takeover(file: DmgFile, holder: str, contact_date: date) -> None:
    """161 if ``holder`` already holds the DMG on the contact date; 165 if it cannot start then."""
    current = file.holding_at(contact_date)
    if current is not None and current.holder == holder:
        raise DmgRuleError(McnCode.ALREADY_HOLDER, "already holder of this DMG", "requester")
    if any(h.start >= contact_date for h in file.live_holdings()):
        raise DmgRuleError(
            McnCode.DUPLICATE_CONTACT,
            "another holder's right starts on or after this contact date",
            "contact_date",
        )


# --------------------------------------------------------------------------------------------------
# contacts received through invoicing: accelerated prolongation (seed 000 §1.3.1, §3.3.6)


def register_contact(
    file: DmgFile,
    *,
    provider: str,
    contact_date: date,
    code: str,
    submission_date: date,
    ctx: RuleContext,
) -> Decision:
    """Register a consultation/visit submitted on ``submission_date`` (the processing date).

    The first contact of year t between the patient and the holder (or a member of the holder's
    group practice) pays the accelerated prolongation when the holder is enrolled, held the DMG in
    t-1 and no other fee for t corresponds to an earlier contact (seed 000 §3.3.6, §5.1). For a paper
    holder (not enrolled) it pays the administrative prolongation of t as soon as its conditions are
    met (seed 002; see :func:`process_year_end`): a later 102771 or notification of another physician
    for t recovers it (seed 000 §5.1). A patient under a medical-house contract on the contact date: the
    contact is only recorded.
    """
    _check_contact_code(code, ctx)
    if contact_date > submission_date:
        raise DmgRuleError(McnCode.DATE_IN_FUTURE, "contact after its submission", "contact_date")
    ctx.tariffs.require(contact_date.year, "contact_date")
    if any((c.provider, c.contact_date, c.code) == (provider, contact_date, code) for c in file.contacts):
        raise DmgRuleError(McnCode.DUPLICATE_CONTACT, "contact already registered", "contact_date")
    contact = Contact(provider=provider, contact_date=contact_date, code=code, submitted_on=submission_date)
    recorded = replace(file, contacts=(*file.contacts, contact))
    if ctx.patient.medical_house_on(contact_date) is not None:
        return Decision(file=recorded)

    holding = latest_started(recorded.holdings, contact_date)
    year = contact_date.year
    if holding is not None and ctx.acts_for(provider, holding.holder) and not ctx.is_enrolled(holding.holder):
        # A paper holder: the administrative prolongation of the year, once its conditions are met.
        return _administrative_prolongation(file, recorded, year, on=submission_date, ctx=ctx)
    if (
        holding is None
        or not ctx.acts_for(provider, holding.holder)
        or not ctx.is_enrolled(holding.holder)
        or not _held_at_end_of(holding, year - 1)
    ):
        return Decision(file=recorded)
    first = _first_contact(recorded, holding, year, ctx)
    claim = Claim(PaymentKind.ACCELERATED_PROLONGATION, holding.holder, year, first.contact_date)
    return _prolong(file, recorded, holding, claim, first, on=submission_date, ctx=ctx)


def _held_at_end_of(holding: Holding, year: int) -> bool:
    """Whether the holder 'avait un DMG pour ce patient l'année précédente' (seed 000 §1.3.1)."""
    return holding.start <= year_end(year) <= holding.end


def _first_contact(file: DmgFile, holding: Holding, year: int, ctx: RuleContext) -> Contact:
    """The first registered contact of ``year`` with the holder of ``holding`` while he held it."""
    candidates = [
        c
        for c in file.contacts
        if c.contact_date.year == year
        and ctx.acts_for(c.provider, holding.holder)
        and _same_holding(latest_started(file.holdings, c.contact_date), holding)
    ]
    return min(candidates, key=lambda c: (c.contact_date, c.submitted_on))


def _same_holding(found: Holding | None, holding: Holding) -> bool:
    return found is not None and found.seq == holding.seq


def _prolong(
    before: DmgFile,
    file: DmgFile,
    holding: Holding,
    claim: Claim,
    trigger: Contact,
    *,
    on: date,
    ctx: RuleContext,
) -> Decision:
    """Pay a prolongation claim if it wins the year; extend the right to 31 Dec t+2 (seed 002)."""
    payments, created, recovered = settle(file.patient, file.payments, claim, registered_on=on, ctx=ctx)
    if created is None:
        return Decision(file=_with_earlier_first_contact(file, claim))
    holdings = tuple(
        replace(h, right_end=max(h.right_end, granted_right_end(claim.year))) if h.seq == holding.seq else h
        for h in file.holdings
    )
    holdings = normalise(_cancel_paper_right(holdings, recovered, on=on), on=on)
    after = replace(file, holdings=holdings, payments=payments)
    extension = _extension_message(after, holding.seq, trigger, on=on, ctx=ctx)
    return _decide(before, after, ctx, created=created, recovered=recovered, extension=extension)


def _with_earlier_first_contact(file: DmgFile, claim: Claim) -> DmgFile:
    """Keep the holder's fee pointing at his first contact of the year, even one registered late.

    The fee 'correspond à la première consultation en date de l'année' (seed 000 §5.1): when an
    earlier contact of the same holder is registered after the fee was paid, the fee's contact date
    moves back, so that a later cohabitation conflict compares the right dates.
    """
    return replace(
        file,
        payments=tuple(
            replace(p, contact_date=claim.contact_date)
            if p.year == claim.year
            and not p.recovered
            and p.beneficiary == claim.beneficiary
            and p.kind is claim.kind
            and claim.contact_date < p.contact_date
            else p
            for p in file.payments
        ),
    )


def _extension_message(
    after: DmgFile, seq: int, trigger: Contact, *, on: date, ctx: RuleContext
) -> ExtensionMessage | None:
    """GMD-EXTENSION for a paid prolongation, to its holder if enrolled (seed 000 §3.3.6.1.2: "le médecin
    recevra alors un message électronique lui indiquant ses prolongations"), also when his holding stays
    closed (5.2.1.2.2: the fee is paid, "les droits restent tels quels"; the message says the right as it
    is). Called once a prolongation fee was created: one message per fee."""
    new = next(h for h in after.holdings if h.seq == seq)
    if not ctx.is_enrolled(new.holder):
        return None
    return ExtensionMessage(
        patient=after.patient,
        holder=new.holder,
        prolonged_on=on,
        right_end=new.end,
        contact_date=trigger.contact_date,
        contact_code=trigger.code,
        contact_provider=trigger.provider,
    )


# --------------------------------------------------------------------------------------------------
# paper procedure: 102771 (seed 000 §1.1.1, §5.2.2, §5.2.3)


def register_paper_attestation(
    file: DmgFile,
    *,
    provider: str,
    attestation_date: date,
    submission_date: date,
    ctx: RuleContext,
    payee: Payee = Payee.PATIENT,
) -> Decision:
    """Register a 102771 attested on ``attestation_date`` and handed in on ``submission_date``.

    Accepted: the fee is paid — reimbursed to the patient who paid the GP in cash and handed the
    certificate in (``Payee.PATIENT``, the default), or paid to the GP in third-party payment (seed 000
    §1.1.1) — and the GP holds the DMG from
    the attestation date to 31 Dec year + 2, closing the previous holder the day before. Refused
    (recorded, no fee, no right): see :class:`~oa_node.rules.model.RefusalReason`.
    """
    if attestation_date > submission_date:
        raise DmgRuleError(McnCode.DATE_IN_FUTURE, "attestation after its submission", "attestation_date")
    ctx.tariffs.require(attestation_date.year, "attestation_date")
    if any((a.provider, a.attestation_date) == (provider, attestation_date) for a in file.attestations):
        raise DmgRuleError(
            McnCode.DUPLICATE_CONTACT, "102771 already registered for this date", "attestation_date"
        )
    refusal = _paper_refusal(file, provider, attestation_date, ctx)
    if refusal is not None:
        return _refuse(file, provider, attestation_date, submission_date, refusal)
    claim = Claim(PaymentKind.PAPER_ATTESTATION, provider, attestation_date.year, attestation_date)
    payments, created, recovered = settle(
        file.patient, file.payments, claim, registered_on=submission_date, ctx=ctx, payee=payee
    )
    if created is None:
        return _refuse(file, provider, attestation_date, submission_date, RefusalReason.DMG_ALREADY_PAID)

    holdings = _cancel_paper_right(file.holdings, recovered, on=submission_date)
    holdings = _paper_right(holdings, provider, attestation_date, created.reference, _next_seq(file))
    attestation = PaperAttestation(
        provider=provider,
        attestation_date=attestation_date,
        submitted_on=submission_date,
        outcome=AttestationOutcome.ACCEPTED,
        payment_reference=created.reference,
    )
    after = replace(
        file,
        holdings=normalise(holdings, on=submission_date),
        payments=payments,
        attestations=(*file.attestations, attestation),
    )
    return _decide(file, after, ctx, attestation=attestation, created=created, recovered=recovered)


def _paper_refusal(
    file: DmgFile, provider: str, attestation_date: date, ctx: RuleContext
) -> RefusalReason | None:
    if not is_accredited_gp(provider):  # seed 002: "attesté par un médecin généraliste agréé"
        return RefusalReason.NOT_AN_ACCREDITED_GP
    if ctx.is_enrolled(provider, attestation_date):
        return RefusalReason.PROVIDER_ENROLLED
    if ctx.patient.medical_house_on(attestation_date) is not None:
        return RefusalReason.MEDICAL_HOUSE_CONTRACT
    if any(h.start == attestation_date and h.holder != provider for h in file.live_holdings()):
        return RefusalReason.SAME_DAY_HOLDER
    return None


def _refuse(
    file: DmgFile, provider: str, attestation_date: date, submission_date: date, reason: RefusalReason
) -> Decision:
    attestation = PaperAttestation(
        provider=provider,
        attestation_date=attestation_date,
        submitted_on=submission_date,
        outcome=AttestationOutcome.REFUSED,
        refusal_reason=reason,
    )
    return Decision(
        file=replace(file, attestations=(*file.attestations, attestation)), attestation=attestation
    )


def _paper_right(
    holdings: tuple[Holding, ...], provider: str, attestation_date: date, reference: str, seq: int
) -> tuple[Holding, ...]:
    """Prolong the GP's own running holding, or open a new PAPER holding at the attestation date."""
    right_end = granted_right_end(attestation_date.year)
    current = latest_started(holdings, attestation_date)
    if current is not None and current.holder == provider and current.end >= attestation_date:
        return tuple(
            replace(h, right_end=max(h.right_end, right_end)) if h.seq == current.seq else h for h in holdings
        )
    new = Holding(
        seq=seq,
        holder=provider,
        start=attestation_date,
        end=right_end,
        right_end=right_end,
        procedure=Procedure.PAPER,
        payment_reference=reference,
    )
    return (*holdings, new)


def _cancel_paper_right(
    holdings: tuple[Holding, ...], recovered: Payment | None, *, on: date
) -> tuple[Holding, ...]:
    """A paper right follows its payment: recovering the fee cancels it (seed 000 §5.2.2.2.2)."""
    if recovered is None or recovered.kind is not PaymentKind.PAPER_ATTESTATION:
        return holdings
    return tuple(
        replace(
            h,
            status=HoldingStatus.CANCELLED,
            status_reason=StatusReason.PAYMENT_RECOVERED,
            status_date=on,
        )
        if h.live and h.payment_reference == recovered.reference
        else h
        for h in holdings
    )


# --------------------------------------------------------------------------------------------------
# year end: administrative prolongation (seed 002, seed 000 §1.1.2, §5.1)


def process_year_end(file: DmgFile, *, year: int, processing_date: date, ctx: RuleContext) -> Decision:
    """Pay the administrative prolongation of ``year`` if its conditions hold (seed 002), for what the
    contacts of the year did not pay yet.

    A paper holder's contact pays it as soon as its conditions are met (:func:`register_contact`); the
    year-end run catches what arrived late (seed 000 §1.1.3: paper certificates reach the OA late, e.g.
    the 102771 of ``year`` - 1 handed in after the contact). Conditions, for the GP X who was paid a
    102771 or an administrative prolongation for ``year`` - 1: no 102771 attested in ``year`` (by
    X or another physician), no notification and no other fee for ``year``, and at least one
    registered contact in ``year`` between the patient and X (or X's group) while X held the DMG.
    The right is extended to 31 Dec ``year`` + 2. Running it again is harmless.
    """
    if processing_date < year_end(year):
        raise DmgRuleError(McnCode.DATE_IN_FUTURE, f"year {year} is not over", "year")
    return _administrative_prolongation(file, file, year, on=processing_date, ctx=ctx)


def _administrative_prolongation(
    before: DmgFile, file: DmgFile, year: int, *, on: date, ctx: RuleContext
) -> Decision:
    """Pay the administrative prolongation of ``year`` if its conditions hold as ``file`` knows them: at a
    paper holder's contact of ``year`` (issue 14: paid in the year once they are met), and again at the
    year end for what arrived late (a 102771 of ``year`` - 1 handed in after the contact)."""
    gp = _administrative_candidate(file, year)
    if gp is None:
        return Decision(file=file)
    held = [
        (c, holding)
        for c in file.contacts
        if c.contact_date.year == year
        and ctx.acts_for(c.provider, gp)
        and ctx.patient.medical_house_on(c.contact_date) is None
        and (holding := _holding_of(file, gp, c.contact_date)) is not None
    ]
    if not held:
        return Decision(file=file)
    first, holding = min(held, key=lambda pair: (pair[0].contact_date, pair[0].submitted_on))
    claim = Claim(PaymentKind.ADMINISTRATIVE_PROLONGATION, gp, year, first.contact_date)
    return _prolong(before, file, holding, claim, first, on=on, ctx=ctx)


def _administrative_candidate(file: DmgFile, year: int) -> str | None:
    """The paper GP eligible for the administrative prolongation of ``year``, if the year is free."""
    if file.paid_for(year) is not None:
        return None
    if any(p.year == year and p.kind is PaymentKind.ADMINISTRATIVE_PROLONGATION for p in file.payments):
        return None
    if any(n.contact_date.year == year for n in file.notifications):
        return None
    if any(a.attestation_date.year == year for a in file.attestations):
        return None
    previous = file.paid_for(year - 1)
    paper_kinds = (PaymentKind.PAPER_ATTESTATION, PaymentKind.ADMINISTRATIVE_PROLONGATION)
    if previous is None or previous.kind not in paper_kinds:
        return None
    return previous.beneficiary


def _holding_of(file: DmgFile, holder: str, day: date) -> Holding | None:
    """The holding of ``holder`` in force on ``day``, if he held the DMG that day."""
    holding = file.holding_at(day)
    return holding if holding is not None and holding.holder == holder else None


# --------------------------------------------------------------------------------------------------
# shared


def _next_seq(file: DmgFile) -> int:
    return 1 + max((h.seq for h in file.holdings), default=0)


def _decide(
    before: DmgFile,
    after: DmgFile,
    ctx: RuleContext,
    *,
    answer: NotifyAnswer | None = None,
    attestation: PaperAttestation | None = None,
    created: Payment | None = None,
    recovered: Payment | None = None,
    extension: ExtensionMessage | None = None,
) -> Decision:
    """Assemble a Decision: holding effects by diff, closure messages, then the extension."""
    changes = diff(before.holdings, after.holdings)
    closures = closure_messages(after.patient, changes.closed, after.holdings, ctx)
    return Decision(
        file=after,
        answer=answer,
        attestation=attestation,
        messages=(*closures, *((extension,) if extension is not None else ())),
        payments_created=(created,) if created is not None else (),
        payments_recovered=(recovered,) if recovered is not None else (),
        holdings_opened=changes.opened,
        holdings_extended=changes.extended,
        holdings_closed=changes.closed,
        holdings_cancelled=changes.cancelled,
        holdings_reopened=changes.reopened,
        holder_moves=holder_moves(after.patient, before.holdings, after.holdings, changes),
    )
