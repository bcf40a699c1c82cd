"""The pure rule of the a-posteriori purpose check (oa_node/purpose.py; seed 003 §7.3, seed 001 annex 2):
consultations never followed by a billed service of the same provider for the same patient, the threshold of
a finding, and the periods checked once their delay has passed."""

from __future__ import annotations

import datetime as dt

import pytest

from oa_node.purpose import ProviderUse, PurposeRule, Use, findings, provider_uses

D = dt.date
GP, OTHER = "11000095003", "11000194004"
P1, P2, P3 = "80051711820", "90051712331", "85073003427"


def test_a_consultation_is_followed_by_a_service_of_the_same_provider_and_patient_within_the_delay() -> None:
    day = D(2025, 3, 4)
    consultations = [
        Use(GP, P1, day),  # billed the same day
        Use(GP, P2, day),  # billed 5 days later: within 5
        Use(GP, P3, day),  # billed by another provider only
        Use(OTHER, P1, day),  # the other provider billed P3, not P1
    ]
    services = [
        Use(GP, P1, day),
        Use(GP, P2, day + dt.timedelta(days=5)),
        Use(OTHER, P3, day),
    ]
    assert provider_uses(consultations, services, delay_days=5) == [
        ProviderUse(GP, 3, 3, 1),
        ProviderUse(OTHER, 1, 1, 1),
    ]
    # One day more than the delay: not followed; a service before the consultation counts too (a pharmacist
    # may consult for a past dispensing date).
    late = [Use(GP, P1, day + dt.timedelta(days=6)), Use(GP, P2, day - dt.timedelta(days=3))]
    assert provider_uses([Use(GP, P1, day), Use(GP, P2, day)], late, delay_days=5) == [
        ProviderUse(GP, 2, 2, 1)
    ]


def test_one_patient_asked_twice_on_a_day_is_one_consultation() -> None:
    day = D(2025, 3, 4)
    uses = [Use(GP, P1, day), Use(GP, P1, day), Use(GP, P1, day + dt.timedelta(days=1))]
    assert provider_uses(uses, [], delay_days=0) == [ProviderUse(GP, 2, 1, 2)]


def test_a_finding_needs_enough_consultations_and_more_than_the_share_unfollowed() -> None:
    rule = PurposeRule(min_consultations=4, max_unfollowed_share=0.5)
    assert not rule.flagged(ProviderUse(GP, 3, 3, 3))  # too few to judge
    assert not rule.flagged(ProviderUse(GP, 4, 4, 2))  # exactly half: not more than
    assert rule.flagged(ProviderUse(GP, 4, 4, 3))
    day = D(2025, 3, 4)
    consultations = [Use(GP, p, day) for p in (P1, P2, P3)] + [Use(GP, P1, day + dt.timedelta(days=1))]
    honest = [Use(GP, p, day) for p in (P1, P2, P3)]
    assert findings(consultations, honest, rule) == []
    # P1 billed only: P2, P3 and P1's second day (a day after the service, within no delay) unfollowed
    assert findings(consultations, honest[:1], PurposeRule(min_consultations=4, delay_days=0)) == [
        ProviderUse(GP, 4, 3, 3)
    ]
    assert [u.provider for u in findings(consultations, [], rule)] == [GP]


def test_periods_are_aligned_and_checked_once_their_delay_has_passed() -> None:
    rule = PurposeRule(period_days=10, delay_days=5)
    start, end = rule.period_of(D(2025, 3, 4))
    assert (end - start).days == 10
    assert start <= D(2025, 3, 4) < end
    assert rule.period_of(start) == (start, end)
    assert rule.period_of(end)[0] == end
    # The period [start, end) is checkable from end + 5 days on, not before.
    assert rule.last_checkable(end + dt.timedelta(days=4)) != (start, end)
    assert rule.last_checkable(end + dt.timedelta(days=5)) == (start, end)
    assert rule.last_checkable(end + dt.timedelta(days=14)) == (start, end)
    assert rule.last_checkable(end + dt.timedelta(days=15)) == (end, end + dt.timedelta(days=10))
    assert "more than 50% of at least 20 consultations in 30 days" in PurposeRule().describe()


def test_the_thresholds_are_each_insurers_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from mycarenet_core.config import load
    from oa_node.settings import OaSettings

    monkeypatch.setenv("MCN_OA_INSECURE", "true")
    monkeypatch.setenv("MCN_OA_INSURER_CODE", "300")
    assert load(OaSettings).purpose() == PurposeRule()
    monkeypatch.setenv("MCN_OA_PURPOSE_PERIOD_DAYS", "7")
    monkeypatch.setenv("MCN_OA_PURPOSE_DELAY_DAYS", "14")
    monkeypatch.setenv("MCN_OA_PURPOSE_MIN_CONSULTATIONS", "5")
    monkeypatch.setenv("MCN_OA_PURPOSE_MAX_UNFOLLOWED_SHARE", "0.8")
    assert load(OaSettings).purpose() == PurposeRule(
        period_days=7, delay_days=14, min_consultations=5, max_unfollowed_share=0.8
    )
    monkeypatch.setenv("MCN_OA_PURPOSE_MAX_UNFOLLOWED_SHARE", "1")  # "more than all" would never find
    with pytest.raises(SystemExit):  # refused at start
        load(OaSettings)
