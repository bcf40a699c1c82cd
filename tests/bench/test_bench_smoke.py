"""End to end: the bench starts a real cluster (small population), runs a few seconds of
the scenario mix with one fault on an OA link, then a closed consult run at 1 and 2 in flight, and writes its
reports: the floor, every figure as a ratio to it, CPU per process per request, idle CPU, targets. Structure
only, never timings."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mycarenet_bench.mesh import StartedCluster
from mycarenet_bench.report import write_reports
from mycarenet_bench.run import RunConfig, run

from mycarenet_core.identifiers import INSURER_CODES as INSURERS


def test_short_run_against_a_started_cluster(tmp_path: Path) -> None:
    cluster = StartedCluster(tmp_path / "data", population=60, today="2026-11-20", timeout=240)
    handle = cluster.start()
    try:
        assert handle.desc["sandbox"]["address"], "faults go through the cluster's chaos API"
        cfg = RunConfig(
            mode="open",
            levels="15",
            duration=5,
            warmup=1,
            faults=["errors:oa-100@1s+2s=50%"],
            baseline_seconds=0.3,
            baseline_concurrency=4,
            idle_seconds=0.5,
            idle_settle=0.1,
            quiet_timeout=5,
            name="smoke",
        )
        report = asyncio.run(run(cfg, handle, log=lambda *_: None))
        closed = RunConfig(
            mode="closed",
            levels="1,2",
            duration=2,
            warmup=0.5,
            mix="consult",
            baseline_seconds=0.2,
            baseline_concurrency=2,
            idle_seconds=0.5,
            idle_settle=0.1,
            quiet_timeout=5,
            interleave=2,
            name="closed",
        )
        consults = asyncio.run(run(closed, handle, log=lambda *_: None))
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

    # The floor and the CPU per process, in both runs.
    for rep in (report, consults):
        assert {"floor", "floor_check"} <= set(rep["baseline"])
        assert rep["baseline"]["floor"]["latency"]["requests"] > 0
        assert "ratio_to_floor" in rep["summary"]["overall"]
        names = set(rep["cpu"]["run"]["by_process"])
        assert {"hub", "ehealth", "supervisor", "client"} | {f"oa-{c}" for c in INSURERS} == names
        assert rep["cpu"]["run"]["sums_ms_per_request"]["chain"] is not None
        assert set(rep["cpu"]["run_with_tail"]["by_process"]) == names
        idle = rep["cpu"]["idle"]["by_process"]
        assert all(idle[f"oa-{c}"]["cpu_ms_per_s"] is not None for c in INSURERS)
    # The closed run: steps at the floor's levels, each figure also a ratio to the floor at that level.
    # Interleaved: each step in two rounds of the mesh's load then the floor's, at the same concurrency.
    assert set(consults["baseline"]["floor"]["by_concurrency"]) == {"1", "2"}
    assert consults["baseline"]["floor_check"]["interleaved"] == {"rounds": 2}
    assert consults["baseline"]["floor"]["by_concurrency"]["2"]["slices"] == 2
    assert len(consults["timeline"]) == 2  # the mesh's own seconds, the floor's slices taken out
    one, two = consults["steps"]
    assert set(one["by_rpc"]) == {"ConsultDmg"}
    assert set(one["by_rpc"]["ConsultDmg"]["ratio_to_floor"]) == {"p50", "p99", "throughput"}
    assert set(two["by_rpc"]["ConsultDmg"]["ratio_to_floor_check"]) == {"p50", "p99", "throughput"}
    for window in consults["cpu"]["steps"]:
        assert window["by_process"]["hub"]["cpu_ms_per_request"] is not None
        assert window["ratio_to_floor"]["floor"]["floor_chain_ms"] > 0
    names = {t["name"] for t in consults["targets"]}
    assert "consult p50 at 1 in flight / floor p50" in names
    assert "consult throughput at 2 in flight / floor's" in names
    assert "idle OA node CPU-ms per second (the busiest of them)" in names
    page = write_reports(consults, tmp_path / "closed.json").read_text()
    assert 'class="cpu"' in page
