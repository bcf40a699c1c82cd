"""The holder moves a decision carries (what the holder-change feed publishes), each with the last day of the
holding (the DMG relation ends with it, issue 14 correction 5): an opening, a takeover by a notification or
a 102771, a paper holding cancelled with its payment (its predecessor holds it again to its own end), a
prolongation (same holder, a later end); nothing for a replay or a refusal."""

from __future__ import annotations

from datetime import date

from oa_node.rules import (
    Decision,
    DmgFile,
    HolderMove,
    PatientProfile,
    RuleContext,
    notify,
    register_contact,
    register_paper_attestation,
)
from oa_node.rules.testing import d, inami_number

A = inami_number(10001)
B = inami_number(10002)
M1 = inami_number(20001)
M2 = inami_number(20002)
PATIENT = "75031512345"
CODE = "101010"


def ctx(*enrolled: str) -> RuleContext:
    return RuleContext(patient=PatientProfile(birth_date=date(1975, 3, 15)), enrolled=frozenset(enrolled))


def notified(file: DmgFile, provider: str, on: str, reference: str, rules: RuleContext) -> Decision:
    return notify(
        file,
        provider=provider,
        contact_date=d(on),
        code=CODE,
        requester_reference=reference,
        processing_date=d(on),
        ctx=rules,
    )


def test_an_opening_then_a_takeover_by_notification() -> None:
    rules = ctx(A, B)
    opening = notified(DmgFile(patient=PATIENT), A, "10.03.2024", "a-1", rules)
    assert opening.holder_moves == (HolderMove(PATIENT, A, None, d("10.03.2024"), d("31.12.2026")),)
    takeover = notified(opening.file, B, "14.03.2024", "b-1", rules)
    assert takeover.holder_moves == (HolderMove(PATIENT, B, A, d("14.03.2024"), d("31.12.2026")),)
    replay = notified(takeover.file, B, "14.03.2024", "b-1", rules)
    assert replay.replayed
    assert replay.holder_moves == ()


def test_a_notification_after_the_previous_right_ended_has_no_previous_holder() -> None:
    rules = ctx(A, B)
    opening = notified(DmgFile(patient=PATIENT), A, "10.03.2020", "a-1", rules)  # right to 31.12.2022
    later = notified(opening.file, B, "05.01.2024", "b-1", rules)
    assert later.holder_moves == (HolderMove(PATIENT, B, None, d("05.01.2024"), d("31.12.2026")),)


def test_a_paper_takeover_then_its_cancellation_give_the_dmg_back() -> None:
    """SPEC §5.2.2.2.2: M2's 102771 takes the DMG from M1; M1's earlier contact wins the year, M2's fee is
    recovered and his paper right cancelled: M1 holds it again from M2's start."""
    rules = ctx(M1)
    file = notified(DmgFile(patient=PATIENT), M1, "15.03.2011", "m1", rules).file
    paper = register_paper_attestation(
        file, provider=M2, attestation_date=d("01.09.2012"), submission_date=d("01.10.2012"), ctx=rules
    )
    assert paper.holder_moves == (HolderMove(PATIENT, M2, M1, d("01.09.2012"), d("31.12.2014")),)
    contact = register_contact(
        paper.file,
        provider=M1,
        contact_date=d("01.07.2012"),
        code=CODE,
        submission_date=d("01.11.2012"),
        ctx=rules,
    )
    assert [h.status.value for h in contact.holdings_cancelled] == ["CANCELLED"]
    # M1 holds it again from M2's start, to the end of his reopened (and prolonged) holding.
    assert contact.holder_moves == (HolderMove(PATIENT, M1, M2, d("01.09.2012"), d("31.12.2014")),)


def test_a_refused_attestation_moves_nobody_and_a_prolongation_moves_the_end() -> None:
    rules = ctx(M1)
    file = notified(DmgFile(patient=PATIENT), M1, "15.03.2011", "m1", rules).file
    refused = register_paper_attestation(  # M1 is enrolled: no paper in parallel
        file, provider=M1, attestation_date=d("01.09.2012"), submission_date=d("01.10.2012"), ctx=rules
    )
    assert refused.attestation is not None
    assert refused.holder_moves == ()
    prolonged = register_contact(
        file, provider=M1, contact_date=d("01.07.2012"), code=CODE, submission_date=d("01.08.2012"), ctx=rules
    )
    assert prolonged.payments_created
    # The same holder, from the start of his holding, to its new end (31.12.2013 -> 31.12.2014).
    assert prolonged.holder_moves == (HolderMove(PATIENT, M1, M1, d("15.03.2011"), d("31.12.2014")),)


def test_a_holding_that_ends_takes_the_relation_with_it() -> None:
    """The relation ends with the holding: an opening carries the end of its right, and nothing prolongs
    it without a move saying so; a takeover ends the previous holder's the day before (eHealth's plan)."""
    rules = ctx(A)
    opening = notified(DmgFile(patient=PATIENT), A, "10.03.2020", "a-1", rules)
    (move,) = opening.holder_moves
    assert move.end == d("31.12.2022")  # no contact in 2021 or 2022: the DMG and its relation end then
