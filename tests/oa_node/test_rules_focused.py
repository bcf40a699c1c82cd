"""Focused tests of the DMG rules: prolongations, fees, medical houses, trainees, groups, rejections."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest

from oa_node.rules import (
    AttestationOutcome,
    ClosureMessage,
    Decision,
    DmgFile,
    DmgRuleError,
    ExtensionMessage,
    HoldingStatus,
    MedicalHouseContract,
    PatientProfile,
    PaymentIndicator,
    PaymentKind,
    RefusalReason,
    RuleContext,
    StatusReason,
    TariffCategory,
    TariffMissingError,
    TariffTable,
    notify,
    process_year_end,
    register_contact,
    register_paper_attestation,
)
from oa_node.rules.testing import d, describe_holding, describe_payment, inami_number

GP1 = inami_number(30001)
GP2 = inami_number(30002)
GP3 = inami_number(30003)
MEMBER = inami_number(30004)  # same registered group practice as GP1
TRAINEE = inami_number(30005, competence="005")
HOUSE = "MH-0042"
GROUP = "GRP-0007"
NAMES = {GP1: "GP1", GP2: "GP2", GP3: "GP3", MEMBER: "MEMBER", TRAINEE: "TRAINEE", HOUSE: "HOUSE"}
PATIENT = "75031512345"
CONSULT = "101010"
VISIT = "103132"
EMPTY = DmgFile(patient=PATIENT)


def context(
    *,
    enrolled: frozenset[str] = frozenset({GP1, GP2}),
    birth: date = date(1975, 3, 15),
    chronic: frozenset[int] = frozenset(),
    houses: tuple[MedicalHouseContract, ...] = (),
    **kwargs: object,
) -> RuleContext:
    profile = PatientProfile(birth_date=birth, chronic_status_years=chronic, medical_house_contracts=houses)
    ctx = RuleContext(
        patient=profile,
        enrolled=enrolled,
        group_of={GP1: GROUP, MEMBER: GROUP},
        supervisor_of={TRAINEE: GP1},
    )
    return replace(ctx, **kwargs)  # type: ignore[arg-type]


def do_notify(
    file: DmgFile, provider: str, on: str, ctx: RuleContext, *, ref: str | None = None, **kw: object
) -> Decision:
    day = d(on)
    processing = kw.pop("processing", day)
    assert isinstance(processing, date)
    supervisor = kw.pop("supervisor", None)
    assert supervisor is None or isinstance(supervisor, str)
    code = kw.pop("code", CONSULT)
    assert isinstance(code, str)
    return notify(
        file,
        provider=provider,
        contact_date=day,
        code=code,
        requester_reference=ref or f"{provider}-{on}",
        processing_date=processing,
        ctx=ctx,
        supervisor=supervisor,
    )


def contact(
    file: DmgFile, provider: str, on: str, submitted: str, ctx: RuleContext, code: str = CONSULT
) -> Decision:
    return register_contact(
        file, provider=provider, contact_date=d(on), code=code, submission_date=d(submitted), ctx=ctx
    )


def attest(file: DmgFile, provider: str, on: str, submitted: str, ctx: RuleContext) -> Decision:
    return register_paper_attestation(
        file, provider=provider, attestation_date=d(on), submission_date=d(submitted), ctx=ctx
    )


def year_end(file: DmgFile, year: int, ctx: RuleContext, on: date | None = None) -> Decision:
    return process_year_end(file, year=year, processing_date=on or date(year, 12, 31), ctx=ctx)


def holdings(file: DmgFile) -> list[str]:
    return [describe_holding(h, NAMES) for h in file.holdings]


def payments(file: DmgFile) -> list[str]:
    return [describe_payment(p, NAMES) for p in file.payments]


# ----------------------------------------------------------------------------------------------
# administrative prolongation (seed 002, SPEC §4)

PAPER_CTX = context(enrolled=frozenset({GP2}))


def paper_holder_2011() -> DmgFile:
    """GP1 (not enrolled) attested 102771 in 2011 and saw the patient in 2012."""
    file = attest(EMPTY, GP1, "18.07.2011", "01.08.2011", PAPER_CTX).file
    return contact(file, GP1, "10.02.2012", "20.02.2012", PAPER_CTX).file


def test_administrative_prolongation_is_paid_at_the_contact_that_meets_its_conditions() -> None:
    """Issue 14 correction 4 (seed 002): paid in year t once its conditions are met, not at the year end."""
    file = attest(EMPTY, GP1, "18.07.2011", "01.08.2011", PAPER_CTX).file

    decision = contact(file, GP1, "10.02.2012", "20.02.2012", PAPER_CTX)

    (paid,) = decision.payments_created
    assert paid.kind is PaymentKind.ADMINISTRATIVE_PROLONGATION
    assert (paid.beneficiary, paid.year, paid.amount) == (GP1, 2012, Decimal("28.21"))
    assert (paid.registered_on, paid.due_by, paid.contact_date) == (
        d("20.02.2012"),
        d("21.03.2012"),
        d("10.02.2012"),
    )
    assert holdings(decision.file) == ["GP1 PAPER 18.07.2011-31.12.2014 ACTIVE"]
    assert decision.messages == ()  # GP1 is not enrolled
    assert [describe_holding(h, NAMES) for h in decision.holdings_extended] == holdings(decision.file)
    # The year end pays nothing more; a second contact of the year neither.
    assert year_end(decision.file, 2012, PAPER_CTX).file == decision.file
    again = contact(decision.file, GP1, "10.05.2012", "20.05.2012", PAPER_CTX)
    assert again.payments_created == ()


def test_the_year_end_pays_the_administrative_prolongation_a_late_102771_made_due() -> None:
    """The 102771 of 2011 handed in after the contact of 2012 (paper arrives late, seed 000 §1.1.3)."""
    file = contact(EMPTY, GP1, "10.02.2012", "20.02.2012", PAPER_CTX).file
    file = attest(file, GP1, "18.07.2011", "01.03.2012", PAPER_CTX).file
    assert payments(file) == ["GP1 2011 PAPER_ATTESTATION"]

    decision = year_end(file, 2012, PAPER_CTX)

    (paid,) = decision.payments_created
    assert (paid.kind, paid.registered_on, paid.contact_date) == (
        PaymentKind.ADMINISTRATIVE_PROLONGATION,
        d("31.12.2012"),
        d("10.02.2012"),
    )
    assert holdings(decision.file) == ["GP1 PAPER 18.07.2011-31.12.2014 ACTIVE"]


def test_administrative_prolongation_chains_from_one_to_the_next() -> None:
    file = paper_holder_2011()
    file = contact(file, GP1, "05.05.2013", "06.05.2013", PAPER_CTX).file
    assert payments(file) == [
        "GP1 2011 PAPER_ATTESTATION",
        "GP1 2012 ADMINISTRATIVE_PROLONGATION",
        "GP1 2013 ADMINISTRATIVE_PROLONGATION",
    ]
    assert holdings(file) == ["GP1 PAPER 18.07.2011-31.12.2015 ACTIVE"]


def test_administrative_prolongation_needs_a_contact_in_the_year() -> None:
    file = attest(EMPTY, GP1, "18.07.2011", "01.08.2011", PAPER_CTX).file
    assert year_end(file, 2012, PAPER_CTX).file == file


def test_contact_by_a_group_member_counts_for_the_administrative_prolongation() -> None:
    file = attest(EMPTY, GP1, "18.07.2011", "01.08.2011", PAPER_CTX).file
    file = contact(file, MEMBER, "03.03.2012", "04.03.2012", PAPER_CTX).file
    assert payments(year_end(file, 2012, PAPER_CTX).file)[-1] == "GP1 2012 ADMINISTRATIVE_PROLONGATION"


def test_contact_with_another_gp_does_not_count_for_the_administrative_prolongation() -> None:
    file = attest(EMPTY, GP1, "18.07.2011", "01.08.2011", PAPER_CTX).file
    file = contact(file, GP3, "03.03.2012", "04.03.2012", PAPER_CTX).file
    assert year_end(file, 2012, PAPER_CTX).file == file


def test_reattested_102771_replaces_the_administrative_prolongation() -> None:
    file = paper_holder_2011()
    decision = attest(file, GP1, "01.06.2012", "10.06.2012", PAPER_CTX)
    assert decision.attestation is not None
    assert decision.attestation.outcome is AttestationOutcome.ACCEPTED
    assert holdings(decision.file) == ["GP1 PAPER 18.07.2011-31.12.2014 ACTIVE"]  # prolonged in place
    assert year_end(decision.file, 2012, PAPER_CTX).payments_created == ()
    assert payments(decision.file) == [  # the 2012 contact had paid it: the 102771 of 2012 recovers it
        "GP1 2011 PAPER_ATTESTATION",
        "GP1 2012 ADMINISTRATIVE_PROLONGATION recovered",
        "GP1 2012 PAPER_ATTESTATION",
    ]


def test_late_102771_of_another_gp_recovers_the_administrative_prolongation() -> None:
    file = year_end(paper_holder_2011(), 2012, PAPER_CTX).file
    decision = attest(file, GP3, "01.10.2012", "15.02.2013", PAPER_CTX)
    assert payments(decision.file) == [
        "GP1 2011 PAPER_ATTESTATION",
        "GP1 2012 ADMINISTRATIVE_PROLONGATION recovered",
        "GP3 2012 PAPER_ATTESTATION",
    ]
    (recovered,) = decision.payments_recovered
    assert (recovered.recovered_on, recovered.recovered_for) == (
        d("15.02.2013"),
        decision.payments_created[0].reference,
    )
    assert holdings(decision.file) == [
        "GP1 PAPER 18.07.2011-30.09.2012 CLOSED",
        "GP3 PAPER 01.10.2012-31.12.2014 ACTIVE",
    ]


def test_notification_beats_an_administrative_prolongation_already_paid() -> None:
    ctx = context(enrolled=frozenset({GP2}))
    file = year_end(paper_holder_2011(), 2012, ctx).file
    decision = do_notify(file, GP2, "30.12.2012", ctx, processing=d("02.01.2013"))
    assert decision.answer is not None
    assert decision.answer.indicator is PaymentIndicator.WITH_PAYMENT
    assert payments(decision.file)[1:] == [
        "GP1 2012 ADMINISTRATIVE_PROLONGATION recovered",
        "GP2 2012 NOTIFICATION",
    ]


def test_year_end_before_the_year_is_over_is_rejected_and_a_rerun_changes_nothing() -> None:
    file = paper_holder_2011()
    with pytest.raises(DmgRuleError) as err:
        year_end(file, 2012, PAPER_CTX, on=d("30.12.2012"))
    assert (err.value.code, err.value.field) == (146, "year")
    once = year_end(file, 2012, PAPER_CTX).file
    assert year_end(once, 2012, PAPER_CTX, on=d("15.03.2013")).file == once


# ----------------------------------------------------------------------------------------------
# one fee per patient per year; tariffs; payment delay and references


def test_one_fee_per_patient_per_year_across_physicians_and_procedures() -> None:
    ctx = context(enrolled=frozenset({GP1, GP2, GP3}))
    file = do_notify(EMPTY, GP1, "10.02.2016", ctx).file
    second = do_notify(file, GP2, "10.04.2016", ctx)
    third = do_notify(second.file, GP3, "10.06.2016", ctx)
    assert [x.answer.indicator for x in (second, third) if x.answer] == [PaymentIndicator.WITHOUT_PAYMENT] * 2
    assert payments(third.file) == ["GP1 2016 NOTIFICATION"]
    paper = attest(third.file, inami_number(39999), "01.09.2016", "02.09.2016", ctx)
    assert paper.attestation is not None
    assert paper.attestation.refusal_reason is RefusalReason.DMG_ALREADY_PAID
    assert payments(paper.file) == ["GP1 2016 NOTIFICATION"]
    # the next year is a new year: the fee is free again
    assert do_notify(third.file, GP1, "03.01.2017", ctx).file.paid_for(2017) is not None


@pytest.mark.parametrize(
    ("birth", "chronic", "year", "amount", "category"),
    [
        (date(1966, 1, 1), frozenset({2016}), 2016, "55.00", TariffCategory.CHRONIC_45_74),
        (date(1966, 1, 1), frozenset(), 2016, "30.00", TariffCategory.STANDARD),
        (date(1971, 6, 2), frozenset({2016}), 2016, "30.00", TariffCategory.STANDARD),  # 44 on 01.06.2016
        (date(1971, 6, 1), frozenset({2016}), 2016, "55.00", TariffCategory.CHRONIC_45_74),  # 45 that day
        (date(1941, 6, 1), frozenset({2016}), 2016, "30.00", TariffCategory.STANDARD),  # 75
        (date(1941, 6, 2), frozenset({2016}), 2016, "55.00", TariffCategory.CHRONIC_45_74),  # 74
        (date(1966, 1, 1), frozenset({2015}), 2015, "29.32", TariffCategory.STANDARD),  # before 2016
        (date(1966, 1, 1), frozenset({2017}), 2017, "56.10", TariffCategory.CHRONIC_45_74),
        (date(1966, 1, 1), frozenset({2015}), 2016, "30.00", TariffCategory.STANDARD),  # status of 2015 only
    ],
)
def test_fee_amount_by_tariff_and_category(
    birth: date, chronic: frozenset[int], year: int, amount: str, category: TariffCategory
) -> None:
    ctx = context(birth=birth, chronic=chronic)
    (paid,) = do_notify(EMPTY, GP1, f"01.06.{year}", ctx).payments_created
    assert (paid.amount, paid.category) == (Decimal(amount), category)


def test_tariff_table_covers_2012_to_2030_and_its_last_year_stays_in_force() -> None:
    table = TariffTable()
    assert all(table.amount(year, TariffCategory.STANDARD) > 0 for year in range(2012, 2031))
    for category in TariffCategory:
        assert table.amount(2045, category) == table.amount(2030, category)
    with pytest.raises(TariffMissingError):
        table.amount(2009, TariffCategory.STANDARD)
    assert table.amount(2016, TariffCategory.STANDARD) == Decimal("30.00")
    assert table.amount(2016, TariffCategory.CHRONIC_45_74) == Decimal("55.00")
    assert table.amount(2014, TariffCategory.CHRONIC_45_74) == table.amount(2014, TariffCategory.STANDARD)


def test_payments_are_due_within_30_days_of_their_registration() -> None:
    ctx = context()
    notified = do_notify(EMPTY, GP1, "01.03.2016", ctx, processing=d("05.03.2016"))
    (fee,) = notified.payments_created
    assert (fee.registered_on, fee.due_by, fee.contact_date) == (
        d("05.03.2016"),
        d("04.04.2016"),
        d("01.03.2016"),
    )
    prolonged = contact(notified.file, GP1, "20.01.2017", "15.02.2017", ctx)
    (fee,) = prolonged.payments_created
    assert (fee.registered_on, fee.due_by, fee.contact_date) == (
        d("15.02.2017"),
        d("17.03.2017"),
        d("20.01.2017"),
    )


def test_payment_references_are_deterministic_and_distinct() -> None:
    ctx = context()
    first = do_notify(EMPTY, GP1, "01.03.2016", ctx)
    again = do_notify(EMPTY, GP1, "01.03.2016", ctx)
    assert first == again
    file = contact(first.file, GP1, "20.01.2017", "15.02.2017", ctx).file
    references = [p.reference for p in file.payments]
    assert references == [f"DMG-{PATIENT}-2016-{GP1}-N1", f"DMG-{PATIENT}-2017-{GP1}-A1"]


# ----------------------------------------------------------------------------------------------
# medical house, GP in training, group practice


HOUSE_CTX = context(
    enrolled=frozenset({GP1, GP2, HOUSE}),
    houses=(MedicalHouseContract(HOUSE, d("01.01.2016"), d("30.06.2017")),),
)


def test_medical_house_patient_rejects_a_gp_notification_with_162() -> None:
    with pytest.raises(DmgRuleError) as err:
        do_notify(EMPTY, GP1, "01.03.2016", HOUSE_CTX)
    assert (err.value.code, err.value.field) == (162, "patient")


def test_the_medical_house_holds_the_dmg_of_its_patient() -> None:
    decision = do_notify(EMPTY, HOUSE, "01.03.2016", HOUSE_CTX)
    assert decision.answer is not None
    assert (decision.answer.holder, decision.answer.indicator) == (HOUSE, PaymentIndicator.WITHOUT_PAYMENT)
    assert holdings(decision.file) == ["HOUSE ELECTRONIC 01.03.2016-31.12.2018 ACTIVE"]
    assert decision.file.payments == ()
    # contacts and 102771 during the contract have no DMG effect
    after_contact = contact(decision.file, GP1, "05.03.2017", "06.03.2017", HOUSE_CTX)
    assert (after_contact.file.holdings, after_contact.file.payments) == (decision.file.holdings, ())
    paper = attest(decision.file, GP3, "05.04.2017", "06.04.2017", HOUSE_CTX)
    assert paper.attestation is not None
    assert paper.attestation.refusal_reason is RefusalReason.MEDICAL_HOUSE_CONTRACT
    # after the contract, a GP takes the DMG over and the (enrolled) house is told
    takeover = do_notify(decision.file, GP1, "01.09.2017", HOUSE_CTX)
    assert holdings(takeover.file) == [
        "HOUSE ELECTRONIC 01.03.2016-31.08.2017 CLOSED",
        "GP1 ELECTRONIC 01.09.2017-31.12.2019 ACTIVE",
    ]
    assert takeover.messages == (ClosureMessage(PATIENT, HOUSE, d("31.08.2017"), GP1, d("01.09.2017")),)
    assert payments(takeover.file) == ["GP1 2017 NOTIFICATION"]


def test_gp_in_training_notifies_and_the_supervisor_becomes_the_holder() -> None:
    ctx = context()
    decision = do_notify(EMPTY, TRAINEE, "01.03.2016", ctx, supervisor=GP1)
    (holding,) = decision.file.holdings
    assert (holding.holder, holding.trainee) == (GP1, TRAINEE)
    assert decision.answer is not None
    assert (decision.answer.requester, decision.answer.holder) == (TRAINEE, GP1)
    assert payments(decision.file) == ["GP1 2016 NOTIFICATION"]
    with pytest.raises(DmgRuleError) as err:  # the supervisor already holds it
        do_notify(decision.file, GP1, "02.03.2016", ctx)
    assert err.value.code == 161
    # the trainee's contact of the next year prolongs the supervisor's DMG
    prolonged = contact(decision.file, TRAINEE, "10.01.2017", "12.01.2017", ctx)
    assert payments(prolonged.file)[-1] == "GP1 2017 ACCELERATED_PROLONGATION"


@pytest.mark.parametrize(
    ("provider", "supervisor", "code", "field"),
    [
        (TRAINEE, None, 100, "supervisor"),  # a trainee must name his supervisor
        (GP2, GP1, 130, "supervisor"),  # an accredited GP does not notify under a supervisor
        (TRAINEE, inami_number(30009, competence="006"), 130, "supervisor"),  # supervisor is a trainee
        (TRAINEE, GP2, 156, "supervisor"),  # an enrolled GP, but not the supervisor the cadastre records
    ],
)
def test_gp_in_training_rejections(provider: str, supervisor: str | None, code: int, field: str) -> None:
    with pytest.raises(DmgRuleError) as err:
        do_notify(EMPTY, provider, "01.03.2016", context(), supervisor=supervisor)
    assert (err.value.code, err.value.field) == (code, field)


def test_a_trainee_without_a_recorded_supervisor_names_none_and_an_unenrolled_one_is_refused() -> None:
    with pytest.raises(DmgRuleError) as err:  # no supervisor recorded: nobody can be named
        do_notify(EMPTY, TRAINEE, "01.03.2016", context(supervisor_of={}), supervisor=GP1)
    assert (err.value.code, err.value.field) == (156, "supervisor")
    with pytest.raises(DmgRuleError) as err:  # the recorded supervisor (the holder) is not enrolled
        do_notify(EMPTY, TRAINEE, "01.03.2016", context(supervisor_of={TRAINEE: GP3}), supervisor=GP3)
    assert (err.value.code, err.value.field) == (163, "requester")


def test_contact_by_a_member_of_the_holders_group_practice_prolongs_the_dmg() -> None:
    ctx = context()
    file = do_notify(EMPTY, GP1, "01.03.2016", ctx).file
    decision = contact(file, MEMBER, "12.02.2017", "14.02.2017", ctx, code=VISIT)
    (fee,) = decision.payments_created
    assert (fee.beneficiary, fee.kind, fee.year) == (GP1, PaymentKind.ACCELERATED_PROLONGATION, 2017)
    assert decision.messages == (
        ExtensionMessage(PATIENT, GP1, d("14.02.2017"), d("31.12.2019"), d("12.02.2017"), VISIT, MEMBER),
    )
    outsider = contact(file, GP3, "12.02.2017", "14.02.2017", ctx)
    assert (outsider.payments_created, outsider.file.holdings) == ((), file.holdings)


def test_first_contact_counts_even_if_registered_later() -> None:
    """Two contacts of the holder registered out of order: the fee keeps the earliest date."""
    ctx = context()
    file = do_notify(EMPTY, GP1, "01.03.2016", ctx).file
    file = contact(file, GP1, "20.03.2017", "21.03.2017", ctx).file
    file = contact(file, GP1, "05.01.2017", "30.03.2017", ctx).file
    assert [(p.kind, p.contact_date) for p in file.payments if p.year == 2017] == [
        (PaymentKind.ACCELERATED_PROLONGATION, d("05.01.2017"))
    ]
    # so a 102771 of 01.02.2017 by another GP comes after the holder's first contact: refused
    paper = attest(file, GP3, "01.02.2017", "01.04.2017", ctx)
    assert paper.attestation is not None
    assert paper.attestation.refusal_reason is RefusalReason.DMG_ALREADY_PAID


def test_holder_whose_right_expired_on_31_december_is_prolonged_by_a_contact_the_next_year() -> None:
    ctx = context()
    file = do_notify(EMPTY, GP1, "01.03.2016", ctx).file  # right until 31.12.2018, no contact since
    decision = contact(file, GP1, "10.01.2019", "11.01.2019", ctx)
    assert holdings(decision.file) == ["GP1 ELECTRONIC 01.03.2016-31.12.2021 ACTIVE"]
    later = contact(file, GP1, "10.01.2020", "11.01.2020", ctx)  # expired for a whole year: no
    assert later.payments_created == ()


# ----------------------------------------------------------------------------------------------
# paper 102771 refusals and closures


def test_102771_by_an_enrolled_gp_is_refused_and_recorded() -> None:
    decision = attest(EMPTY, GP1, "01.03.2016", "02.03.2016", context())
    assert decision.attestation is not None
    assert (decision.attestation.outcome, decision.attestation.refusal_reason) == (
        AttestationOutcome.REFUSED,
        RefusalReason.PROVIDER_ENROLLED,
    )
    assert decision.file.attestations == (decision.attestation,)
    assert (decision.file.holdings, decision.file.payments) == ((), ())


@pytest.mark.parametrize(
    "provider",
    [
        inami_number(30010, competence="580"),  # a specialist
        inami_number(30011, competence="001", profession=3),  # a dentist
        inami_number(30012, competence="001"),  # a GP not accredited
        TRAINEE,  # a GP in training
    ],
)
def test_102771_is_attested_by_an_accredited_gp_only(provider: str) -> None:
    """Seed 002 (issue 14, correction 2): a specialist's or a dentist's 102771 is refused and recorded."""
    decision = attest(EMPTY, provider, "01.03.2016", "02.03.2016", context())
    assert decision.attestation is not None
    assert decision.attestation.refusal_reason is RefusalReason.NOT_AN_ACCREDITED_GP
    assert (decision.file.holdings, decision.file.payments) == ((), ())
    accepted = attest(EMPTY, GP3, "01.03.2016", "02.03.2016", context())  # an accredited GP's is taken
    assert accepted.attestation is not None
    assert accepted.attestation.outcome is AttestationOutcome.ACCEPTED


def test_the_refusal_of_paper_by_an_enrolled_gp_depends_on_the_attestation_date() -> None:
    """Issue 14, correction 8: a 102771 attested before the GP enrolled, submitted after, is accepted; one
    attested after the enrolment is refused."""
    ctx = context(enrolled=frozenset({GP1, GP3}), enrolled_since={GP1: d("01.01.2010"), GP3: d("15.03.2016")})
    before = attest(EMPTY, GP3, "01.03.2016", "20.03.2016", ctx)
    assert before.attestation is not None
    assert before.attestation.outcome is AttestationOutcome.ACCEPTED
    after = attest(EMPTY, GP3, "16.03.2016", "20.03.2016", ctx)
    assert after.attestation is not None
    assert after.attestation.refusal_reason is RefusalReason.PROVIDER_ENROLLED


def test_no_closure_message_on_paper_takeover_when_disabled() -> None:
    ctx = context(enrolled=frozenset({GP1}), closure_on_paper_takeover=False)
    file = do_notify(EMPTY, GP1, "01.03.2016", ctx).file
    decision = attest(file, GP3, "01.05.2017", "02.05.2017", ctx)
    assert holdings(decision.file) == [
        "GP1 ELECTRONIC 01.03.2016-30.04.2017 CLOSED",
        "GP3 PAPER 01.05.2017-31.12.2019 ACTIVE",
    ]
    assert decision.messages == ()
    (closed,) = decision.holdings_closed
    assert (closed.status, closed.status_reason, closed.status_date) == (
        HoldingStatus.CLOSED,
        StatusReason.TAKEOVER,
        d("02.05.2017"),
    )


# ----------------------------------------------------------------------------------------------
# rejections: every code the rules raise, and nothing changes


def test_notification_replay_returns_the_stored_answer() -> None:
    ctx = context()
    first = do_notify(EMPTY, GP1, "01.03.2016", ctx, ref="R-1")
    replay = do_notify(first.file, GP1, "01.03.2016", ctx, ref="R-1", processing=d("03.03.2016"))
    assert replay.replayed
    assert replay.file is first.file
    assert replay.answer == first.answer
    assert (replay.messages, replay.payments_created) == ((), ())


REJECTIONS = [
    ("130 contact code", lambda f, c: do_notify(f, GP2, "01.03.2016", c, code="109999"), 130, "code"),
    ("130 paper code", lambda f, c: do_notify(f, GP2, "01.03.2016", c, code="102771"), 130, "code"),
    (
        "130 invoiced code",
        lambda f, c: contact(f, GP1, "01.03.2016", "02.03.2016", c, code="102771"),
        130,
        "code",
    ),
    (
        "146 notify future",
        lambda f, c: do_notify(f, GP2, "05.03.2016", c, processing=d("04.03.2016")),
        146,
        "contact_date",
    ),
    ("146 contact", lambda f, c: contact(f, GP1, "05.03.2016", "04.03.2016", c), 146, "contact_date"),
    ("146 102771", lambda f, c: attest(f, GP3, "05.03.2016", "04.03.2016", c), 146, "attestation_date"),
    (
        "158 reused reference",
        lambda f, c: do_notify(f, GP1, "02.02.2016", c, ref=f"{GP1}-01.02.2016"),
        158,
        "requester_reference",
    ),
    ("161 already holder", lambda f, c: do_notify(f, GP1, "05.03.2016", c), 161, "requester"),
    ("163 not enrolled", lambda f, c: do_notify(f, GP3, "05.03.2016", c), 163, "requester"),
    (
        "165 same start",
        lambda f, c: do_notify(f, GP2, "01.02.2016", c, processing=d("03.02.2016")),
        165,
        None,
    ),
    ("165 contact twice", lambda f, c: contact(f, GP1, "01.02.2016", "09.02.2016", c), 165, "contact_date"),
    ("165 102771 twice", lambda f, c: attest(f, GP3, "10.02.2016", "11.03.2016", c), 165, "attestation_date"),
    (
        "166 too old",
        lambda f, c: do_notify(f, GP2, "01.03.2016", c, processing=d("09.03.2016")),
        166,
        "contact_date",
    ),
]


@pytest.mark.parametrize(("label", "call", "code", "field"), REJECTIONS, ids=[r[0] for r in REJECTIONS])
def test_rejections_raise_the_mycarenet_code_and_change_nothing(
    label: str, call: object, code: int, field: str | None
) -> None:
    ctx = context()
    file = do_notify(EMPTY, GP1, "01.02.2016", ctx).file
    file = contact(file, GP1, "01.02.2016", "08.02.2016", ctx).file
    file = attest(file, GP3, "10.02.2016", "10.03.2016", ctx).file
    snapshot = file
    assert callable(call)
    with pytest.raises(DmgRuleError) as err:
        call(file, ctx)
    assert err.value.code == code, label
    if field is not None:
        assert err.value.field == field
    assert file == snapshot


def test_7_days_back_is_still_accepted_and_the_limit_is_configurable() -> None:
    ctx = context()
    assert do_notify(EMPTY, GP1, "01.03.2016", ctx, processing=d("08.03.2016")).answer is not None
    relaxed = context(max_notification_delay_days=None)
    assert do_notify(EMPTY, GP1, "01.03.2016", relaxed, processing=d("30.03.2016")).answer is not None


def test_rule_error_carries_code_reason_and_field() -> None:
    error = DmgRuleError(161, "already holder", "requester")
    assert (error.code, error.reason, error.field) == (161, "already holder", "requester")
    assert "161" in str(error)


def test_a_notification_with_an_earlier_first_contact_wins_over_a_prolongation_already_paid() -> None:
    """Issue 14 correction 7, seed 000 §5.1: 'si une ... notification MyCareNet arrive alors qu'une
    prolongation automatique accélérée a été payée : l'OA tiendra compte du paiement pour le DMG
    correspondant à la première consultation en date de l'année', whatever the order of arrival."""
    ctx = context()
    file = do_notify(EMPTY, GP1, "01.03.2011", ctx).file
    prolonged = contact(file, GP1, "02.07.2012", "04.07.2012", ctx)
    assert [p.kind for p in prolonged.payments_created] == [PaymentKind.ACCELERATED_PROLONGATION]

    taken = do_notify(prolonged.file, GP2, "30.06.2012", ctx, processing=d("05.07.2012"))

    assert taken.answer is not None
    assert taken.answer.indicator is PaymentIndicator.WITH_PAYMENT
    assert payments(taken.file) == [
        "GP1 2011 NOTIFICATION",
        "GP1 2012 ACCELERATED_PROLONGATION recovered",
        "GP2 2012 NOTIFICATION",
    ]
    (recovered,) = taken.payments_recovered
    assert recovered.recovered_for == taken.payments_created[0].reference
    # A notification whose contact comes after the prolongation's is not paid (the first contact wins).
    later = do_notify(prolonged.file, GP2, "03.07.2012", ctx, processing=d("05.07.2012"))
    assert later.answer is not None
    assert later.answer.indicator is PaymentIndicator.WITHOUT_PAYMENT
    assert later.payments_created == ()
