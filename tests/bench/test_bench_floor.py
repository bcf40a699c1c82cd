"""The floor (the minimal Python grpc.aio chain of a consult's shape) and the CPU accounting from /proc, and
the report's ratios to the floor, CPU per process and targets. Structure and arithmetic only, never
timings."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from mycarenet_bench.baseline import (
    CONSULT,
    CONSULT_CHECKED,
    FLOOR_ROWS,
    Floor,
    TlsPaths,
    floor_key,
    floor_levels,
    floor_payloads,
    holder,
    level_ratios,
    measure_floor,
)
from mycarenet_bench.cpu import ProcCpu, Snapshot, cpu_delta, per_request, read_cpu
from mycarenet_bench.faults import FaultRecord
from mycarenet_bench.load import Step
from mycarenet_bench.report import render_html
from mycarenet_bench.run import CpuMeter, RunConfig, build_report
from mycarenet_bench.stats import Recorder
from mycarenet_cluster import pki

from mycarenet_core.channels import open_channel
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_service_pb2


def _tls(folder: Path) -> TlsPaths:
    server = pki.ensure_identity(folder, "bench-echo")
    client = pki.ensure_identity(folder, "client")
    return TlsPaths(server.ca, server.cert, server.key, client.cert, client.key)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_the_floor_runs_in_child_processes_over_mutual_tls_with_cpu_per_process(tmp_path: Path) -> None:
    result = await measure_floor(tls=_tls(tmp_path / "pki"), seconds=0.3, levels=[1, 2], mode="process")
    assert set(result) == {"floor", "floor_check"}
    pids = set()
    for name, chain in result.items():
        assert "proxy" in chain["chain"]
        assert "SQLite" in chain["chain"]
        assert chain["read"] == "loop"
        assert set(chain["by_concurrency"]) == {"1", "2"}
        assert chain["latency"] is chain["by_concurrency"]["1"]
        assert chain["throughput"] is chain["by_concurrency"]["2"]
        for level, measured in chain["by_concurrency"].items():
            assert measured["concurrency"] == int(level)
            assert measured["requests"] > 0
            assert measured["errors"] == 0
            assert measured["latency_ms"]["p50"] > 0
            cpu = measured["cpu"]
            expected = {"floor-proxy", "floor-data", "client"} | (
                {"floor-check"} if name == "floor_check" else set()
            )
            assert set(cpu["by_process"]) == expected
            for proc in cpu["by_process"].values():
                assert proc["cpu_ms_per_request"] is not None
                assert proc["cpu_ms"] >= 0
                pids.add(proc["pid"])
            assert cpu["requests"] == measured["requests"]
            assert cpu["sums_ms_per_request"]["chain"] is not None
    pids.discard(os.getpid())
    assert len(pids) == 3  # data, check, proxy
    assert all(_gone(pid) for pid in pids), "the floor's processes were stopped"


@pytest.mark.parametrize(
    ("mode", "read"), [("process", "loop"), ("process", "thread"), ("inprocess", "loop")]
)
async def test_the_floor_answers_with_the_row_it_read(tmp_path: Path, mode: str, read: str) -> None:
    tls = _tls(tmp_path / "pki")
    floor = Floor(tls, mode, read)
    port = await floor.start()
    try:
        async with open_channel(f"127.0.0.1:{port}", credentials=tls.client()) as channel:
            for method in (CONSULT, CONSULT_CHECKED):
                call = channel.unary_unary(method, None, dmg_service_pb2.ConsultDmgResponse.FromString)
                answer = await call(floor_payloads()[7], timeout=10)
                assert answer.requester_reference == "floor-00000007"
                assert answer.patient.niss == floor_key(7)
                assert answer.patient.last_name == "Peeters 7"
                assert answer.holding.holder.inami == holder(7)
                assert answer.holding.period.start == common_pb2.Date(year=2025, month=3, day=1)
                assert not answer.holding.period.HasField("end")
                unknown = dmg_service_pb2.ConsultDmgRequest(
                    patient=common_pb2.PatientSelector(niss="99999999999")
                )
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call(unknown.SerializeToString(), timeout=10)
                assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert len(set(floor_payloads())) == FLOOR_ROWS
    finally:
        await floor.stop()


def test_floor_levels_cover_one_caller_the_run_and_the_loaded_baseline() -> None:
    assert floor_levels([1.0, 16.0], 16) == [1, 16]
    assert floor_levels([4.0], 8) == [1, 4, 8]
    assert floor_levels([], 16) == [1, 16]


def test_cpu_of_a_process_from_proc_and_a_restart_has_no_figure() -> None:
    burner = subprocess.Popen(
        [sys.executable, "-c", "import sys; sum(i * i for i in range(3_000_000)); sys.stdin.read()"],
        stdin=subprocess.PIPE,
    )
    try:
        before = Snapshot.take({"burner": burner.pid, "none": None, "client": os.getpid()})
        # Wait until the child has done its sums (it then blocks on stdin): its CPU is all there.
        while (found := read_cpu(burner.pid)) is not None and found.ticks < 5:
            time.sleep(0.01)
        after = Snapshot.take({"burner": burner.pid, "none": None, "client": os.getpid()})
    finally:
        assert burner.stdin is not None
        burner.stdin.close()
        burner.wait(30)
    assert read_cpu(burner.pid) is None
    deltas = cpu_delta(before, after)
    assert deltas["none"] is None
    window = per_request(before, after, 10, groups={"both": ["burner", "client"], "missing": ["none"]})
    assert window["by_process"]["burner"]["pid"] == burner.pid
    assert window["sums_ms_per_request"]["missing"] is None
    assert window["sums_ms_per_request"]["both"] is not None
    restarted = Snapshot(
        after.at, {"burner": ProcCpu(burner.pid + 1, 1, 10**6), "none": None, "client": None}
    )
    assert cpu_delta(before, restarted)["burner"] is None
    same_pid_new_start = Snapshot(after.at, {"burner": ProcCpu(burner.pid, -1, 10**6)})
    assert cpu_delta(Snapshot(0, {"burner": ProcCpu(burner.pid, 5, 0)}), same_pid_new_start)["burner"] is None
    assert per_request(before, after, 0)["by_process"]["burner"]["cpu_ms_per_request"] is None


class _Handle:
    """A stand-in cluster description naming real processes (this one and a sleeping child)."""

    def __init__(self, child: int) -> None:
        self.desc = {
            "supervisor_pid": os.getpid(),
            "processes": [
                {"name": "hub", "role": "hub", "pid": child},
                {"name": "ehealth", "role": "ehealth", "pid": child},
                {"name": "oa-100", "role": "oa", "oa_code": "100", "pid": child},
            ],
        }

    def refresh(self) -> dict[str, Any]:
        return self.desc


async def test_cpu_meter_per_step_and_idle_window() -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; sys.stdin.read()", stdin=asyncio.subprocess.PIPE
    )
    try:
        meter = CpuMeter(_Handle(child.pid))  # type: ignore[arg-type]
        rec = Recorder(t0=0.0)
        for i in range(8):
            rec.record("ConsultDmg", "100", "OK", i * 0.01, i * 0.01 + 0.001, step=0 if i < 5 else 1)
        steps = [Step(1, 0.05), Step(2, 0.05)]
        meter.finish(await meter.sample_steps(time.monotonic(), steps))
        cpu = meter.steps_report(rec, steps)
        tail = await meter.tail(rec, 5.0, every=0.05)
        idle = await meter.idle(0.0, 0.05)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        await asyncio.wait_for(child.wait(), 30)
    assert [s["requests"] for s in cpu["steps"]] == [5, 3]
    assert cpu["run"]["requests"] == 8
    for window in [*cpu["steps"], cpu["run"]]:
        assert set(window["by_process"]) == {"hub", "ehealth", "oa-100", "supervisor", "client"}
        assert window["by_process"]["oa-100"]["role"] == "oa"
        assert set(window["sums_ms_per_request"]) == {"oa_nodes", "mesh", "chain"}
        assert all(p["cpu_ms_per_request"] is not None for p in window["by_process"].values())
    # The tail after the load: the sleeping stand-ins are quiet at once.
    assert tail["tail"]["quiet"] is True
    assert tail["tail"]["requests"] == 8
    assert tail["run_with_tail"]["by_process"]["oa-100"]["served"] == 8
    # An OA node's CPU per request it served itself.
    assert [s["by_process"]["oa-100"]["served"] for s in cpu["steps"]] == [5, 3]
    assert cpu["run"]["by_process"]["oa-100"]["served"] == 8
    oa = cpu["run"]["by_process"]["oa-100"]
    assert oa["cpu_ms_per_served_request"] == round(oa["cpu_ms"] / 8, 3)
    assert "served" not in cpu["run"]["by_process"]["hub"]
    assert idle["by_process"]["oa-100"]["cpu_ms_per_s"] is not None
    assert idle["oa_max_cpu_ms_per_s"] is not None


# --- the report ------------------------------------------------------------------------------------------


def _measured(p50: float, p99: float, rate: float, level: int, chain_cpu: float) -> dict[str, Any]:
    return {
        "concurrency": level,
        "requests": 100,
        "errors": 0,
        "throughput_rps": rate,
        "latency_ms": {"p50": p50, "p90": p50, "p99": p99, "p99.9": p99, "max": p99, "mean": p50},
        "cpu": {
            "requests": 100,
            "by_process": {"floor-proxy": {"pid": 1, "cpu_ms": 100.0, "cpu_ms_per_request": chain_cpu}},
            "sums_ms_per_request": {"chain": chain_cpu},
        },
    }


def _floor(p50: float, rate16: float) -> dict[str, Any]:
    by = {
        "1": _measured(p50, 4 * p50, 1 / p50 * 1000, 1, 2.0),
        "16": _measured(8 * p50, 30 * p50, rate16, 16, 1.6),
    }
    return {
        "chain": "client → proxy → data",
        "by_concurrency": by,
        "latency": by["1"],
        "throughput": by["16"],
    }


ECHO = {
    "latency": _measured(0.4, 1.0, 2000.0, 1, 0.5),
    "throughput": _measured(5.0, 9.0, 2500.0, 16, 0.5),
}
BASELINE = {
    "echo_direct": ECHO,
    "echo_proxy": ECHO,
    "floor": _floor(2.0, 800.0),
    "floor_check": _floor(3.0, 500.0),
}


def _cpu_window(requests: int, level: float, per_request_ms: float) -> dict[str, Any]:
    names = {
        "hub": "hub",
        "ehealth": "ehealth",
        "oa-100": "oa",
        "supervisor": "supervisor",
        "client": "client",
    }
    return {
        "index": 0,
        "level": level,
        "requests": requests,
        "seconds": 1.0,
        "by_process": {
            n: {"pid": 1, "cpu_ms": 1.0, "cpu_ms_per_request": per_request_ms, "cpu_ms_per_s": 1.0, "role": r}
            for n, r in names.items()
        },
        "sums_ms_per_request": {
            "oa_nodes": per_request_ms,
            "mesh": 3 * per_request_ms,
            "chain": 4 * per_request_ms,
        },
    }


def _closed_report(rpc: str, idle_oa: float, *, status: str = "OK") -> dict[str, Any]:
    rec = Recorder(t0=0.0)
    for i in range(100):  # step 0 (1 in flight): 2.8 ms
        rec.record(rpc, "100", status, i * 0.01, i * 0.01 + 0.0028, step=0)
    for i in range(400):  # step 1 (16 in flight): 20 ms, a tail at 150 ms
        end = 0.150 if i % 50 == 0 else 0.020
        rec.record(rpc, "100", status, 1 + i * 0.0025, 1 + i * 0.0025 + end, step=1)
    cpu = {
        "steps": [_cpu_window(100, 1, 2.5), {**_cpu_window(400, 16, 2.0), "index": 1}],
        "run": _cpu_window(500, 0, 2.1),
        "idle": {
            "seconds": 10.0,
            "by_process": {
                "oa-100": {"pid": 1, "cpu_ms": 10.0, "cpu_ms_per_s": idle_oa, "role": "oa"},
                "hub": {"pid": 2, "cpu_ms": 5.0, "cpu_ms_per_s": 0.5, "role": "hub"},
            },
        },
    }
    return build_report(
        RunConfig(mode="closed", levels="1,16", duration=2, mix=rpc, name="closed"),
        handle=None,
        recorder=rec,
        steps=[Step(1, 1), Step(16, 1)],
        baseline=BASELINE,
        faults=list[FaultRecord](),
        runner=None,
        started_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        cpu=cpu,
    )


def test_report_carries_the_ratios_to_the_floor_at_each_level_and_the_targets() -> None:
    report = _closed_report("ConsultDmg", idle_oa=0.8)
    json.dumps(report)
    consult = report["summary"]["by_rpc"]["ConsultDmg"]
    for hop in ("floor", "floor_check"):
        assert set(consult[f"ratio_to_{hop}"]) == {"p50", "p99", "throughput"}
    one, sixteen = report["steps"]
    step_consult = one["by_rpc"]["ConsultDmg"]
    p50 = step_consult["latency_ms"]["p50"]
    assert step_consult["ratio_to_floor"]["p50"] == round(p50 / 2.0, 2)  # the floor at 1 in flight
    assert step_consult["ratio_to_floor_check"]["p50"] == round(p50 / 3.0, 2)
    loaded = sixteen["by_rpc"]["ConsultDmg"]
    assert loaded["ratio_to_floor"]["throughput"] == round(loaded["throughput_rps"] / 800.0, 4)  # at 16
    assert loaded["ratio_to_floor"]["p50"] == round(loaded["latency_ms"]["p50"] / 16.0, 2)
    assert level_ratios(loaded, BASELINE, "floor", 3) == {}  # no floor at that level
    # CPU per process per step, with the chain against the floor's at the same level.
    steps = report["cpu"]["steps"]
    assert steps[0]["by_process"]["hub"]["cpu_ms_per_request"] == 2.5
    assert steps[0]["ratio_to_floor"]["floor"] == {"floor_chain_ms": 2.0, "ratio": 5.0}
    assert steps[1]["ratio_to_floor"]["floor"] == {"floor_chain_ms": 1.6, "ratio": 5.0}
    targets = {t["name"]: t for t in report["targets"]}
    p50_target = targets["consult p50 at 1 in flight / floor p50"]
    assert p50_target["value"] == step_consult["ratio_to_floor"]["p50"]
    assert p50_target["met"] is (p50_target["value"] <= 1.5)
    rate = targets["consult throughput at 16 in flight / floor's"]
    assert rate["met"] is (rate["value"] >= 0.7)
    # Issue 13's own floor (the chain with the check hop) is judged too, each goal naming its floor.
    issue_p50 = targets["consult p50 at 1 in flight / floor_check (issue 13's floor) p50"]
    assert (issue_p50["value"], issue_p50["floor"]) == (
        step_consult["ratio_to_floor_check"]["p50"],
        "floor_check",
    )
    assert issue_p50["met"] is (issue_p50["value"] <= 1.5)
    issue_rate = targets["consult throughput at 16 in flight / floor_check (issue 13's floor)'s"]
    assert issue_rate["value"] == loaded["ratio_to_floor_check"]["throughput"]
    assert (rate["floor"], issue_rate["floor"]) == ("floor", "floor_check")
    idle = targets["idle OA node CPU-ms per second (the busiest of them)"]
    assert (idle["value"], idle["met"]) == (0.8, True)
    page = render_html(report)
    for table in ("targets", "cpu", "oa-served-cpu", "idle-cpu", "floor", "steps"):
        assert f'class="{table}"' in page
    assert "p50 ×floor" in page
    assert "chain ×floor" in page


def test_consults_answered_with_refusals_are_not_judged_against_the_floor() -> None:
    # An unknown patient (the clock moved past the population's affiliations) answers fast and proves nothing.
    report = _closed_report("ConsultDmg", idle_oa=0.8, status="NOT_FOUND")
    assert report["steps"][0]["by_rpc"]["ConsultDmg"]["refused"] == 100
    assert not any(t["name"].startswith("consult") for t in report["targets"])


def test_report_checks_the_notify_tail_and_a_busy_idle_node() -> None:
    report = _closed_report("NotifyDmg", idle_oa=20.0)
    targets = {t["name"]: t for t in report["targets"]}
    tail = targets["notify p99 / p50 at 16 in flight"]
    lat = report["steps"][1]["by_rpc"]["NotifyDmg"]["latency_ms"]
    assert tail["value"] == round(lat["p99"] / lat["p50"], 3)
    assert tail["met"] is (tail["value"] < 10)
    assert targets["idle OA node CPU-ms per second (the busiest of them)"]["met"] is False
    assert not any(name.startswith("consult") for name in targets)
