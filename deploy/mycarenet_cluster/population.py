"""A synthetic population that looks like Belgium, as plain data (no I/O), deterministic for a seed.

Members split over the seven insurers by realistic shares, valid NISS (births after 2000 and bis numbers
included), GPs (enrolled or not, in training with a supervisor, a group practice, a medical house),
specialists, dentists, physiotherapists, pharmacies with their pharmacists, therapeutic relations and DMG
histories over the last three years, insurability periods with their statuses and care statuses
(:func:`statuses`), and newborns whose NISS the pharmacist does not know yet (seed 003 §4.3: asked by
mutuality + member number).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from mycarenet_core.identifiers import Profession, make_inami, make_niss

# Approximate shares of the Belgian population per insurer (members, 2020s).
INSURER_SHARES: dict[str, float] = {
    "100": 0.405,
    "200": 0.055,
    "300": 0.255,
    "400": 0.055,
    "500": 0.205,
    "600": 0.015,
    "900": 0.010,
}
FIRST_NAMES = [
    "Marie",
    "Anne",
    "Sofie",
    "Emma",
    "Louise",
    "Julie",
    "Sarah",
    "Laura",
    "Lisa",
    "Nathalie",
    "Elise",
    "Hanne",
    "Chloé",
    "Lucie",
    "Fatima",
    "Olivia",
    "Jan",
    "Luc",
    "Pieter",
    "Thomas",
    "Lucas",
    "Noah",
    "Mohamed",
    "Louis",
    "Arthur",
    "Jules",
    "Bart",
    "Koen",
    "Marc",
    "Philippe",
    "Kevin",
    "Adam",
]
LAST_NAMES = [
    "Peeters",
    "Janssens",
    "Maes",
    "Jacobs",
    "Mertens",
    "Willems",
    "Claes",
    "Goossens",
    "Wouters",
    "De",
    "Smet",
    "Dubois",
    "Lambert",
    "Dupont",
    "Martin",
    "Simon",
    "Laurent",
    "Leclercq",
    "Dumont",
    "Renard",
    "Lejeune",
    "Vermeulen",
    "Hermans",
    "Michiels",
    "El",
    "Amrani",
    "Van",
    "Damme",
]
CONTACT_CODES = ("101010", "101032", "101076", "103110", "103132", "104110")


@dataclass
class Provider:
    inami: str
    first_name: str
    last_name: str
    niss: str
    role: str  # "gp", "trainee", "specialist", "dentist", "pharmacist", "physiotherapist"
    enrolled: bool = False
    supervisor: str = ""
    iban: str = ""


@dataclass
class Organisation:
    inami: str
    kind: str  # "medical_house", "group_practice" or "pharmacy"
    name: str
    members: list[str] = field(default_factory=list)


@dataclass
class Affiliation:
    insurer: str
    registration_number: str
    start: dt.date
    end: dt.date | None = None


@dataclass
class InsurabilitySpan:
    """One insurability period at the member's insurer (seed 003 §3.4.1): CT1/CT2 and social statuses."""

    start: dt.date
    end: dt.date
    ct1: str = "110"
    ct2: str = "110"
    preferential: bool = False
    maximum_billing: bool = False


@dataclass
class CareSpan:
    """A care status by period: CHRONIC_CONDITION, PALLIATIVE or HOSPITALISED (end None: still)."""

    kind: str
    start: dt.date
    end: dt.date | None = None


@dataclass
class Member:
    niss: str
    first_name: str
    last_name: str
    birth_date: dt.date
    sex: str  # "M", "F", "U"
    affiliations: list[Affiliation]
    chronic: bool = False
    medical_house: str = ""
    usual_gp: str = ""
    insurability: list[InsurabilitySpan] = field(default_factory=list)
    care: list[CareSpan] = field(default_factory=list)


@dataclass
class DmgEvent:
    """One event of a DMG history, replayed through the insurer's own services."""

    kind: str  # "notify", "contact", "attest"
    niss: str
    insurer: str
    provider: str
    date: dt.date
    submitted: dt.date


@dataclass
class Population:
    providers: list[Provider]
    organisations: list[Organisation]
    members: list[Member]
    history: list[DmgEvent]
    demo: dict[str, str]
    bulk: int = 0  # further members, streamed by :func:`bulk_members` (no history, no relations)
    newborns: list[str] = field(default_factory=list)
    """NISS of the members born in the last weeks, whose NISS the pharmacy software does not know yet (seed
    003 §4.3): they are asked for by mutuality + member number."""


def _iban(rng: random.Random) -> str:
    """A Belgian IBAN with valid ISO 13616 check digits."""
    bank = rng.randrange(10**9, 10**10)
    account = f"{bank:010d}{bank % 97 or 97:02d}"
    check = 98 - int(account + "111400") % 97  # "BE" → 11 14, then "00"
    return f"BE{check:02d}{account}"


