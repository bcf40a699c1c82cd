"""The check after payment as a pure rule (seed 000 §3.2.2, §3.3.1): a notification fee whose contact did not
reach the insurer through invoicing (that physician, that patient, that date) within the period is
recovered; one whose contact came is not; the date is a parameter."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from oa_node import rules
from oa_node.fee_checks import billing_deadline, unbilled_notification_fees

GP, TRAINEE, OTHER = "11000095003", "11000194005", "11000293004"
PATIENT = "80051711820"
CONTACT = dt.date(2026, 11, 20)
DEADLINE = dt.date(2028, 11, 30)  # 24 months after November 2026, at the end of the month
LATER = dt.date(2030, 1, 1)


def fee(kind: rules.PaymentKind = rules.PaymentKind.NOTIFICATION, **extra: object) -> rules.Payment:
    values: dict[str, object] = {
        "reference": f"DMG-{PATIENT}-2026-{GP}-N1",
        "patient": PATIENT,
        "year": 2026,
        "beneficiary": GP,
        "kind": kind,
        "amount": Decimal("37.30"),
        "category": rules.TariffCategory.STANDARD,
        "registered_on": CONTACT,
        "due_by": CONTACT + dt.timedelta(days=30),
        "contact_date": CONTACT,
    }
    values.update(extra)
    return rules.Payment(**values)  # type: ignore[arg-type]


def notification(provider: str = GP) -> rules.Notification:
    return rules.Notification(
        requester_reference="n-1",
        provider=provider,
        holder=GP,
        contact_date=CONTACT,
        code="101010",
        processed_on=CONTACT,
        start=CONTACT,
        end=dt.date(2028, 12, 31),
        indicator=rules.PaymentIndicator.WITH_PAYMENT,
    )


def contact(provider: str = GP, on: dt.date = CONTACT) -> rules.Contact:
    return rules.Contact(provider=provider, contact_date=on, code="101010", submitted_on=on)


def file(
    *contacts: rules.Contact, payments: tuple[rules.Payment, ...] = (), provider: str = GP
) -> rules.DmgFile:
    return rules.DmgFile(
        patient=PATIENT,
        payments=payments or (fee(),),
        contacts=contacts,
        notifications=(notification(provider),),
    )


def test_the_deadline_is_the_end_of_the_month_so_many_months_after_the_contact() -> None:
    assert billing_deadline(CONTACT, 24) == DEADLINE
    assert billing_deadline(dt.date(2024, 3, 13), 24) == dt.date(2026, 3, 31)
    assert billing_deadline(dt.date(2024, 1, 15), 1) == dt.date(2024, 2, 29)
    assert billing_deadline(dt.date(2025, 12, 31), 1) == dt.date(2026, 1, 31)
    assert billing_deadline(dt.date(2025, 11, 1), 1) == dt.date(2025, 12, 31)


def test_a_fee_without_its_contact_is_recovered_after_the_deadline_only() -> None:
    before, found = unbilled_notification_fees(file(), today=DEADLINE, months=24)
    assert found == ()
    after, found = unbilled_notification_fees(before, today=DEADLINE + dt.timedelta(days=1), months=24)
    [recovery] = found
    assert recovery.payment.recovered
    assert recovery.payment.recovered_on == DEADLINE + dt.timedelta(days=1)
    assert recovery.notification == notification()
    assert after.payments == (recovery.payment,)
    again, found = unbilled_notification_fees(after, today=LATER, months=24)
    assert (again, found) == (after, ())
    # a shorter period (an insurer's setting) is due sooner
    assert len(unbilled_notification_fees(file(), today=dt.date(2026, 12, 1), months=0)[1]) == 1


def test_the_contact_of_that_physician_that_patient_that_date_keeps_the_fee() -> None:
    today = LATER
    assert unbilled_notification_fees(file(contact()), today=today, months=24)[1] == ()
    # the trainee who notified for his supervisor invoices the contact himself
    assert (
        unbilled_notification_fees(file(contact(TRAINEE), provider=TRAINEE), today=today, months=24)[1] == ()
    )
    # another physician's contact, or another date, does not count
    assert len(unbilled_notification_fees(file(contact(OTHER)), today=today, months=24)[1]) == 1
    later = contact(on=CONTACT + dt.timedelta(days=1))
    assert len(unbilled_notification_fees(file(later), today=today, months=24)[1]) == 1


def test_only_unrecovered_notification_fees_are_checked() -> None:
    today = LATER
    others = (
        fee(rules.PaymentKind.ACCELERATED_PROLONGATION),
        fee(rules.PaymentKind.PAPER_ATTESTATION),
        fee(recovered=True, recovered_on=CONTACT),
    )
    for payment in others:
        assert unbilled_notification_fees(file(payments=(payment,)), today=today, months=24)[1] == ()
