"""One benchmark run: baseline, warm-up, measured load with faults on a schedule, and the report data."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import platform
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

from mycarenet_bench import baseline as baseline_mod
from mycarenet_bench.faults import ClusterControl, FaultInjector, FaultRecord, expand, parse_fault
from mycarenet_bench.load import OpenLoop, Step, parse_steps, run_load
from mycarenet_bench.mesh import DEFAULT_MIX, ClusterHandle, Mesh, Result, build_workload, parse_mix
from mycarenet_bench.stats import NO_OA, Recorder, percentile_curve, recovery

SCHEMA = "mycarenet-bench/1"


@dataclass
class RunConfig:
    """Everything ``mycarenet-bench run`` can be told."""

    mode: str = "open"
    levels: str = "50"  # arrival rates (open) or concurrencies (closed), comma-separated steps
    duration: float = 60.0
    warmup: float = 5.0
    mix: str = DEFAULT_MIX
    deadline: float = 5.0
    hang_grace: float = 2.0
    faults: list[str] = field(default_factory=list)
    baseline: bool = True
    baseline_seconds: float = 3.0
    baseline_mode: str = "process"
    baseline_concurrency: int = 16
    channels: int = 2
    seed: int = 1
    population: int | None = None
    population_seed: int = 2014
    max_in_flight: int = 20_000
    recovery_threshold: float = 0.99
    name: str = ""


def _fault_windows(records: Sequence[FaultRecord], run_seconds: float) -> list[tuple[FaultRecord, float]]:
    """Each fault with the end of its observation window: the next fault (on any target, so that one
    fault's effect is not charged to another), or the end of the run."""
    out = []
    for rec in records:
        later = [r.at for r in records if r.at > rec.at]
        out.append((rec, min(later, default=run_seconds)))
    return out


def build_report(
    cfg: RunConfig,
    *,
    handle: ClusterHandle | None,
    recorder: Recorder,
    steps: Sequence[Step],
    baseline: dict[str, Any] | None,
    faults: Sequence[FaultRecord],
    runner: Any,
    started_at: dt.datetime,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The machine-readable report (also the input of the HTML page)."""
    seconds = sum(s.seconds for s in steps)
    timeline = recorder.timeline(seconds)

    def with_ratios(summary: dict[str, Any]) -> dict[str, Any]:
        summary["ratio_to_echo"] = baseline_mod.ratios(summary, baseline, "echo_direct")
        summary["ratio_to_proxy_hop"] = baseline_mod.ratios(summary, baseline, "echo_proxy")
        return summary

    by_rpc = {rpc: with_ratios(b.summary(seconds)) for rpc, b in sorted(recorder.by_rpc.items())}
    by_oa = {oa: with_ratios(b.summary(seconds)) for oa, b in sorted(recorder.by_oa.items())}
    by_rpc_oa: dict[str, dict[str, Any]] = {}
    for (rpc, oa), bucket in sorted(recorder.by_rpc_oa.items()):
        by_rpc_oa.setdefault(rpc, {})[oa] = bucket.summary(seconds)
    step_rows = []
    for index, step in enumerate(steps):
        found = recorder.by_step.get(index)
        row: dict[str, Any] = {"index": index, "level": step.level, "seconds": step.seconds}
        if found is not None:
            row |= with_ratios(found.summary(step.seconds))
        step_rows.append(row)
    fault_rows = []
    for rec, end in _fault_windows(faults, seconds):
        scopes: dict[str, Any] = {"overall": recorder.series()}
        if rec.oa_code:
            scopes[f"oa {rec.oa_code}"] = recorder.series(only=rec.oa_code)
            scopes[f"not bound to {rec.oa_code}"] = recorder.series(exclude=rec.oa_code)
        rec.recovery = {
            scope: asdict(recovery(series, rec.at, end, threshold=cfg.recovery_threshold))
            for scope, series in scopes.items()
        }
        fault_rows.append(asdict(rec))
    oa_codes = sorted(k for k in recorder.by_oa if k != NO_OA)
    cluster: dict[str, Any] = {}
    if handle is not None:
        desc = handle.refresh()
        cluster = {
            "data": desc.get("data"),
            "today": desc.get("today"),
            "tls": bool(desc.get("tls")),
            "population": cfg.population,
            "fault_proxies": bool(desc.get("fault_proxies")),
            "processes": [
                {k: p.get(k) for k in ("name", "role", "oa_code", "address", "pid", "restarts", "health")}
                for p in desc.get("processes", [])
            ],
        }
    overall = with_ratios(recorder.overall.summary(seconds))
    return {
        "schema": SCHEMA,
        "name": cfg.name,
        "started_at": started_at.isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "grpc": grpc.__version__,
        },
        "config": asdict(cfg),
        "cluster": cluster,
        "baseline": baseline,
        "duration_s": seconds,
        "generator": {
            "launched": getattr(runner, "launched", None),
            "overflowed": getattr(runner, "overflowed", 0),
            "max_in_flight": getattr(runner, "max_seen_in_flight", None),
        },
        "summary": {"overall": overall, "by_rpc": by_rpc, "by_oa": by_oa, "by_rpc_oa": by_rpc_oa},
        "steps": step_rows,
        "errors": {rpc: dict(c.most_common()) for rpc, c in sorted(recorder.errors.items())},
        "hung": recorder.hung,
        "availability": {
            "overall": overall["availability"],
            "by_oa": {oa: by_oa[oa]["availability"] for oa in by_oa},
            "not_bound_to": {oa: recorder.availability_excluding(oa) for oa in oa_codes},
        },
        "faults": fault_rows,
        "percentile_curves": {
            "overall": percentile_curve(recorder.overall.hist),
            **{rpc: percentile_curve(b.hist) for rpc, b in sorted(recorder.by_rpc.items())},
        },
        "timeline": timeline,
        **(extra or {}),
    }


async def run(cfg: RunConfig, handle: ClusterHandle, *, log: Any = print) -> dict[str, Any]:
    """Run the benchmark against a running cluster and return the report data."""
    started_at = dt.datetime.now(dt.UTC)
    mix = parse_mix(cfg.mix)
    steps = parse_steps(cfg.levels, cfg.duration)
    specs = [parse_fault(f) for f in cfg.faults]
    events = expand(specs, cfg.duration)
    control = ClusterControl(handle.refresh, handle.health)
    control.validate(events)

    baseline: dict[str, Any] | None = None
    if cfg.baseline:
        log(f"baseline: echo over one gRPC hop and over one proxy hop ({cfg.baseline_seconds:g}s each) ...")
        baseline = await baseline_mod.measure_baseline(
            tls=handle.baseline_tls(),
            seconds=cfg.baseline_seconds,
            concurrency=cfg.baseline_concurrency,
            mode=cfg.baseline_mode,
        )

    cfg.population = cfg.population or handle.population_size()
    workload = build_workload(cfg.population, handle.today, cfg.population_seed, handle.keys)
    mesh = Mesh(
        handle,
        workload,
        channels=cfg.channels,
        deadline=cfg.deadline,
        hang_grace=cfg.hang_grace,
        rng=random.Random(cfg.seed),
    )
    try:
        log(f"login: {len(workload.gps)} GPs; {len(workload.patients)} patients")
        await mesh.login_all(workload.gps)

        def ignore(_: Result) -> None:
            return None

        if cfg.warmup > 0:
            log(f"warm-up: {cfg.warmup:g}s")

            async def warm(step: int, intended: float) -> None:
                await mesh.scenario(mesh.pick(mix), intended, ignore)

            await run_load(cfg.mode, warm, [Step(steps[0].level, cfg.warmup)], start=time.monotonic())

        t0 = time.monotonic() + 0.05
        recorder = Recorder(t0)

        async def measured(step: int, intended: float) -> None:
            def record(r: Result) -> None:
                rpc, oa, status, code, reason, start, end = r
                recorder.record(rpc, oa, status, start, end, code=code, reason=reason, step=step)

            await mesh.scenario(mesh.pick(mix), intended, record)

        def overflow(step: int, due: float) -> None:
            recorder.record("(generator)", None, "CANCELLED", due, due, reason="MAX_IN_FLIGHT", step=step)

        injector = FaultInjector(control, events, t0=t0)
        log(
            f"measuring: {cfg.mode} loop, levels {cfg.levels}, {cfg.duration:g}s, mix {cfg.mix}"
            + (f", {len(events)} fault events" if events else "")
        )
        load_task = asyncio.create_task(
            run_load(
                cfg.mode, measured, steps, start=t0, max_in_flight=cfg.max_in_flight, on_overflow=overflow
            )
        )
        fault_task = asyncio.create_task(injector.run())
        try:
            runner = await load_task
            await fault_task
        finally:
            for task in (load_task, fault_task):
                task.cancel()
            await asyncio.gather(load_task, fault_task, return_exceptions=True)
            await injector.cleanup()
        if isinstance(runner, OpenLoop) and runner.overflowed:
            log(f"warning: {runner.overflowed} arrivals over --max-in-flight were recorded as failures")
        return build_report(
            cfg,
            handle=handle,
            recorder=recorder,
            steps=steps,
            baseline=baseline,
            faults=injector.records,
            runner=runner,
            started_at=started_at,
        )
    finally:
        await mesh.close()


def default_output(name: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(f"bench-{name or 'run'}-{stamp}.json")
