"""The pure rules of the abuse control (hub/abuse.py; seed 003 §7.2, seed 001 §3): the sliding window of
distinct patients and the consequence of a finding (a warning, then an exclusion on a repeat within 365
days)."""

from __future__ import annotations

import datetime as dt

import pytest

from hub.abuse import AbuseConfig, Consequence, DistinctWindow, Strike, consequence_of, excluded_until

T0 = dt.datetime(2025, 3, 4, 9, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
MONTH = dt.timedelta(days=30)


def strike(at: dt.datetime, until: dt.datetime | None = None, notice: str = "n1") -> Strike:
    consequence = Consequence.EXCLUSION if until else Consequence.WARNING
    return Strike(notice, "11000095003", "DISTINCT_PATIENTS", at, consequence, until)


def test_the_window_counts_distinct_patients_and_forgets_the_old_ones() -> None:
    window = DistinctWindow(dt.timedelta(minutes=60))
    assert window.see("a", T0) == 1
    assert window.see("a", T0 + dt.timedelta(minutes=1)) == 1  # the same patient again: not another
    assert window.see("b", T0 + dt.timedelta(minutes=2)) == 2
    assert window.see("c", T0 + dt.timedelta(minutes=59)) == 3
    # "a" was last seen at minute 1: gone at minute 61, "b" (minute 2) still there until minute 62
    assert window.see("d", T0 + dt.timedelta(minutes=61)) == 3
    assert window.count(T0 + dt.timedelta(minutes=62)) == 2
    assert window.count(T0 + dt.timedelta(hours=5)) == 0
    assert window.first() is None


def test_seeing_a_patient_again_keeps_it_in_the_window() -> None:
    window = DistinctWindow(dt.timedelta(minutes=10))
    window.see("a", T0)
    window.see("b", T0 + dt.timedelta(minutes=5))
    window.see("a", T0 + dt.timedelta(minutes=9))
    assert window.count(T0 + dt.timedelta(minutes=12)) == 2  # a seen at 9, b at 5: both within 10
    assert window.count(T0 + dt.timedelta(minutes=16)) == 1
    assert window.first() == T0 + dt.timedelta(minutes=9)


def test_a_first_finding_is_a_warning() -> None:
    decision = consequence_of([], T0, repeat_days=365, exclusion=MONTH)
    assert (decision.consequence, decision.excluded_until, decision.repeats) == (
        Consequence.WARNING,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("since_first", "expected"),
    [
        (dt.timedelta(days=1), Consequence.EXCLUSION),
        (dt.timedelta(days=365), Consequence.EXCLUSION),  # "endéans les 365 jours": the 365th day included
        (dt.timedelta(days=365, seconds=1), Consequence.WARNING),
        (dt.timedelta(days=400), Consequence.WARNING),
    ],
)
def test_a_repeat_within_365_days_is_an_exclusion(since_first: dt.timedelta, expected: Consequence) -> None:
    at = T0 + since_first
    decision = consequence_of([strike(T0)], at, repeat_days=365, exclusion=MONTH)
    assert decision.consequence == expected
    if expected is Consequence.EXCLUSION:
        assert decision.excluded_until == at + MONTH
        assert decision.repeats is not None
        assert decision.repeats.notice_id == "n1"


def test_the_repeat_counts_from_the_first_finding_of_the_365_days() -> None:
    first, second = strike(T0, notice="first"), strike(T0 + 100 * DAY, T0 + 130 * DAY, notice="second")
    decision = consequence_of([second, first], T0 + 200 * DAY, repeat_days=365, exclusion=MONTH)
    assert decision.consequence is Consequence.EXCLUSION
    assert decision.repeats is not None
    assert decision.repeats.notice_id == "first"


def test_a_finding_never_shortens_an_exclusion_in_force() -> None:
    long = strike(T0, T0 + 90 * DAY)
    decision = consequence_of([long], T0 + DAY, repeat_days=365, exclusion=MONTH)
    assert decision.excluded_until == T0 + 90 * DAY


def test_excluded_until_is_the_latest_end_still_ahead() -> None:
    strikes = [strike(T0), strike(T0 + DAY, T0 + 31 * DAY), strike(T0 + 2 * DAY, T0 + 20 * DAY)]
    assert excluded_until(strikes, T0 + 5 * DAY) == T0 + 31 * DAY
    assert excluded_until(strikes, T0 + 31 * DAY) is None  # over at its end
    assert excluded_until([strike(T0)], T0) is None


def test_the_cli_tells_a_usage_notice_in_one_line() -> None:
    from google.protobuf import timestamp_pb2
    from mycarenet_sdk.cli import _usage_text

    from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2

    until = timestamp_pb2.Timestamp()
    until.FromDatetime(T0 + MONTH)
    excluded = dmg_pb2.UsageNotice(
        finding=dmg_pb2.USAGE_FINDING_DISTINCT_PATIENTS,
        consequence=dmg_pb2.USAGE_CONSEQUENCE_EXCLUSION,
        distinct_patients=121,
        rule="more than 120 distinct patients in 60 minutes",
        excluded_until=until,
    )
    assert _usage_text(excluded) == (
        "121 distinct patients consulted (more than 120 distinct patients in 60 minutes): EXCLUDED from the "
        "insurability services until 03.04.2025 09:00 UTC"
    )
    warned = dmg_pb2.UsageNotice(
        finding=dmg_pb2.USAGE_FINDING_UNFOLLOWED_CONSULTATIONS,
        consequence=dmg_pb2.USAGE_CONSEQUENCE_WARNING,
        consultation_count=40,
        unfollowed_count=30,
        rule="r",
    )
    assert (
        _usage_text(warned)
        == "30 of 40 consultations never billed (r): warning, a repeat within 365 days excludes"
    )


def test_the_sdk_error_says_when_an_exclusion_ends() -> None:
    import grpc
    from mycarenet_sdk.client import MyCareNetError

    until = T0 + MONTH
    error = MyCareNetError(
        grpc.StatusCode.PERMISSION_DENIED,
        "SYSTEMATIC_CONSULTATION_EXCLUDED",
        "excluded",
        metadata={"excluded_until": until.isoformat()},
    )
    assert error.excluded_until == until
    assert MyCareNetError(grpc.StatusCode.PERMISSION_DENIED, "OTHER", "no").excluded_until is None


def test_the_thresholds_are_hub_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from hub.settings import HubSettings
    from mycarenet_core.config import load

    monkeypatch.setenv("MCN_HUB_INSECURE", "true")
    monkeypatch.setenv("MCN_HUB_EHEALTH_TARGET", "127.0.0.1:1")
    monkeypatch.setenv("MCN_HUB_OA_TARGETS", "100=127.0.0.1:2")
    assert load(HubSettings).abuse() == AbuseConfig()  # the defaults are the code's
    monkeypatch.setenv("MCN_HUB_ABUSE_WINDOW_MINUTES", "15")
    monkeypatch.setenv("MCN_HUB_ABUSE_MAX_DISTINCT_PATIENTS", "40")
    monkeypatch.setenv("MCN_HUB_ABUSE_REPEAT_DAYS", "365")
    monkeypatch.setenv("MCN_HUB_ABUSE_EXCLUSION_DAYS", "7")
    config = load(HubSettings).abuse()
    assert (config.window, config.max_distinct_patients, config.exclusion) == (
        dt.timedelta(minutes=15),
        40,
        dt.timedelta(days=7),
    )
    assert config.rule() == "more than 40 distinct patients in 15 minutes"
    monkeypatch.setenv("MCN_HUB_ABUSE_MAX_DISTINCT_PATIENTS", "0")
    with pytest.raises(SystemExit):  # refused at start
        load(HubSettings)
