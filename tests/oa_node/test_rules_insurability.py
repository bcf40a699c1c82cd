"""The payment commitment (seed 003 §5, §9.2, §11.1): the six worked examples of §11.1 as one table, the
insurer's coverage and the pharmacy's reuse limits; joining periods; the agreement number; the emergency
scheme of §9.2."""

from __future__ import annotations

import datetime as dt

import pytest
from mycarenet_sdk.commitments import Basis as Fallback
from mycarenet_sdk.commitments import StoredCommitment, choose, decide

from oa_node.rules.insurability import (
    AgreementFields,
    Basis,
    Commitment,
    Coverage,
    InsurabilityPeriod,
    InsurabilityStatus,
    TarificationLine,
    Verdict,
    agreement_is_genuine,
    agreement_number,
    payment_commitment,
    reusable_until,
    validate_line,
)


def d(text: str) -> dt.date:
    day, month, year = (int(part) for part in text.split("/"))
    return dt.date(year, month, day)


STATUS = InsurabilityStatus("110", "110")


def periods(*spans: str, status: InsurabilityStatus = STATUS) -> list[InsurabilityPeriod]:
    out = []
    for span in spans:
        start, end = span.split("-")
        out.append(InsurabilityPeriod(d(start), d(end), status))
    return out


# Seed 003 §11.1, as the seed words it: consultation, dispensing, insurability periods (CT1-CT2 110-110),
# coverage of the commitment, and the last later dispensing it may be reused for (None: never).
EXAMPLES = [
    ("1", "12/11/2011", "12/11/2011", ["1/1/2011-31/12/2011"], ("12/11/2011", "12/12/2011"), "12/12/2011"),
    ("2", "12/11/2011", "12/11/2011", ["1/1/2011-30/11/2011"], ("12/11/2011", "30/11/2011"), "30/11/2011"),
    ("3", "12/11/2011", "26/10/2011", ["1/1/2011-31/12/2011"], ("26/10/2011", "25/11/2011"), "25/11/2011"),
    ("4", "12/11/2011", "26/10/2011", ["1/1/2011-30/10/2011"], ("26/10/2011", "30/10/2011"), None),
    ("5", "12/11/2011", "26/09/2011", ["1/1/2011-31/12/2011"], ("26/09/2011", "26/10/2011"), None),
    (
        "6",
        "25/12/2011",
        "25/12/2011",
        ["1/1/2011-31/12/2011", "1/1/2012-31/12/2012"],
        ("25/12/2011", "24/01/2012"),
        "24/01/2012",
    ),
]


@pytest.mark.parametrize(
    ("example", "consulted", "dispensing", "spans", "coverage", "until"),
    EXAMPLES,
    ids=[f"example-{row[0]}" for row in EXAMPLES],
)
def test_the_worked_examples_of_seed_003(
    example: str,
    consulted: str,
    dispensing: str,
    spans: list[str],
    coverage: tuple[str, str],
    until: str | None,
) -> None:
    committed = payment_commitment(periods(*spans), d(dispensing))
    assert committed == Coverage(d(coverage[0]), d(coverage[1]), STATUS)
    expected_until = d(until) if until is not None else None
    assert reusable_until(committed, d(consulted)) == expected_until

    # The pharmacy's side agrees, and reuses it exactly up to that date (for a later dispensing, §11.1).
    stored = StoredCommitment(
        niss="85073003328",
        consulted=d(consulted),
        coverage_start=committed.start,
        coverage_end=committed.end,
        agreement_number="100-X",
    )
    assert stored.reusable_until == expected_until
    if expected_until is None:
        assert not any(stored.covers(committed.start + dt.timedelta(days=n)) for n in range(-5, 40))
    else:
        assert stored.covers(expected_until)
        assert not stored.covers(expected_until + dt.timedelta(days=1))
        assert stored.covers(committed.start)
        assert not stored.covers(committed.start - dt.timedelta(days=1))


def test_no_commitment_without_a_right_on_the_dispensing_date() -> None:
    spans = periods("1/1/2011-30/06/2011", "1/8/2011-31/12/2011")
    assert payment_commitment(spans, d("15/07/2011")) is None
    assert payment_commitment([], d("15/07/2011")) is None
    # The right resumes on 1 August: a dispensing that day is covered, not the gap before it.
    assert payment_commitment(spans, d("01/08/2011")) == Coverage(d("01/08/2011"), d("31/08/2011"), STATUS)


