"""The twelve worked scenarios of SPEC §5 (seed 000 §1.3.2.3 and §5.2), replayed event by event.

Each story is a list of steps; a step is one event processed on its own date (a notification on its
contact date, a contact or a 102771 on the date the patient handed it in, a year end on 31 Dec) and
the *complete* expected state afterwards: every holding (holder, procedure, start-end, status), every
payment (beneficiary, year, kind, recovered) and the messages that step emitted. Prior-year state the
stories assume (M1's DMG in 2011) is built by replaying events too, and checked the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import pytest

from oa_node.rules import (
    Decision,
    DmgFile,
    PatientProfile,
    RuleContext,
    notify,
    process_year_end,
    register_contact,
    register_paper_attestation,
)
from oa_node.rules.testing import d, describe_holding, describe_message, describe_payment, inami_number

A = inami_number(10001)
B = inami_number(10002)
M1 = inami_number(20001)
M2 = inami_number(20002)
NAMES = {A: "A", B: "B", M1: "M1", M2: "M2"}
PATIENT = "75031512345"
CONSULTATION = "101010"


@dataclass(frozen=True)
class Notify:
    provider: str
    on: str


@dataclass(frozen=True)
class Contact:
    provider: str
    on: str
    submitted: str


@dataclass(frozen=True)
class Attest:
    provider: str
    on: str
    submitted: str


@dataclass(frozen=True)
class YearEnd:
    year: int


Event = Notify | Contact | Attest | YearEnd


@dataclass(frozen=True)
class Step:
    event: Event
    holdings: tuple[str, ...]
    payments: tuple[str, ...]
    messages: tuple[str, ...] = ()
    answer: str | None = None
    attestation: str | None = None


@dataclass(frozen=True)
class Story:
    name: str
    enrolled: frozenset[str]
    steps: list[Step] = field(default_factory=list)


def apply(file: DmgFile, event: Event, ctx: RuleContext, index: int) -> Decision:
    if isinstance(event, Notify):
        return notify(
            file,
            provider=event.provider,
            contact_date=d(event.on),
            code=CONSULTATION,
            requester_reference=f"ref-{index}",
            processing_date=d(event.on),
            ctx=ctx,
        )
    if isinstance(event, Contact):
        return register_contact(
            file,
            provider=event.provider,
            contact_date=d(event.on),
            code=CONSULTATION,
            submission_date=d(event.submitted),
            ctx=ctx,
        )
    if isinstance(event, Attest):
        return register_paper_attestation(
            file,
            provider=event.provider,
            attestation_date=d(event.on),
            submission_date=d(event.submitted),
            ctx=ctx,
        )
    return process_year_end(file, year=event.year, processing_date=date(event.year, 12, 31), ctx=ctx)


EDMG_2011_M1 = Step(  # "M1 held the patient's DMG electronically in 2011" (SPEC §5)
    Notify(M1, "15.03.2011"),
    holdings=("M1 ELECTRONIC 15.03.2011-31.12.2013 ACTIVE",),
    payments=("M1 2011 NOTIFICATION",),
    answer="WITH_PAYMENT 15.03.2011-31.12.2013",
)

STORIES = [
    Story(
        "S1 opening by A, prolonged by the first contact of 2015",
        frozenset({A}),
        [
            Step(
                Notify(A, "23.07.2014"),
                holdings=("A ELECTRONIC 23.07.2014-31.12.2016 ACTIVE",),
                payments=("A 2014 NOTIFICATION",),
                answer="WITH_PAYMENT 23.07.2014-31.12.2016",
            ),
            Step(  # the notified contact itself, invoiced later: A did not hold the DMG in 2013
                Contact(A, "23.07.2014", submitted="04.08.2014"),
                holdings=("A ELECTRONIC 23.07.2014-31.12.2016 ACTIVE",),
                payments=("A 2014 NOTIFICATION",),
            ),
            Step(
                Contact(A, "23.05.2015", submitted="23.05.2015"),
                holdings=("A ELECTRONIC 23.07.2014-31.12.2017 ACTIVE",),
                payments=("A 2014 NOTIFICATION", "A 2015 ACCELERATED_PROLONGATION"),
                messages=("EXTENSION A until 31.12.2017, contact 23.05.2015 by A",),
            ),
            Step(  # a second contact of 2015: no second fee, no second message
                Contact(A, "12.10.2015", submitted="20.10.2015"),
                holdings=("A ELECTRONIC 23.07.2014-31.12.2017 ACTIVE",),
                payments=("A 2014 NOTIFICATION", "A 2015 ACCELERATED_PROLONGATION"),
            ),
        ],
    ),
    Story(
        "S2 takeover by B before any fee of 2014",
        frozenset({A, B}),
        [
            Step(
                Notify(A, "22.08.2013"),
                holdings=("A ELECTRONIC 22.08.2013-31.12.2015 ACTIVE",),
                payments=("A 2013 NOTIFICATION",),
                answer="WITH_PAYMENT 22.08.2013-31.12.2015",
            ),
            Step(
                Notify(B, "04.03.2014"),
                holdings=(
                    "A ELECTRONIC 22.08.2013-03.03.2014 CLOSED",
                    "B ELECTRONIC 04.03.2014-31.12.2016 ACTIVE",
                ),
                payments=("A 2013 NOTIFICATION", "B 2014 NOTIFICATION"),
                messages=("CLOSURE A end 03.03.2014, B from 04.03.2014",),
                answer="WITH_PAYMENT 04.03.2014-31.12.2016",
            ),
            Step(
                Contact(B, "23.05.2015", submitted="23.05.2015"),
                holdings=(
                    "A ELECTRONIC 22.08.2013-03.03.2014 CLOSED",
                    "B ELECTRONIC 04.03.2014-31.12.2017 ACTIVE",
                ),
                payments=("A 2013 NOTIFICATION", "B 2014 NOTIFICATION", "B 2015 ACCELERATED_PROLONGATION"),
                messages=("EXTENSION B until 31.12.2017, contact 23.05.2015 by B",),
            ),
        ],
    ),
    Story(
        "S3 takeover by B after A's prolongation fee of 2014",
        frozenset({A, B}),
        [
            Step(
                Notify(A, "22.08.2013"),
                holdings=("A ELECTRONIC 22.08.2013-31.12.2015 ACTIVE",),
                payments=("A 2013 NOTIFICATION",),
                answer="WITH_PAYMENT 22.08.2013-31.12.2015",
            ),
            Step(
                Contact(A, "15.01.2014", submitted="20.01.2014"),
                holdings=("A ELECTRONIC 22.08.2013-31.12.2016 ACTIVE",),
                payments=("A 2013 NOTIFICATION", "A 2014 ACCELERATED_PROLONGATION"),
                messages=("EXTENSION A until 31.12.2016, contact 15.01.2014 by A",),
            ),
            Step(
                Notify(B, "10.09.2014"),
                holdings=(
                    "A ELECTRONIC 22.08.2013-09.09.2014 CLOSED",
                    "B ELECTRONIC 10.09.2014-31.12.2016 ACTIVE",
                ),
                payments=("A 2013 NOTIFICATION", "A 2014 ACCELERATED_PROLONGATION"),
                messages=("CLOSURE A end 09.09.2014, B from 10.09.2014",),
                answer="WITHOUT_PAYMENT 10.09.2014-31.12.2016",
            ),
            Step(
                Contact(B, "23.05.2015", submitted="23.05.2015"),
                holdings=(
                    "A ELECTRONIC 22.08.2013-09.09.2014 CLOSED",
                    "B ELECTRONIC 10.09.2014-31.12.2017 ACTIVE",
                ),
                payments=(
                    "A 2013 NOTIFICATION",
                    "A 2014 ACCELERATED_PROLONGATION",
                    "B 2015 ACCELERATED_PROLONGATION",
                ),
                messages=("EXTENSION B until 31.12.2017, contact 23.05.2015 by B",),
            ),
        ],
    ),
    Story(
        "5.2.1.1 M1 notifies, then M2 notifies",
        frozenset({M1, M2}),
        [
            Step(
                Notify(M1, "01.07.2012"),
                holdings=("M1 ELECTRONIC 01.07.2012-31.12.2014 ACTIVE",),
                payments=("M1 2012 NOTIFICATION",),
                answer="WITH_PAYMENT 01.07.2012-31.12.2014",
            ),
            Step(
                Notify(M2, "01.09.2012"),
                holdings=(
                    "M1 ELECTRONIC 01.07.2012-31.08.2012 CLOSED",
                    "M2 ELECTRONIC 01.09.2012-31.12.2014 ACTIVE",
                ),
                payments=("M1 2012 NOTIFICATION",),
                messages=("CLOSURE M1 end 31.08.2012, M2 from 01.09.2012",),
                answer="WITHOUT_PAYMENT 01.09.2012-31.12.2014",
            ),
        ],
    ),
    Story(
        "5.2.1.2.1 M1's contact handed in before M2's notification",
        frozenset({M1, M2}),
        [
            EDMG_2011_M1,
            Step(
                Contact(M1, "01.07.2012", submitted="01.08.2012"),
                holdings=("M1 ELECTRONIC 15.03.2011-31.12.2014 ACTIVE",),
                payments=("M1 2011 NOTIFICATION", "M1 2012 ACCELERATED_PROLONGATION"),
                messages=("EXTENSION M1 until 31.12.2014, contact 01.07.2012 by M1",),
            ),
            Step(
                Notify(M2, "01.09.2012"),
                holdings=(
                    "M1 ELECTRONIC 15.03.2011-31.08.2012 CLOSED",
                    "M2 ELECTRONIC 01.09.2012-31.12.2014 ACTIVE",
                ),
                payments=("M1 2011 NOTIFICATION", "M1 2012 ACCELERATED_PROLONGATION"),
                messages=("CLOSURE M1 end 31.08.2012, M2 from 01.09.2012",),
                answer="WITHOUT_PAYMENT 01.09.2012-31.12.2014",
            ),
        ],
    ),
    Story(
        "5.2.1.2.2 M1's contact handed in after M2's notification",
        frozenset({M1, M2}),
        [
            EDMG_2011_M1,
            Step(
                Notify(M2, "01.09.2012"),
                holdings=(
                    "M1 ELECTRONIC 15.03.2011-31.08.2012 CLOSED",
                    "M2 ELECTRONIC 01.09.2012-31.12.2014 ACTIVE",
                ),
                payments=("M1 2011 NOTIFICATION", "M2 2012 NOTIFICATION"),
                messages=("CLOSURE M1 end 31.08.2012, M2 from 01.09.2012",),
                answer="WITH_PAYMENT 01.09.2012-31.12.2014",
            ),
            Step(  # first contact of the year wins the fee; the rights stay as they are
                Contact(M1, "01.07.2012", submitted="01.11.2012"),
                holdings=(
                    "M1 ELECTRONIC 15.03.2011-31.08.2012 CLOSED",
                    "M2 ELECTRONIC 01.09.2012-31.12.2014 ACTIVE",
                ),
                payments=(
                    "M1 2011 NOTIFICATION",
                    "M2 2012 NOTIFICATION recovered",
                    "M1 2012 ACCELERATED_PROLONGATION",
                ),
                # the paid prolongation is told to M1 (seed 000 §3.3.6.1.2), his right as it stays
                messages=("EXTENSION M1 until 31.08.2012, contact 01.07.2012 by M1",),
            ),
        ],
    ),
    Story(
        "5.2.2.1 M1 notifies, then M2 attests 102771 on paper",
        frozenset({M1}),
        [
            Step(
                Notify(M1, "01.07.2012"),
                holdings=("M1 ELECTRONIC 01.07.2012-31.12.2014 ACTIVE",),
                payments=("M1 2012 NOTIFICATION",),
                answer="WITH_PAYMENT 01.07.2012-31.12.2014",
            ),
            Step(
                Attest(M2, "01.09.2012", submitted="01.10.2012"),
                holdings=("M1 ELECTRONIC 01.07.2012-31.12.2014 ACTIVE",),
                payments=("M1 2012 NOTIFICATION",),
                attestation="REFUSED DMG_ALREADY_PAID",
            ),
        ],
    ),
    Story(
        "5.2.2.2.1 M1's contact handed in before M2's 102771",
        frozenset({M1}),
        [
            EDMG_2011_M1,
            Step(
                Contact(M1, "01.07.2012", submitted="01.10.2012"),
                holdings=("M1 ELECTRONIC 15.03.2011-31.12.2014 ACTIVE",),
                payments=("M1 2011 NOTIFICATION", "M1 2012 ACCELERATED_PROLONGATION"),
                messages=("EXTENSION M1 until 31.12.2014, contact 01.07.2012 by M1",),
            ),
            Step(
                Attest(M2, "01.09.2012", submitted="01.11.2012"),
                holdings=("M1 ELECTRONIC 15.03.2011-31.12.2014 ACTIVE",),
                payments=("M1 2011 NOTIFICATION", "M1 2012 ACCELERATED_PROLONGATION"),
                attestation="REFUSED DMG_ALREADY_PAID",
            ),
        ],
    ),
    Story(
        "5.2.2.2.2 M2's 102771 handed in before M1's contact",
        frozenset({M1}),
        [
            EDMG_2011_M1,
            Step(
                Attest(M2, "01.09.2012", submitted="01.10.2012"),
                holdings=(
                    "M1 ELECTRONIC 15.03.2011-31.08.2012 CLOSED",
                    "M2 PAPER 01.09.2012-31.12.2014 ACTIVE",
                ),
                payments=("M1 2011 NOTIFICATION", "M2 2012 PAPER_ATTESTATION"),
                messages=("CLOSURE M1 end 31.08.2012, M2 from 01.09.2012",),
                attestation="ACCEPTED",
            ),
            Step(  # M1 paid, M2's fee recovered, M2's right cancelled, M1 reopened and prolonged
                Contact(M1, "01.07.2012", submitted="01.11.2012"),
                holdings=(
                    "M1 ELECTRONIC 15.03.2011-31.12.2014 ACTIVE reopened",
                    "M2 PAPER 01.09.2012-31.12.2014 CANCELLED",
                ),
                payments=(
                    "M1 2011 NOTIFICATION",
                    "M2 2012 PAPER_ATTESTATION recovered",
                    "M1 2012 ACCELERATED_PROLONGATION",
                ),
                messages=("EXTENSION M1 until 31.12.2014, contact 01.07.2012 by M1",),
            ),
        ],
    ),
    Story(
        "5.2.3.1.1 M1's 102771 handed in before M2's notification",
        frozenset({M2}),
        [
            Step(
                Attest(M1, "01.07.2012", submitted="01.08.2012"),
                holdings=("M1 PAPER 01.07.2012-31.12.2014 ACTIVE",),
                payments=("M1 2012 PAPER_ATTESTATION",),
                attestation="ACCEPTED",
            ),
            Step(  # M1 is not enrolled: closed without a closure message
                Notify(M2, "01.09.2012"),
                holdings=(
                    "M1 PAPER 01.07.2012-31.08.2012 CLOSED",
                    "M2 ELECTRONIC 01.09.2012-31.12.2014 ACTIVE",
                ),
                payments=("M1 2012 PAPER_ATTESTATION",),
                answer="WITHOUT_PAYMENT 01.09.2012-31.12.2014",
            ),
        ],
    ),
    Story(
        "5.2.3.1.2 M1's 102771 handed in after M2's notification",
        frozenset({M2}),
        [
            Step(
                Notify(M2, "01.09.2012"),
                holdings=("M2 ELECTRONIC 01.09.2012-31.12.2014 ACTIVE",),
                payments=("M2 2012 NOTIFICATION",),
                answer="WITH_PAYMENT 01.09.2012-31.12.2014",
            ),
            Step(
                Attest(M1, "01.07.2012", submitted="01.10.2012"),
                holdings=(
                    "M2 ELECTRONIC 01.09.2012-31.12.2014 ACTIVE",
                    "M1 PAPER 01.07.2012-31.08.2012 CLOSED",
                ),
                payments=("M2 2012 NOTIFICATION recovered", "M1 2012 PAPER_ATTESTATION"),
                attestation="ACCEPTED",
            ),
        ],
    ),
    Story(
        "5.2.3.2 M1 eligible for an administrative prolongation, M2 notifies",
        frozenset({M2}),
        [
            Step(  # "M1 attested 102771 in 2011" (SPEC §5)
                Attest(M1, "15.03.2011", submitted="01.04.2011"),
                holdings=("M1 PAPER 15.03.2011-31.12.2013 ACTIVE",),
                payments=("M1 2011 PAPER_ATTESTATION",),
                attestation="ACCEPTED",
            ),
            Step(  # a paper holder: the conditions are met, the administrative prolongation paid (issue 14)
                Contact(M1, "01.07.2012", submitted="05.07.2012"),
                holdings=("M1 PAPER 15.03.2011-31.12.2014 ACTIVE",),
                payments=("M1 2011 PAPER_ATTESTATION", "M1 2012 ADMINISTRATIVE_PROLONGATION"),
            ),
            Step(  # the notification has priority: M1's administrative prolongation is recovered
                Notify(M2, "01.09.2012"),
                holdings=(
                    "M1 PAPER 15.03.2011-31.08.2012 CLOSED",
                    "M2 ELECTRONIC 01.09.2012-31.12.2014 ACTIVE",
                ),
                payments=(
                    "M1 2011 PAPER_ATTESTATION",
                    "M1 2012 ADMINISTRATIVE_PROLONGATION recovered",
                    "M2 2012 NOTIFICATION",
                ),
                answer="WITH_PAYMENT 01.09.2012-31.12.2014",
            ),
            Step(  # "Pas de prolongation administrative chez M1": the year end pays none again
                YearEnd(2012),
                holdings=(
                    "M1 PAPER 15.03.2011-31.08.2012 CLOSED",
                    "M2 ELECTRONIC 01.09.2012-31.12.2014 ACTIVE",
                ),
                payments=(
                    "M1 2011 PAPER_ATTESTATION",
                    "M1 2012 ADMINISTRATIVE_PROLONGATION recovered",
                    "M2 2012 NOTIFICATION",
                ),
            ),
        ],
    ),
]


def test_all_twelve_scenarios_are_covered() -> None:
    ids = [story.name.split(" ")[0] for story in STORIES]
    assert ids == [
        "S1",
        "S2",
        "S3",
        "5.2.1.1",
        "5.2.1.2.1",
        "5.2.1.2.2",
        "5.2.2.1",
        "5.2.2.2.1",
        "5.2.2.2.2",
        "5.2.3.1.1",
        "5.2.3.1.2",
        "5.2.3.2",
    ]


@pytest.mark.parametrize("story", STORIES, ids=[s.name.split(" ")[0] for s in STORIES])
def test_worked_scenario(story: Story) -> None:
    ctx = RuleContext(patient=PatientProfile(birth_date=date(1975, 3, 15)), enrolled=story.enrolled)
    file = DmgFile(patient=PATIENT)
    for index, step in enumerate(story.steps):
        decision = apply(file, step.event, ctx, index)
        file = decision.file
        where = f"{story.name}, step {index}: {step.event}"
        assert tuple(describe_holding(h, NAMES) for h in file.holdings) == step.holdings, where
        assert tuple(describe_payment(p, NAMES) for p in file.payments) == step.payments, where
        assert tuple(describe_message(m, NAMES) for m in decision.messages) == step.messages, where
        answer = decision.answer
        rendered_answer = (
            None
            if answer is None
            else f"{answer.indicator.value} {answer.start:%d.%m.%Y}-{answer.end:%d.%m.%Y}"
        )
        assert rendered_answer == step.answer, where
        attestation = decision.attestation
        rendered_attestation = (
            None
            if attestation is None
            else " ".join(
                [attestation.outcome.value]
                + ([attestation.refusal_reason.value] if attestation.refusal_reason else [])
            )
        )
        assert rendered_attestation == step.attestation, where
