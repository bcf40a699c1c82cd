"""Outcome classes, HdrHistogram aggregation, availability per second and recovery times."""

from __future__ import annotations

import pytest
from mycarenet_bench.stats import NO_OA, Recorder, availability, classify, exact_percentile, recovery


def test_classify() -> None:
    assert classify("OK") == "ok"
    assert classify("HUNG") == "hung"
    assert classify("RESOURCE_EXHAUSTED") == "throttled"
    assert classify("UNAVAILABLE") == "failed"
    assert classify("DEADLINE_EXCEEDED") == "failed"
    assert classify("FAILED_PRECONDITION") == "refused"
    assert classify("PERMISSION_DENIED") == "refused"


def test_availability_ignores_throttled() -> None:
    assert availability({"ok": 8, "refused": 1, "failed": 1, "throttled": 50}) == 0.9
    assert availability({"throttled": 3}) is None


def test_percentiles_per_rpc_and_per_oa() -> None:
    rec = Recorder(t0=0.0)
    for i in range(1, 1001):  # 1 ms .. 1000 ms
        rec.record("ConsultDmg", "100" if i % 2 else "300", "OK", 0.0, i / 1000.0)
    rec.record("GetMessages", None, "OK", 0.0, 0.005)
    summary = rec.by_rpc["ConsultDmg"].summary(10.0)
    lat = summary["latency_ms"]
    assert lat["p50"] == pytest.approx(500, rel=0.01)
    assert lat["p90"] == pytest.approx(900, rel=0.01)
    assert lat["p99"] == pytest.approx(990, rel=0.01)
    assert lat["p99.9"] == pytest.approx(999, rel=0.01)
    assert lat["max"] == pytest.approx(1000, rel=0.01)
    assert summary["throughput_rps"] == 100.0
    assert rec.by_oa["100"].summary(1)["requests"] == 500
    assert rec.by_oa[NO_OA].summary(1)["requests"] == 1
    assert rec.overall.summary(1)["requests"] == 1001


def test_errors_are_keyed_by_status_code_and_reason() -> None:
    rec = Recorder(t0=0.0)
    rec.record("NotifyDmg", "100", "FAILED_PRECONDITION", 0, 0.01, code=161, reason="ALREADY_HOLDER")
    rec.record("NotifyDmg", "100", "UNAVAILABLE", 0, 0.01, reason="UNAVAILABLE")
    rec.record("NotifyDmg", "100", "HUNG", 0, 7.0)
    assert dict(rec.errors["NotifyDmg"]) == {
        "FAILED_PRECONDITION 161 ALREADY_HOLDER": 1,
        "UNAVAILABLE": 1,
        "HUNG": 1,
    }
    assert rec.hung == 1
    # Failed and hung requests stay out of the latency histogram of answered requests.
    assert rec.overall.hist.get_total_count() == 1


def test_availability_per_second_overall_per_oa_and_excluding() -> None:
    rec = Recorder(t0=100.0)
    for s in range(5):
        for _ in range(9):
            rec.record("ConsultDmg", "100", "OK", 100.0 + s + 0.1, 100.0 + s + 0.2)
        status = "UNAVAILABLE" if s in (1, 2) else "OK"
        rec.record("ConsultDmg", "300", status, 100.0 + s + 0.5, 100.0 + s + 0.6)
    assert rec.series() == [1.0, 0.9, 0.9, 1.0, 1.0]
    assert rec.series(only="300") == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert rec.series(exclude="300") == [1.0] * 5
    assert rec.availability_excluding("300") == 1.0
    timeline = rec.timeline(6)
    assert len(timeline) == 6
    assert timeline[1]["failed"] == 1
    assert timeline[1]["by_oa"]["300"]["availability"] == 0.0
    assert timeline[5]["availability"] is None


def test_recovery_time_after_a_fault() -> None:
    series = [1.0, 1.0, 0.5, 0.0, None, 0.8, 1.0, 1.0, 0.97, 1.0]
    got = recovery(series, 2.0, 8.0)
    assert got.recovered_at == 6.0
    assert got.recovery_seconds == 4.0
    assert got.impacted_seconds == 3
    assert got.worst == 0.0
    clean = recovery([1.0, 1.0, 1.0], 0.5, 3.0)
    assert clean.recovery_seconds == 0
    assert clean.impacted_seconds == 0
    # A bad second right before the next fault (requests in flight when it struck) is not a relapse.
    spill = recovery([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.5], 1.0, 8.0)
    assert spill.recovered_at == 3.0
    assert spill.impacted_seconds == 2
    never = recovery([1.0, 0.0, 0.0], 1.0, 3.0)
    assert never.recovered_at is None
    assert never.recovery_seconds == 2.0


def test_exact_percentile() -> None:
    assert exact_percentile([], 50) == 0.0
    assert exact_percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert exact_percentile([1.0, 2.0, 3.0, 4.0], 99) == 4.0