def test_adjacent_periods_join_only_with_the_same_status_and_no_gap() -> None:
    preferential = InsurabilityStatus("111", "111", preferential_rate=True)
    changed = [
        InsurabilityPeriod(d("1/1/2011"), d("30/11/2011"), STATUS),
        InsurabilityPeriod(d("1/12/2011"), d("31/12/2011"), preferential),
    ]
    # The status changes on 1 December: the coverage stops at the end of the first period.
    assert payment_commitment(changed, d("20/11/2011")) == Coverage(d("20/11/2011"), d("30/11/2011"), STATUS)
    with_gap = periods("1/1/2011-30/11/2011", "2/12/2011-31/12/2011")
    assert payment_commitment(with_gap, d("20/11/2011")) == Coverage(d("20/11/2011"), d("30/11/2011"), STATUS)
    # Three short periods of one status join, still capped at 30 days.
    short = periods("1/11/2011-10/11/2011", "11/11/2011-20/11/2011", "21/11/2011-31/12/2011")
    assert payment_commitment(short, d("05/11/2011")) == Coverage(d("05/11/2011"), d("05/12/2011"), STATUS)
    # Periods given in any order.
    assert payment_commitment(list(reversed(short)), d("05/11/2011")) == Coverage(
        d("05/11/2011"), d("05/12/2011"), STATUS
    )


def _fields(**changes: object) -> AgreementFields:
    base: dict[str, object] = {
        "insurer_code": "300",
        "niss": "85073003328",
        "provider_inami": "24004001",
        "dispensing": d("12/11/2011"),
        "coverage": Coverage(d("12/11/2011"), d("12/12/2011"), STATUS),
    }
    base.update(changes)
    return AgreementFields(**base)  # type: ignore[arg-type]


def test_the_agreement_number_is_genuine_only_for_its_fields_and_its_insurers_key() -> None:
    key = b"k" * 32
    number = agreement_number(key, _fields())
    assert number.startswith("300-")
    assert len(number) == 24
    assert agreement_number(key, _fields()) == number  # deterministic: the third party can recompute it
    assert agreement_is_genuine(key, _fields(), number)
    assert not agreement_is_genuine(b"o" * 32, _fields(), number)  # another insurer's key
    altered = [
        _fields(niss="85073003427"),
        _fields(provider_inami="24005001"),  # the commitment is linked to the provider (§5.1)
        _fields(dispensing=d("13/11/2011")),
        _fields(coverage=Coverage(d("12/11/2011"), d("13/12/2011"), STATUS)),
        _fields(coverage=Coverage(d("12/11/2011"), d("12/12/2011"), InsurabilityStatus("110", "111"))),
        _fields(
            coverage=Coverage(
                d("12/11/2011"), d("12/12/2011"), InsurabilityStatus("110", "110", maximum_billing=True)
            )
        ),
    ]
    for fields in altered:
        assert not agreement_is_genuine(key, fields, number)
    assert not agreement_is_genuine(key, _fields(), number[:-1] + ("A" if number[-1] != "A" else "B"))
    assert not agreement_is_genuine(key, _fields(), "300-\udcff" + "x" * 19)


def _stored(consulted: str, start: str, end: str, number: str, niss: str = "85073003328") -> StoredCommitment:
    return StoredCommitment(niss, d(consulted), d(start), d(end), number)


def test_reuse_takes_the_latest_commitment_covering_the_date_of_that_patient() -> None:
    older = _stored("01/11/2011", "01/11/2011", "01/12/2011", "old")
    latest = _stored("10/11/2011", "10/11/2011", "10/12/2011", "latest")
    never = _stored("20/11/2011", "26/10/2011", "30/10/2011", "never")  # ended before it was obtained
    other = _stored("15/11/2011", "15/11/2011", "15/12/2011", "other", niss="85073003427")
    stored = [older, latest, never, other]
    assert choose(stored, "85073003328", d("20/11/2011")) == latest
    assert choose(stored, "85073003328", d("05/11/2011")) == older  # the latest does not cover it
    assert choose(stored, "85073003328", d("28/10/2011")) is None  # only "never" would cover it
    assert choose(stored, "85073003328", d("11/12/2011")) is None


