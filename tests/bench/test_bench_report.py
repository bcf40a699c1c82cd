"""The report: JSON structure, ratios to the baseline, and the HTML page with its charts and markers."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from mycarenet_bench.baseline import measure_baseline, ratios
from mycarenet_bench.faults import FaultRecord
from mycarenet_bench.load import Step
from mycarenet_bench.report import render_html, write_reports
from mycarenet_bench.run import RunConfig, build_report
from mycarenet_bench.stats import Recorder

BASELINE = {
    "echo_direct": {
        "latency": {
            "latency_ms": {"p50": 0.5, "p90": 0.6, "p99": 1.0, "p99.9": 2.0, "max": 3.0, "mean": 0.5}
        },
        "throughput": {"concurrency": 16, "throughput_rps": 2000.0, "latency_ms": {"p50": 8.0}},
    },
    "echo_proxy": {
        "latency": {
            "latency_ms": {"p50": 1.0, "p90": 1.2, "p99": 2.0, "p99.9": 3.0, "max": 4.0, "mean": 1.0}
        },
        "throughput": {"concurrency": 16, "throughput_rps": 1000.0, "latency_ms": {"p50": 16.0}},
    },
}


def _report() -> dict[str, object]:
    rec = Recorder(t0=0.0)
    for s in range(10):
        for i in range(20):
            oa = "300" if i % 4 == 0 else "100"
            failed = oa == "300" and s in (3, 4)
            rec.record("ConsultDmg", oa, "UNAVAILABLE" if failed else "OK", s + i / 20, s + i / 20 + 0.005)
        rec.record("GetMessages", None, "OK", s + 0.5, s + 0.502)
    kill = FaultRecord("kill", "oa-300", 3.0, 0.0, 0.0, "kill:oa-300@3s", applied_at=3.0, cleared_at=5.0)
    link = FaultRecord("latency", "oa-100", 6.0, 2.0, 100.0, "latency:oa-100@6s+2s=100ms", 6.0, 8.0)
    return build_report(
        RunConfig(levels="21", duration=10, faults=[kill.spec, link.spec], name="unit"),
        handle=None,
        recorder=rec,
        steps=[Step(21, 10)],
        baseline=BASELINE,
        faults=[kill, link],
        runner=None,
        started_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )


def test_report_structure_and_recovery() -> None:
    report = _report()
    json.dumps(report)  # machine-readable as it is
    summary = report["summary"]
    assert isinstance(summary, dict)
    assert set(summary["by_rpc"]) == {"ConsultDmg", "GetMessages"}
    assert set(summary["by_oa"]) == {"100", "300", "-"}
    consult = summary["by_rpc"]["ConsultDmg"]
    assert consult["failed"] == 10
    assert consult["hung"] == 0
    assert consult["ratio_to_echo"]["p50"] == round(consult["latency_ms"]["p50"] / 0.5, 2)
    assert "throughput" in consult["ratio_to_proxy_hop"]
    availability = report["availability"]
    assert isinstance(availability, dict)
    assert availability["not_bound_to"]["300"] == 1.0
    assert availability["by_oa"]["300"] == 0.8
    faults = report["faults"]
    assert isinstance(faults, list)
    kill = faults[0]["recovery"]
    assert kill["oa 300"]["recovery_seconds"] == 2.0
    assert kill["not bound to 300"]["recovery_seconds"] == 0.0
    assert len(report["timeline"]) == 10  # type: ignore[arg-type]
    assert report["hung"] == 0


def test_html_is_self_contained_with_charts_and_fault_markers(tmp_path: Path) -> None:
    report = _report()
    page = render_html(report)
    assert page.count('class="fault-marker"') == 2 * 2  # latency chart and availability chart
    assert 'data-kind="kill"' in page
    assert 'data-target="oa-300"' in page
    for chart in ("latency-over-time", "availability-over-time", "percentile-curves", "availability-bars"):
        assert f'class="{chart}"' in page
    assert "<script src" not in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    html_path = write_reports(report, tmp_path / "r.json")
    assert html_path.read_text() == page
    assert json.loads((tmp_path / "r.json").read_text())["name"] == "unit"


def test_ratios_without_baseline() -> None:
    assert ratios({"latency_ms": {"p50": 1, "p99": 2}, "throughput_rps": 3}, None) == {}


async def test_baseline_in_process() -> None:
    result = await measure_baseline(tls=None, seconds=0.2, concurrency=4, mode="inprocess")
    for hop in ("echo_direct", "echo_proxy"):
        assert result[hop]["latency"]["requests"] > 0
        assert result[hop]["latency"]["errors"] == 0
        assert result[hop]["throughput"]["concurrency"] == 4
        assert result[hop]["latency"]["latency_ms"]["p50"] > 0
