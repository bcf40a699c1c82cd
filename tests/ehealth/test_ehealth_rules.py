"""Pure eHealth rules: DMG relation moves (to a new holder, to no one), mandate overlap, strongest relation,
token lifetime; and the pure parsing of what eHealth reads from elsewhere (an insurer's holder change, the
insurers' targets setting)."""

from __future__ import annotations

import datetime as dt

import pytest

from ehealth.holders import parse_change
from ehealth.rules import (
    MandateView,
    Period,
    Proof,
    Relation,
    plan_dmg_end,
    plan_dmg_transfer,
    plan_mandate_closures,
    strongest_relation,
    token_lifetime,
)
from ehealth.settings import EhealthSettings, parse_targets
from mycarenet_core.dates import to_proto
from mycarenet_core.errors import MeshError
from mycarenet_core.gen.mycarenet.oa.v1 import holding_feed_service_pb2 as feed
from mycarenet_core.identifiers import Profession, make_inami, make_niss

D = dt.date


def dmg(rid: str, holder: str, start: D, end: D | None = None) -> Relation:
    return Relation(rid, holder, "P", Proof.DMG, Period(start, end))


def test_transfer_ends_the_previous_holder_the_day_before() -> None:
    plan = plan_dmg_transfer([dmg("a", "A", D(2013, 8, 22))], "B", D(2014, 3, 4))
    assert plan.ends == {"a": D(2014, 3, 3)}
    assert plan.reuse_id is None
    assert plan.new_end is None


def test_transfer_to_the_current_holder_reuses_its_relation() -> None:
    plan = plan_dmg_transfer([dmg("a", "A", D(2013, 1, 1))], "A", D(2014, 1, 1))
    assert (plan.ends, plan.reuse_id, plan.new_end) == ({}, "a", None)


def test_out_of_order_transfer_is_bounded_by_a_later_move() -> None:
    relations = [dmg("a", "A", D(2012, 1, 1), D(2012, 8, 31)), dmg("b", "B", D(2012, 9, 1))]
    plan = plan_dmg_transfer(relations, "C", D(2012, 7, 1))
    assert plan.ends == {"a": D(2012, 6, 30)}  # B's later holding is left alone
    assert plan.new_end == D(2012, 8, 31)


def test_same_day_transfer_supersedes_the_other_holder() -> None:
    plan = plan_dmg_transfer([dmg("a", "A", D(2012, 9, 1))], "B", D(2012, 9, 1))
    assert plan.ends == {"a": D(2012, 8, 31)}  # emptied
    assert plan.new_end is None


def test_transfer_leaves_ended_relations_alone() -> None:
    plan = plan_dmg_transfer([dmg("a", "A", D(2010, 1, 1), D(2011, 12, 31))], "B", D(2012, 9, 1))
    assert plan.ends == {}


def view(mid: str, services: set[str], start: D, end: D | None = None) -> MandateView:
    return MandateView(mid, frozenset(services), Period(start, end))


def test_mandate_closures() -> None:
    new = view("n", {"CONSULT"}, D(2025, 3, 1))
    existing = [
        view("open", {"CONSULT", "MAILBOX"}, D(2025, 1, 1)),
        view("other-service", {"NOTIFY"}, D(2025, 1, 1)),
        view("ended-before", {"CONSULT"}, D(2024, 1, 1), D(2025, 2, 28)),
        view("cancelled", {"CONSULT"}, D(2025, 6, 1), D(2025, 5, 31)),
    ]
    assert plan_mandate_closures(new, existing) == {"open": D(2025, 2, 28)}


def test_mandate_overlapping_a_later_one_is_refused() -> None:
    with pytest.raises(MeshError) as info:
        plan_mandate_closures(view("n", {"C"}, D(2025, 1, 1)), [view("later", {"C"}, D(2025, 1, 1))])
    assert info.value.reason == "MANDATE_OVERLAP"


