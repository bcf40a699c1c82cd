"""End to end: the bench starts a real cluster (small population, fault proxies on), runs a few seconds of
the scenario mix with one fault on an OA link, and writes its reports. Structure only, never timings."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mycarenet_bench.mesh import StartedCluster
from mycarenet_bench.report import write_reports
from mycarenet_bench.run import RunConfig, run


def test_short_run_against_a_started_cluster(tmp_path: Path) -> None:
    cluster = StartedCluster(tmp_path / "data", population=150, today="2026-11-20", timeout=240)
    handle = cluster.start()
    try:
        assert handle.desc["fault_proxies"], "the bench's cluster runs with fault proxies"
        cfg = RunConfig(
            mode="open",
            levels="15",
            duration=5,
            warmup=1,
            faults=["errors:oa-100@1s+2s=50%"],
            baseline_seconds=0.3,
            baseline_concurrency=4,
            name="smoke",
        )
        report = asyncio.run(run(cfg, handle, log=lambda *_: None))
    finally:
        cluster.stop()
    assert not (tmp_path / "data" / "cluster.json").exists(), "the cluster stopped"

    assert report["hung"] == 0
    assert report["schema"] == "mycarenet-bench/1"
    assert report["baseline"]["echo_direct"]["latency"]["requests"] > 0
    summary = report["summary"]
    assert summary["overall"]["requests"] > 0
    assert set(summary["by_rpc"]) <= {
        "ConsultDmg",
        "NotifyDmg",
        "PostPatientList",
        "GetMessages",
        "ConfirmMessages",
    }
    assert "ConsultDmg" in summary["by_rpc"]
    assert summary["overall"]["ok"] + summary["overall"]["refused"] > 0
    assert len(report["timeline"]) == 5
    (fault,) = report["faults"]
    assert fault["kind"] == "errors"
    assert fault["applied_at"] is not None
    assert fault["cleared_at"] is not None
    assert set(fault["recovery"]) == {"overall", "oa 100", "not bound to 100"}
    assert set(report["availability"]) == {"overall", "by_oa", "not_bound_to"}
    html = write_reports(report, tmp_path / "smoke.json").read_text()
    assert 'class="fault-marker"' in html
