"""Issue 14, corrections 11 and 12, as rules: a fee's due and paid dates, the tariff's sources, seed 002's
55 EUR paid from 1 July 2016, the chronic status held by period, and a 102771 paid in cash reimbursed to the
patient (seed 000 §1.1.1) while one in third-party payment is paid to the GP."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal

import pytest

from oa_node.rules import (
    Decision,
    DmgFile,
    PatientProfile,
    Payee,
    RuleContext,
    TariffCategory,
    TariffTable,
    notify,
    register_paper_attestation,
    tariff_source,
)
from oa_node.rules.payments import PAYMENT_RUN_WEEKDAY, payment_run
from oa_node.rules.testing import d, inami_number

GP = inami_number(40001)
PATIENT = "66010112345"


def ctx_for(profile: PatientProfile, enrolled: frozenset[str] = frozenset({GP})) -> RuleContext:
    return RuleContext(patient=profile, enrolled=enrolled)


def notified(on: str, profile: PatientProfile, processing: str | None = None) -> Decision:
    return notify(
        DmgFile(patient=PATIENT),
        provider=GP,
        requester_reference="ref-1",
        contact_date=d(on),
        processing_date=d(processing or on),
        code="101010",
        ctx=ctx_for(profile),
    )


def test_a_fee_is_due_30_days_after_its_registration_and_paid_by_the_next_payment_run() -> None:
    (fee,) = notified("02.03.2017", PatientProfile(birth_date=date(1966, 1, 1))).payments_created
    assert fee.due_by == d("01.04.2017")
    assert fee.paid_on is not None
    assert fee.registered_on < fee.paid_on <= fee.registered_on + timedelta(days=7)
    assert fee.paid_on.weekday() == PAYMENT_RUN_WEEKDAY
    # Paid once its run has passed, and not before.
    assert fee.paid_by(fee.paid_on - timedelta(days=1)) is None
    assert fee.paid_by(fee.paid_on) == fee.paid_on
    assert fee.paid_by(date(2030, 1, 1)) == fee.paid_on


def test_a_fee_recovered_before_its_run_is_never_paid() -> None:
    (fee,) = notified("02.03.2017", PatientProfile(birth_date=date(1966, 1, 1))).payments_created
    assert fee.paid_on is not None
    early = replace(fee, recovered=True, recovered_on=fee.registered_on)
    assert early.paid_by(date(2030, 1, 1)) is None
    late = replace(fee, recovered=True, recovered_on=fee.paid_on + timedelta(days=3))
    assert late.paid_by(date(2030, 1, 1)) == fee.paid_on  # paid, then recovered


@pytest.mark.parametrize(
    ("registered", "run"),
    [
        (date(2017, 3, 2), date(2017, 3, 9)),  # a Thursday: the next one
        (date(2017, 3, 1), date(2017, 3, 2)),
        (date(2017, 3, 4), date(2017, 3, 9)),
    ],
)
def test_the_payment_run_is_the_first_after_the_registration(registered: date, run: date) -> None:
    assert payment_run(registered) == run


def test_the_55_eur_of_2016_is_paid_from_1_july_2016_seed_002() -> None:
    """'Depuis le 1er janvier 2016, le montant du DMG s'élève à 55 EUR ... À partir du 1er juillet, les
    organismes assureurs vous payeront ce montant' (seed 002)."""
    chronic = PatientProfile(birth_date=date(1966, 1, 1), chronic_status_years=frozenset({2016}))
    (fee,) = notified("02.03.2016", chronic).payments_created
    assert (fee.amount, fee.category) == (Decimal("55.00"), TariffCategory.CHRONIC_45_74)
    assert fee.paid_on is not None
    assert fee.paid_on >= date(2016, 7, 1)
    assert fee.due_by >= fee.paid_on
    # After 1 July, the usual 30 days; the standard fee of March 2016 is not held back.
    (later,) = notified("02.08.2016", chronic).payments_created
    assert later.due_by == date(2016, 9, 1)
    (standard,) = notified("02.03.2016", PatientProfile(birth_date=date(1966, 1, 1))).payments_created
    assert standard.category is TariffCategory.STANDARD
    assert standard.due_by == date(2016, 4, 1)


def test_the_chronic_status_is_held_by_period() -> None:
    profile = PatientProfile(birth_date=date(1966, 1, 1), chronic_periods=((date(2017, 6, 1), None),))
    (before,) = notified("15.05.2017", profile).payments_created
    assert before.category is TariffCategory.STANDARD
    (after,) = notified("15.06.2017", profile).payments_created
    assert after.category is TariffCategory.CHRONIC_45_74
    ended = PatientProfile(
        birth_date=date(1966, 1, 1), chronic_periods=((date(2016, 1, 1), date(2017, 2, 28)),)
    )
    (gone,) = notified("15.03.2017", ended).payments_created
    assert gone.category is TariffCategory.STANDARD


def test_every_tariff_line_says_where_its_amount_comes_from() -> None:
    table = TariffTable()
    assert tariff_source(2016) == "seed 002"
    assert {tariff_source(y) for y in table.amounts if y != 2016} == {"illustrative"}
    assert table.not_paid_before(2016, TariffCategory.CHRONIC_45_74) == date(2016, 7, 1)
    assert table.not_paid_before(2016, TariffCategory.STANDARD) is None
    assert table.not_paid_before(2017, TariffCategory.CHRONIC_45_74) is None


@pytest.mark.parametrize(("payee", "expected"), [(None, Payee.PATIENT), (Payee.PROVIDER, Payee.PROVIDER)])
def test_a_102771_paid_in_cash_is_reimbursed_to_the_patient(payee: Payee | None, expected: Payee) -> None:
    """Seed 000 §1.1.1: paid in cash, the insurer reimburses the patient who hands the certificate in; in
    third-party payment, it pays the GP. Either way it is the year's DMG fee of the GP's DMG."""
    ctx = ctx_for(PatientProfile(birth_date=date(1975, 3, 15)), enrolled=frozenset())
    extra = {"payee": payee} if payee is not None else {}
    decision = register_paper_attestation(
        DmgFile(patient=PATIENT),
        provider=GP,
        attestation_date=d("01.07.2012"),
        submission_date=d("01.08.2012"),
        ctx=ctx,
        **extra,  # type: ignore[arg-type]
    )
    (fee,) = decision.payments_created
    assert (fee.beneficiary, fee.payee) == (GP, expected)