def test_strongest_relation_prefers_proof_then_own() -> None:
    day = D(2025, 1, 10)
    own_eid = Relation("1", "GP", "P", Proof.EID_READ, Period(D(2025, 1, 1)))
    org_eid = Relation("0", "MH", "P", Proof.EID_READ, Period(D(2024, 1, 1)))
    org_dmg = Relation("2", "MH", "P", Proof.DMG, Period(D(2024, 1, 1), D(2025, 1, 9)))
    assert strongest_relation([org_eid, own_eid, org_dmg], "GP", day) == own_eid
    assert strongest_relation([org_eid, own_eid, org_dmg], "GP", D(2025, 1, 9)) == org_dmg
    assert strongest_relation([own_eid], "GP", D(2024, 12, 31)) is None


def test_token_lifetime() -> None:
    twelve = dt.timedelta(hours=12)
    assert token_lifetime(0, twelve) == twelve
    assert token_lifetime(60, twelve) == dt.timedelta(minutes=1)
    assert token_lifetime(13 * 3600, twelve) == twelve
    assert token_lifetime(13 * 3600, dt.timedelta(hours=2)) == dt.timedelta(hours=2)
    with pytest.raises(ValueError, match="negative"):
        token_lifetime(-1, twelve)


def test_an_ended_holding_ends_the_previous_holders_dmg_relation() -> None:
    relations = [
        dmg("a", "A", D(2020, 1, 1), D(2022, 12, 31)),  # over before: untouched
        dmg("b", "B", D(2023, 1, 1)),  # runs on the start: ends the day before
        dmg("c", "B", D(2024, 5, 1)),  # begins on the start: cancelled
        dmg("d", "B", D(2024, 9, 1)),  # a later move: untouched
        dmg("e", "C", D(2023, 6, 1)),  # another holder: untouched when the previous one is named
    ]
    assert plan_dmg_end(relations, "B", D(2024, 5, 1)) == {"b": D(2024, 4, 30), "c": D(2024, 4, 30)}
    # Unknown previous holder: whoever holds it on that day.
    assert plan_dmg_end(relations, "", D(2024, 5, 1)) == {
        "b": D(2024, 4, 30),
        "c": D(2024, 4, 30),
        "e": D(2024, 4, 30),
    }
    ended = [dmg("b", "B", D(2023, 1, 1), D(2024, 4, 30))]
    assert plan_dmg_end(ended, "B", D(2024, 5, 1)) == {}  # applying it twice changes nothing more


GP = make_inami(Profession.PHYSICIAN, 10001, "003")
PATIENT = make_niss(D(1980, 5, 17), 123)


def test_holder_changes_ehealth_cannot_use_are_named() -> None:
    good = feed.HolderChange(sequence=1, patient_niss=PATIENT, holder_inami=GP, source_reference="100:x")
    good.start_date.CopyFrom(to_proto(D(2025, 1, 1)))
    move = parse_change(good)
    assert not isinstance(move, str)
    assert (move.patient_niss, move.new_holder, move.previous_holder, move.start) == (
        PATIENT,
        GP,
        "",
        D(2025, 1, 1),
    )
    bad = parse_change(feed.HolderChange(sequence=2, patient_niss="1", holder_inami=GP[:-1]))
    assert isinstance(bad, str)
    for field in ("patient_niss", "holder_inami", "start_date", "source_reference"):
        assert field in bad


def test_the_insurer_targets_setting() -> None:
    assert parse_targets("") == {}
    assert parse_targets(" 100=oa-100:7410 , 900=10.0.0.9:7416") == {
        "100": "oa-100:7410",
        "900": "10.0.0.9:7416",
    }
    for wrong in ("100", "101=h:1", "100=h", "100=h:0", "100=h:1,100=h:2", "100=:1"):
        with pytest.raises(ValueError, match=r"expected|host:port|twice"):
            parse_targets(wrong)
    settings = EhealthSettings(insecure=True, oa_targets="300=oa-300:7412")
    assert settings.insurer_targets == {"300": "oa-300:7412"}
    with pytest.raises(ValueError, match="oa_targets"):
        EhealthSettings(insecure=True, oa_targets="999=x:1")