def test_the_emergency_scheme_of_seed_003_section_9_2() -> None:
    niss = "85073003328"
    stored = [_stored("10/11/2011", "10/11/2011", "10/12/2011", "latest")]
    on = d("20/11/2011")
    late = d("20/12/2011")
    assert decide(network_available=True, stored=stored, niss=niss, dispensing=on).basis is Fallback.ONLINE
    reused = decide(network_available=False, stored=stored, niss=niss, dispensing=on)
    assert reused.basis is Fallback.REUSED
    assert reused.commitment == stored[0]
    down = {"network_available": False, "stored": stored, "niss": niss, "dispensing": late}
    assert decide(**down, trusts_last_data=True).basis is Fallback.LAST_ONLINE_DATA  # type: ignore[arg-type]
    assert decide(**down, has_sis_card=True).basis is Fallback.SIS_CARD  # type: ignore[arg-type]
    assert decide(**down, has_document=True, trusts_document=True).basis is Fallback.DOCUMENT  # type: ignore[arg-type]
    assert decide(**down, has_document=True).basis is Fallback.FORM_704  # type: ignore[arg-type]
    # A patient unknown to the pharmacy: the last online data do not exist, whatever the pharmacist trusts.
    unknown = decide(
        network_available=False, stored=stored, niss="85073003427", dispensing=on, trusts_last_data=True
    )
    assert unknown.basis is Fallback.FORM_704


def test_a_tarification_line_is_paid_on_the_insurers_data_first_then_on_the_proof() -> None:
    key = b"k" * 32
    preferential = InsurabilityStatus("111", "111", preferential_rate=True)
    # The pharmacist consulted on 12/11 (110/110 to the end of the year); the insurer later learns that the
    # patient had the preferential rate from 1 November.
    coverage = payment_commitment(periods("1/1/2011-31/12/2011"), d("12/11/2011"))
    assert coverage is not None
    fields = AgreementFields("300", "85073003328", "51001511001", d("12/11/2011"), coverage)
    committed = Commitment(d("12/11/2011"), coverage, agreement_number(key, fields))
    now_known = [
        InsurabilityPeriod(d("1/1/2011"), d("31/10/2011"), STATUS),
        InsurabilityPeriod(d("1/11/2011"), d("31/12/2011"), preferential),
    ]

    def line(**changes: object) -> TarificationLine:
        base: dict[str, object] = {
            "niss": "85073003328",
            "provider_inami": "51001511001",
            "dispensing": d("12/11/2011"),
            "status": STATUS,
            "basis": Basis.CONSULTED,
            "commitment": committed,
        }
        base.update(changes)
        return TarificationLine(**base)  # type: ignore[arg-type]

    def verdict(given: TarificationLine, known: list[InsurabilityPeriod] = now_known) -> tuple[Verdict, str]:
        decision = validate_line(known, given, insurer_code="300", key=key)
        return decision.verdict, decision.reason

    assert verdict(line(status=preferential)) == (Verdict.PAID_BASIC_PRINCIPLE, "")  # the same data: paid
    assert verdict(line(status=preferential, commitment=None)) == (Verdict.PAID_BASIC_PRINCIPLE, "")
    assert verdict(line()) == (Verdict.PAID_COMMITMENT, "")  # discordance, genuine proof covering the day
    reused = line(basis=Basis.REUSED, dispensing=d("10/12/2011"))
    assert verdict(reused) == (Verdict.PAID_COMMITMENT, "")
    assert verdict(line(basis=Basis.REUSED, dispensing=d("13/12/2011"))) == (
        Verdict.REJECTED,
        "OUTSIDE_COVERAGE",
    )
    assert verdict(line(dispensing=d("20/11/2011"))) == (Verdict.REJECTED, "NOT_CONSULTED_AT_DISPENSING")
    number = committed.agreement_number
    other = number[:-1] + ("Q" if number[-1] != "Q" else "R")
    forged = Commitment(committed.dispensing, committed.coverage, other)
    assert verdict(line(commitment=forged)) == (Verdict.REJECTED, "AGREEMENT_NOT_GENUINE")
    assert verdict(line(provider_inami="51001610001")) == (Verdict.REJECTED, "AGREEMENT_NOT_GENUINE")
    billed_otherwise = InsurabilityStatus("110", "110", maximum_billing=True)
    assert verdict(line(status=billed_otherwise)) == (Verdict.REJECTED, "NOT_THE_COMMITTED_STATUS")
    assert verdict(line(commitment=None)) == (Verdict.REJECTED, "NO_COMMITMENT")
    assert verdict(line(commitment=None), []) == (Verdict.REJECTED, "NO_RIGHT")
    # No right any more on the insurer's side, but the commitment holds (the guarantee of §5).
    assert verdict(line(), []) == (Verdict.PAID_COMMITMENT, "")