def _members(rng: random.Random, size: int, today: dt.date) -> Iterator[Member]:
    codes = list(INSURER_SHARES)
    weights = [INSURER_SHARES[c] for c in codes]
    counters = dict.fromkeys(codes, 0)
    used: set[str] = set()
    for _ in range(size):
        while True:
            birth = today - dt.timedelta(days=rng.randrange(0, 95 * 365))
            seq = rng.randrange(1, 500)  # 500 and up are left to bulk_members
            bis = rng.choices((0, 20, 40), (0.994, 0.002, 0.004))[0]
            niss = make_niss(birth, seq, bis=bis)
            if niss not in used:
                used.add(niss)
                break
        sex = "U" if bis == 20 else ("M" if seq % 2 else "F")
        insurer = rng.choices(codes, weights)[0]
        counters[insurer] += 1
        start = max(birth, dt.date(1990, 1, 1))
        affiliations = [Affiliation(insurer, f"{counters[insurer]:011d}", start)]
        if rng.random() < 0.03 and (today - start).days > 800:
            # Changed mutuality about a year ago: the earlier period stays with the former insurer.
            other = rng.choice([c for c in codes if c != insurer])
            counters[other] += 1
            switch = dt.date(today.year - 1, 1, 1)
            affiliations = [
                Affiliation(other, f"{counters[other]:011d}", start, switch - dt.timedelta(days=1)),
                Affiliation(insurer, f"{counters[insurer]:011d}", switch),
            ]
        age = (today - birth).days // 365
        yield Member(
            niss=niss,
            first_name=rng.choice(FIRST_NAMES),
            last_name=rng.choice(LAST_NAMES),
            birth_date=birth,
            sex=sex,
            affiliations=affiliations,
            chronic=45 <= age <= 74 and rng.random() < 0.2,
        )


PREFERENTIAL_CT = ("111", "111")  # the preferential reimbursement's codes (intervention majorée)


def statuses(rng: random.Random, member: Member, today: dt.date) -> None:
    """Give a detailed member realistic insurability and care statuses (seed 003 §3.4.1, §5.2; SPEC §10.1):
    yearly periods at their last insurer from two years back to the end of this year (the next year too for
    most: rights are established ahead), so adjacent periods with the same status follow one another; a
    preferential rate for some (changing mid-year for a few), the maximum billing reached mid-year for a few;
    the chronic condition, palliative care and hospital stays as care statuses."""
    current = member.affiliations[-1]
    first = max(current.start, dt.date(today.year - 2, 1, 1))
    last_year = today.year + (1 if rng.random() < 0.9 else 0)
    last = min(current.end or dt.date(last_year, 12, 31), dt.date(last_year, 12, 31))
    preferential = rng.random() < 0.15
    change = dt.date(today.year, rng.randrange(2, 12), 1) if rng.random() < 0.04 else None
    maximum = dt.date(today.year, rng.randrange(3, 12), rng.randrange(1, 29)) if rng.random() < 0.05 else None
    cuts = {dt.date(year, 1, 1) for year in range(first.year + 1, last.year + 1)}
    cuts |= {day for day in (change, maximum) if day is not None and first < day <= last}
    starts = [first, *sorted(cuts)]
    for start, following in zip(starts, [*starts[1:], last + dt.timedelta(days=1)], strict=True):
        gets_rate = preferential != (change is not None and start >= change)
        ct1, ct2 = PREFERENTIAL_CT if gets_rate else ("110", "110")
        member.insurability.append(
            InsurabilitySpan(
                start,
                following - dt.timedelta(days=1),
                ct1,
                ct2,
                preferential=gets_rate,
                maximum_billing=maximum is not None and maximum.year == start.year and start >= maximum,
            )
        )
    if member.chronic:
        member.care.append(CareSpan("CHRONIC_CONDITION", dt.date(today.year - 2, 1, 1)))
    age = (today - member.birth_date).days // 365
    if age >= 60 and rng.random() < 0.01:
        member.care.append(CareSpan("PALLIATIVE", today - dt.timedelta(days=rng.randrange(5, 120))))
    if rng.random() < 0.03:
        admitted = today - dt.timedelta(days=rng.randrange(0, 60))
        discharged = admitted + dt.timedelta(days=rng.randrange(1, 12))
        member.care.append(CareSpan("HOSPITALISED", admitted, discharged if discharged < today else None))


DETAILED_LIMIT = 5_000
AGE_DAYS = 95 * 365


