"""Property: whatever the events and their order, the DMG file stays coherent.

Random notifications, contacts, 102771 attestations and year ends by enrolled GPs, a paper GP, a
group member and a GP in training are processed in processing-date order (rejections skipped). After
every step: at most one unrecovered fee per patient-year, no two live (let alone ACTIVE) holdings
overlap, every recovery points at the fee that won, and a notify answer agrees with the fees.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from oa_node.rules import (
    Decision,
    DmgFile,
    DmgRuleError,
    HoldingStatus,
    PatientProfile,
    PaymentIndicator,
    PaymentKind,
    RuleContext,
    notify,
    process_year_end,
    register_contact,
    register_paper_attestation,
)
from oa_node.rules.testing import inami_number

E1 = inami_number(40001)
E2 = inami_number(40002)
PAPER_GP = inami_number(40003)
PAPER_GP2 = inami_number(40006)
MEMBER = inami_number(40004)
TRAINEE = inami_number(40005, competence="005")
PROVIDERS = [E1, E2, PAPER_GP, PAPER_GP2, MEMBER, TRAINEE]
CTX = RuleContext(
    patient=PatientProfile(birth_date=date(1960, 5, 20), chronic_status_years=frozenset({2016, 2017})),
    enrolled=frozenset({E1, E2}),
    group_of={E1: "G1", MEMBER: "G1", PAPER_GP: "G2", PAPER_GP2: "G2"},
    supervisor_of={TRAINEE: E2},
)
START = date(2015, 1, 1)
DAYS = 2 * 365


@dataclass(frozen=True)
class Event:
    kind: str
    provider: str
    day: date
    delay: int

    @property
    def processing(self) -> date:
        if self.kind == "year_end":
            return date(self.day.year, 12, 31) + timedelta(days=self.delay)
        return self.day + timedelta(days=self.delay)


events = st.builds(
    Event,
    kind=st.sampled_from(
        ["notify", "notify", "contact", "contact", "contact", "attest", "attest", "year_end"]
    ),
    provider=st.sampled_from(PROVIDERS),
    day=st.integers(0, DAYS).map(lambda n: START + timedelta(days=n)),
    delay=st.integers(0, 150),
)


def apply(file: DmgFile, event: Event, index: int) -> Decision:
    if event.kind == "notify":
        return notify(
            file,
            provider=event.provider,
            contact_date=event.day,
            code="101010",
            requester_reference=f"r{index}",
            processing_date=event.day + timedelta(days=event.delay % 9),
            ctx=CTX,
            supervisor=E2 if event.provider == TRAINEE else None,
        )
    if event.kind == "contact":
        return register_contact(
            file,
            provider=event.provider,
            contact_date=event.day,
            code="103132",
            submission_date=event.processing,
            ctx=CTX,
        )
    if event.kind == "attest":
        return register_paper_attestation(
            file,
            provider=event.provider,
            attestation_date=event.day,
            submission_date=event.processing,
            ctx=CTX,
        )
    return process_year_end(file, year=event.day.year, processing_date=event.processing, ctx=CTX)


def check(file: DmgFile, decision: Decision) -> None:
    unrecovered = Counter(p.year for p in file.payments if not p.recovered)
    assert all(count == 1 for count in unrecovered.values()), file.payments

    live = file.live_holdings()
    for holding in live:
        assert holding.start <= holding.end <= holding.right_end
    for earlier, later in itertools.pairwise(live):
        assert earlier.end < later.start, (earlier, later)
    active = [h for h in live if h.status is HoldingStatus.ACTIVE]
    for earlier, later in itertools.pairwise(active):
        assert earlier.end < later.start

    references = {p.reference for p in file.payments}
    assert len(references) == len(file.payments)
    for payment in file.payments:
        if payment.recovered:
            assert payment.recovered_for in references
    for holding in file.holdings:
        if holding.status is HoldingStatus.CANCELLED:
            owner = next(p for p in file.payments if p.reference == holding.payment_reference)
            assert owner.kind is PaymentKind.PAPER_ATTESTATION
            assert owner.recovered

    if decision.answer is not None and not decision.replayed:
        created = [p for p in decision.payments_created if p.kind is PaymentKind.NOTIFICATION]
        assert (decision.answer.indicator is PaymentIndicator.WITH_PAYMENT) == bool(created)


@settings(max_examples=300, deadline=None)
@given(st.lists(events, min_size=1, max_size=25))
def test_random_event_sequences_keep_the_file_coherent(sequence: list[Event]) -> None:
    file = DmgFile(patient="60052012345")
    ordered = sorted(enumerate(sequence), key=lambda pair: (pair[1].processing, pair[0]))
    for index, event in ordered:
        try:
            decision = apply(file, event, index)
        except DmgRuleError:
            continue
        file = decision.file
        check(file, decision)


@settings(max_examples=100, deadline=None)
@given(st.lists(events, min_size=1, max_size=15))
def test_replaying_the_same_events_gives_the_same_file(sequence: list[Event]) -> None:
    def run() -> DmgFile:
        file = DmgFile(patient="60052012345")
        for index, event in sorted(enumerate(sequence), key=lambda pair: (pair[1].processing, pair[0])):
            try:
                file = apply(file, event, index).file
            except DmgRuleError:
                continue
        return file

    assert run() == run()
