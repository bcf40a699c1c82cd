"""One DMG fee per patient per calendar year, and who keeps it when two compete (seed 000 §5.1).

A *claim* is a would-be fee (notification, accelerated prolongation, 102771 attestation,
administrative prolongation). :func:`contest` decides, against the year's current fee if any,
whether the claim is paid and which fee is recovered:

* an administrative prolongation always yields: "Priorité à une attestation 102771 ou une
  notification DMG par rapport à la prolongation administrative" (seed 000 §5.1), and one already
  paid is recovered (seed 002 "devrait être récupéré");
* two paper attestations: the legacy paper procedure is unchanged (seed 000 §5 intro), the first
  one accepted keeps the fee;
* otherwise the fee "correspondant à la première consultation en date de l'année" wins (seed 000
  §5.1, §5.2.1.2.2, §5.2.2.2.2, §5.2.3.1.2), whatever the order in which they arrive: the claim wins
  only with a strictly earlier contact. That holds for a notification too: "si une attestation 102771
  ou une notification MyCareNet arrive alors qu'une prolongation automatique accélérée a été payée :
  l'OA tiendra compte du paiement pour le DMG correspondant à la première consultation en date de
  l'année" (seed 000 §5.1; issue 14 correction 7).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta

from .context import RuleContext
from .model import Payee, Payment, PaymentKind

PAYMENT_DELAY = timedelta(days=30)
"""Seed 000 §3.3.6.1.2 / seed 002: paid 'dans les 30 jours' from the registration."""

PAYMENT_RUN_WEEKDAY = 3
"""The insurer's weekly payment run, on Thursdays. ILLUSTRATIVE: the seeds say only 'within 30 days'."""


def payment_run(registered_on: date, not_before: date | None = None) -> date:
    """The payment run that pays a fee registered on ``registered_on``: the first run after it (and not
    before ``not_before``, seed 002's 1 July 2016); within the 30 days of seed 002 unless held back."""
    start = max(registered_on + timedelta(days=1), not_before or registered_on)
    return start + timedelta(days=(PAYMENT_RUN_WEEKDAY - start.weekday()) % 7)


_KIND_CODES = {
    PaymentKind.NOTIFICATION: "N",
    PaymentKind.ACCELERATED_PROLONGATION: "A",
    PaymentKind.PAPER_ATTESTATION: "P",
    PaymentKind.ADMINISTRATIVE_PROLONGATION: "R",
}


@dataclass(frozen=True, slots=True)
class Claim:
    """A fee that would be paid to ``beneficiary`` for ``year``, for the contact of ``contact_date``."""

    kind: PaymentKind
    beneficiary: str
    year: int
    contact_date: date


@dataclass(frozen=True, slots=True)
class Verdict:
    """Outcome of :func:`contest`: whether the claim is paid and the fee it displaces."""

    paid: bool
    displaced: Payment | None = None


def contest(payments: tuple[Payment, ...], claim: Claim) -> Verdict:
    """Decide a claim against the year's current unrecovered fee (see the module docstring)."""
    current = next((p for p in payments if p.year == claim.year and not p.recovered), None)
    if current is None:
        return Verdict(paid=True)
    if current.kind is PaymentKind.ADMINISTRATIVE_PROLONGATION and (
        claim.kind is not PaymentKind.ADMINISTRATIVE_PROLONGATION
    ):
        return Verdict(paid=True, displaced=current)
    if current.beneficiary == claim.beneficiary:
        return Verdict(paid=False)
    if claim.kind is PaymentKind.ADMINISTRATIVE_PROLONGATION:
        return Verdict(paid=False)
    if claim.kind is PaymentKind.PAPER_ATTESTATION and current.kind is PaymentKind.PAPER_ATTESTATION:
        return Verdict(paid=False)
    if claim.contact_date < current.contact_date:
        return Verdict(paid=True, displaced=current)
    return Verdict(paid=False)


def payment_reference(patient: str, claim: Claim, payments: tuple[Payment, ...]) -> str:
    """Deterministic reference: patient, year, beneficiary, kind and a sequence (stable on replay)."""
    sequence = 1 + sum(
        1
        for p in payments
        if p.year == claim.year and p.beneficiary == claim.beneficiary and p.kind is claim.kind
    )
    return f"DMG-{patient}-{claim.year}-{claim.beneficiary}-{_KIND_CODES[claim.kind]}{sequence}"


def make_payment(
    patient: str,
    claim: Claim,
    payments: tuple[Payment, ...],
    *,
    registered_on: date,
    ctx: RuleContext,
    payee: Payee = Payee.PROVIDER,
) -> Payment:
    """The fee of ``claim``, at the tariff of its year and the patient's category (seed 002), paid to
    ``payee`` by the next payment run, due 30 days after its registration (later only when its tariff is
    paid from a later day: seed 002's 55 EUR of 2016, from 1 July)."""
    category = ctx.category(claim.contact_date)
    run = payment_run(registered_on, ctx.tariffs.not_paid_before(claim.year, category))
    return Payment(
        reference=payment_reference(patient, claim, payments),
        patient=patient,
        year=claim.year,
        beneficiary=claim.beneficiary,
        kind=claim.kind,
        amount=ctx.tariffs.amount(claim.year, category),
        category=category,
        registered_on=registered_on,
        due_by=max(registered_on + PAYMENT_DELAY, run),
        contact_date=claim.contact_date,
        payee=payee,
        paid_on=run,
    )


def recover(payment: Payment, *, on: date, winner: str) -> Payment:
    """The recovered version of ``payment`` (seed 000 §5.1 'L'OA fait des récupérations')."""
    return replace(payment, recovered=True, recovered_on=on, recovered_for=winner)


def settle(
    patient: str,
    payments: tuple[Payment, ...],
    claim: Claim,
    *,
    registered_on: date,
    ctx: RuleContext,
    payee: Payee = Payee.PROVIDER,
) -> tuple[tuple[Payment, ...], Payment | None, Payment | None]:
    """Apply :func:`contest`: return (new payments, payment created, payment recovered)."""
    verdict = contest(payments, claim)
    if not verdict.paid:
        return payments, None, None
    created = make_payment(patient, claim, payments, registered_on=registered_on, ctx=ctx, payee=payee)
    recovered: Payment | None = None
    updated = payments
    if verdict.displaced is not None:
        recovered = recover(verdict.displaced, on=registered_on, winner=created.reference)
        updated = tuple(recovered if p.reference == recovered.reference else p for p in payments)
    return (*updated, created), created, recovered
