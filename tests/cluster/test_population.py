"""The synthetic population: valid and unique identifiers (detailed and bulk), realistic insurer shares,
the demo actors, and a DMG history in processing order."""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter

from mycarenet_cluster import population as pop

from mycarenet_core.identifiers import Role, parse_inami, parse_niss

TODAY = dt.date(2026, 11, 20)


def test_detailed_population_is_valid_and_realistic() -> None:
    p = pop.build(3000, TODAY)
    nisses = [m.niss for m in p.members]
    assert len(nisses) == len(set(nisses)) == 3001 + 3  # + the demo patient, + the newborns
    for m in p.members:
        parsed = parse_niss(m.niss, today=TODAY)
        assert parsed.birth_date is None or parsed.birth_date == m.birth_date
    assert any(parse_niss(m.niss).is_bis for m in p.members)
    assert any(m.birth_date.year >= 2000 for m in p.members)
    shares = Counter(m.affiliations[-1].insurer for m in p.members)
    for code, share in pop.INSURER_SHARES.items():
        assert abs(shares[code] / len(p.members) - share) < 0.03, (code, shares[code])
    assert any(len(m.affiliations) == 2 for m in p.members)  # some changed mutuality
    roles = Counter(parse_inami(x.inami).role for x in p.providers)
    assert roles[Role.GENERAL_PRACTITIONER] >= 6
    assert roles[Role.GP_IN_TRAINING] >= 1
    assert roles[Role.SPECIALIST] >= 2
    assert roles[Role.DENTIST] >= 2
    assert roles[Role.PHYSIOTHERAPIST] >= 2
    kinds = {o.kind for o in p.organisations}
    assert kinds == {"medical_house", "group_practice", "pharmacy"}
    # Each pharmacy's first member is its responsible pharmacist, INAMI ending in 001 (seed 003 §8.2.2.2).
    pharmacies = [o for o in p.organisations if o.kind == "pharmacy"]
    assert pharmacies[0].inami == p.demo["pharmacy"]
    assert p.demo["pharmacist"] in pharmacies[0].members
    for o in pharmacies:
        assert parse_inami(o.inami).role is Role.PHARMACY
        assert parse_inami(o.members[0]).role is Role.PHARMACIST
        assert o.members[0].endswith("001")
    # Newborns: born in the last weeks, affiliated since birth, asked for by member number (seed 003 §4.3).
    by_niss = {m.niss: m for m in p.members}
    assert len(p.newborns) == 3
    for niss in p.newborns:
        baby = by_niss[niss]
        assert 0 < (TODAY - baby.birth_date).days <= 42
        assert baby.affiliations[0].start == baby.birth_date
        assert baby.insurability
    mutuality, number = p.demo["newborn"].split("/")
    assert (mutuality, number) == (
        by_niss[p.newborns[0]].affiliations[0].insurer,
        by_niss[p.newborns[0]].affiliations[0].registration_number,
    )
    demo = {m.niss: m for m in p.members}[p.demo["patient"]]
    assert demo.usual_gp == p.demo["gp_a"]
    keys = [(e.submitted, e.date) for e in p.history]
    assert keys == sorted(keys)
    assert {e.kind for e in p.history} == {"notify", "contact", "attest"}
    assert all(e.date <= e.submitted < TODAY or e.niss == p.demo["patient"] for e in p.history)


def test_bulk_members_extend_the_population_without_collisions() -> None:
    p = pop.build(pop.DETAILED_LIMIT + 25_000, TODAY)
    assert len(p.members) == pop.DETAILED_LIMIT + 1 + len(p.newborns)
    assert p.bulk == 25_000
    gps = [x.inami for x in p.providers if x.role == "gp"]
    bulk = [m for chunk in pop.bulk_members(p.bulk, TODAY, gps) for m in chunk]
    assert len(bulk) == 25_000
    nisses = {m.niss for m in bulk}
    assert len(nisses) == 25_000
    assert not nisses & {m.niss for m in p.members}
    for m in bulk[::997]:
        assert parse_niss(m.niss, today=TODAY).birth_date == m.birth_date
    again = [m.niss for chunk in pop.bulk_members(1000, TODAY, gps) for m in chunk]
    assert again == [m.niss for m in bulk[:1000]]  # deterministic


def test_insurability_and_care_statuses_are_realistic() -> None:
    p = pop.build(3000, TODAY)
    counts: Counter[str] = Counter()
    for m in p.members:
        spans = m.insurability
        current = m.affiliations[-1]
        assert spans, m.niss
        assert spans[0].start == max(current.start, dt.date(TODAY.year - 2, 1, 1))
        assert spans[-1].end in (dt.date(TODAY.year, 12, 31), dt.date(TODAY.year + 1, 12, 31), current.end)
        for before, after in itertools.pairwise(spans):
            assert after.start == before.end + dt.timedelta(days=1)  # adjacent, never overlapping
        for span in spans:
            assert span.start <= span.end
            assert (span.ct1, span.ct2) == (("111", "111") if span.preferential else ("110", "110"))
        counts["members"] += 1
        counts["preferential"] += any(s.preferential for s in spans)
        counts["status changes mid-year"] += len({s.preferential for s in spans}) > 1
        counts["maximum billing"] += any(s.maximum_billing for s in spans)
        counts["next year established"] += spans[-1].end.year > TODAY.year
        for care in m.care:
            counts[care.kind] += 1
        assert any(c.kind == "CHRONIC_CONDITION" for c in m.care) == m.chronic
    assert 0.10 < counts["preferential"] / counts["members"] < 0.20
    assert counts["status changes mid-year"] > 20
    assert counts["maximum billing"] > 50
    assert counts["next year established"] / counts["members"] > 0.8
    assert counts["PALLIATIVE"] >= 2
    assert counts["HOSPITALISED"] > 30
    pharmacists = [x for x in p.providers if parse_inami(x.inami).role is Role.PHARMACIST]
    assert p.demo["pharmacist"] == pharmacists[0].inami
    assert pharmacists[0].inami.endswith("001")  # the responsible pharmacist (seed 003 §3.3)