def bulk_members(count: int, today: dt.date, gps: list[str], seed: int = 2014) -> Iterator[list[Member]]:
    """``count`` further members in chunks, generated lazily (a national population does not fit in
    memory as objects). NISS are unique by construction: member ``i`` is born ``i mod AGE_DAYS`` days
    before ``today`` with sequence ``500 + i div AGE_DAYS`` (at most 832 for 11.5 million; detailed
    members use sequences below 500)."""
    if count > AGE_DAYS * 497:
        raise ValueError(f"at most {AGE_DAYS * 497} bulk members")
    rng = random.Random(seed + 1)
    codes = list(INSURER_SHARES)
    weights = [INSURER_SHARES[c] for c in codes]
    counters = dict.fromkeys(codes, 5_000_000_000)
    chunk: list[Member] = []
    for i in range(count):
        birth = today - dt.timedelta(days=1 + i % AGE_DAYS)
        seq = 500 + i // AGE_DAYS
        insurer = rng.choices(codes, weights)[0]
        counters[insurer] += 1
        chunk.append(
            Member(
                niss=make_niss(birth, seq),
                first_name=rng.choice(FIRST_NAMES),
                last_name=rng.choice(LAST_NAMES),
                birth_date=birth,
                sex="M" if seq % 2 else "F",
                affiliations=[
                    Affiliation(insurer, f"{counters[insurer]:011d}", max(birth, dt.date(1990, 1, 1)))
                ],
                usual_gp=gps[i % len(gps)],
            )
        )
        if len(chunk) == 10_000:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def build(size: int, today: dt.date, seed: int = 2014) -> Population:
    """A population of ``size`` members with providers and three years of DMG history before ``today``.

    Up to :data:`DETAILED_LIMIT` members are detailed (relations, DMG history, mutuality changes, bis
    numbers); beyond that, members are streamed in bulk by :func:`bulk_members` (``Population.bulk``).
    """
    bulk = max(0, size - DETAILED_LIMIT)
    size -= bulk
    rng = random.Random(seed)
    seq = iter(range(10_000, 99_999))

    def person(role: str, competence: str, profession: Profession = Profession.PHYSICIAN) -> Provider:
        birth = dt.date(rng.randrange(1955, 1995), rng.randrange(1, 13), rng.randrange(1, 29))
        return Provider(
            inami=make_inami(profession, next(seq), competence),
            first_name=rng.choice(FIRST_NAMES),
            last_name=rng.choice(LAST_NAMES),
            niss=make_niss(birth, rng.randrange(1, 998)),
            role=role,
            iban=_iban(rng),
        )

    # Demo actors first, with stable numbers: GP A and GP B (enrolled), a specialist, a dentist, a trainee.
    gp_a, gp_b = person("gp", "003"), person("gp", "004")
    gp_a.first_name, gp_a.last_name, gp_a.enrolled = "Anne", "Dupont", True
    gp_b.first_name, gp_b.last_name, gp_b.enrolled = "Bruno", "Peeters", True
    gps = [gp_a, gp_b] + [person("gp", rng.choice(("003", "004"))) for _ in range(max(6, size // 800))]
    for gp in gps[2:]:
        gp.enrolled = rng.random() < 0.7
    trainees = [person("trainee", "005") for _ in range(max(1, len(gps) // 10))]
    for t in trainees:
        t.supervisor = gp_a.inami
    specialists = [
        person("specialist", rng.choice(("580", "690", "780"))) for _ in range(max(2, size // 2000))
    ]
    dentists = [person("dentist", "001", Profession.DENTIST) for _ in range(max(2, size // 3000))]
    group = Organisation(
        make_inami(Profession.ORGANISATION, next(seq), "200"),
        "group_practice",
        "Cabinet du Parc",
        [g.inami for g in gps[2:5]],
    )
    house = Organisation(
        make_inami(Profession.ORGANISATION, next(seq), "100"),
        "medical_house",
        "Maison médicale Les Tilleuls",
        [g.inami for g in gps[5:7]],
    )

    members = list(_members(rng, size, today))
    for m in members:
        m.usual_gp = rng.choice(gps).inami
        if rng.random() < 0.02:
            m.medical_house, m.usual_gp = house.inami, house.members[0]
    by_inami = {g.inami: g for g in gps}
    history: list[DmgEvent] = []
    first_year = today.year - 2
    for m in members:
        if m.medical_house or rng.random() > 0.6:
            continue
        gp = by_inami[m.usual_gp]
        opened = dt.date(first_year, rng.randrange(1, 13), rng.randrange(1, 29))
        if opened >= today or opened < m.birth_date:
            continue
        insurer = next(
            (a.insurer for a in m.affiliations if a.start <= opened and (a.end is None or opened <= a.end)),
            "",
        )
        if not insurer:
            continue
        if gp.enrolled:
            history.append(DmgEvent("notify", m.niss, insurer, gp.inami, opened, opened))
        else:
            history.append(
                DmgEvent("attest", m.niss, insurer, gp.inami, opened, opened + dt.timedelta(days=20))
            )
        for year in range(first_year + 1, today.year + 1):
            contact = dt.date(year, rng.randrange(1, 13), rng.randrange(1, 29))
            submitted = contact + dt.timedelta(days=rng.randrange(5, 40))
            at = next(
                (
                    a.insurer
                    for a in m.affiliations
                    if a.start <= contact and (a.end is None or contact <= a.end)
                ),
                "",
            )
            if submitted < today and at:
                history.append(DmgEvent("contact", m.niss, at, gp.inami, contact, submitted))
    history.sort(key=lambda e: (e.submitted, e.date))

    # The demo patient: affiliated with 100, DMG held by GP A (notified early last year), paid.
    demo_birth = dt.date(1980, 5, 17)
    demo_niss = make_niss(demo_birth, 118)
    demo = Member(
        demo_niss,
        "Marie",
        "Lambert",
        demo_birth,
        "F",
        [Affiliation("100", "99900000001", dt.date(1998, 1, 1))],
        usual_gp=gp_a.inami,
    )
    members.append(demo)
    opened = dt.date(today.year - 1, 2, 3)
    history.insert(0, DmgEvent("notify", demo_niss, "100", gp_a.inami, opened, opened))
    history.insert(
        0,
        DmgEvent(
            "contact", demo_niss, "100", gp_a.inami, dt.date(today.year, 1, 8), dt.date(today.year, 1, 20)
        ),
    )
    history.sort(key=lambda e: (e.submitted, e.date))
    # Statuses and pharmacists come from RNGs of their own, so that the members, providers and histories
    # above stay those of earlier versions for a seed.
    status_rng = random.Random(seed + 3)
    for m in members:
        statuses(status_rng, m, today)
    # Pharmacists: the responsible pharmacist of each pharmacy (competence 001, seed 003 §3.3), an assistant.
    pharmacists = [person("pharmacist", "001", Profession.PHARMACIST) for _ in range(max(2, size // 2500))]
    pharmacists.append(person("pharmacist", "002", Profession.PHARMACIST))
    pharmacists[0].first_name, pharmacists[0].last_name = "Paul", "Verstraete"
    # One pharmacy per responsible pharmacist (seed 003 §8.2.2.1-2), the assistant in the first one; and
    # physiotherapists. Drawn after everything above, so that it stays what it was for a seed.
    pharmacies = [
        Organisation(
            make_inami(Profession.ORGANISATION, next(seq), "300"),
            "pharmacy",
            f"Pharmacie {p.last_name}",
            [p.inami],
        )
        for p in pharmacists
        if p.inami.endswith("001")
    ]
    pharmacies[0].members += [p.inami for p in pharmacists if not p.inami.endswith("001")]
    pharmacies[0].name = "Pharmacie du Parc"
    physiotherapists = [
        person("physiotherapist", "001", Profession.PHYSIOTHERAPIST) for _ in range(max(2, size // 3000))
    ]
    newborns = list(_newborns(random.Random(seed + 4), max(3, size // 2000), today))
    for m in newborns:
        statuses(status_rng, m, today)
    members += newborns
    baby = newborns[0].affiliations[0]
    return Population(
        providers=[*gps, *trainees, *specialists, *dentists, *pharmacists, *physiotherapists],
        organisations=[group, house, *pharmacies],
        members=members,
        bulk=bulk,
        history=history,
        newborns=[m.niss for m in newborns],
        demo={
            "gp_a": gp_a.inami,
            "gp_b": gp_b.inami,
            "specialist": specialists[0].inami,
            "dentist": dentists[0].inami,
            "trainee": trainees[0].inami,
            "pharmacist": pharmacists[0].inami,
            "pharmacy": pharmacies[0].inami,
            "physiotherapist": physiotherapists[0].inami,
            "patient": demo_niss,
            "newborn": f"{baby.insurer}/{baby.registration_number}",
        },
    )


def _newborns(rng: random.Random, count: int, today: dt.date) -> Iterator[Member]:
    """Members born in the last six weeks, affiliated since birth with a parent's insurer under a member
    number of their own (NISS sequences 900 and up, member numbers from 7,000,000,001: neither the detailed
    nor the bulk members use them)."""
    codes = list(INSURER_SHARES)
    weights = [INSURER_SHARES[c] for c in codes]
    for n in range(count):
        birth = today - dt.timedelta(days=rng.randrange(1, 42))
        seq = 900 + n
        insurer = rng.choices(codes, weights)[0]
        yield Member(
            niss=make_niss(birth, seq),
            first_name=rng.choice(FIRST_NAMES),
            last_name=rng.choice(LAST_NAMES),
            birth_date=birth,
            sex="M" if seq % 2 else "F",
            affiliations=[Affiliation(insurer, f"{7_000_000_001 + n:011d}", birth)],
        )
