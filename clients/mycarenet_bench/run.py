"""One benchmark run: baselines (echoes and the floor), warm-up, measured load with faults on a schedule,
the CPU each process of the mesh spent per request (``/proc``) and its idle CPU after, and the report data."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import platform
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from mycarenet_sdk.admin import AdminClient, admin_from_cluster

from mycarenet_bench import baseline as baseline_mod
from mycarenet_bench.cpu import Snapshot, cpu_delta, per_request, per_request_windows
from mycarenet_bench.faults import ClusterControl, FaultInjector, FaultRecord, expand, parse_fault
from mycarenet_bench.load import ClosedLoop, OpenLoop, Step, parse_steps, run_load
from mycarenet_bench.mesh import DEFAULT_MIX, ClusterHandle, Mesh, Result, build_workload, parse_mix
from mycarenet_bench.stats import NO_OA, Recorder, percentile_curve, recovery

SCHEMA = "mycarenet-bench/1"
FLOORS = ("floor", "floor_check")


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
    floor: bool = True  # the floor chains among the baselines
    floor_read: str = "loop"  # how the floor's data server reads: on the loop (as the OA node) or a thread
    # Closed loop without faults: each step in this many rounds, each round a slice of the mesh's load then
    # a slice of each floor chain at the same concurrency, so that both see the same machine (0: the floor
    # is measured once before the load).
    interleave: int = 5
    cpu: bool = True  # CPU per request of every process of the mesh, per step (/proc)
    idle_seconds: float = 20.0  # a quiet window after the load: idle CPU per second of each process
    quiet_timeout: float = 60.0  # after the load, wait at most this long for the mesh to be quiet (its tail)
    idle_settle: float = 1.0  # seconds left to the mesh between its quiet and the idle window
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
    cpu: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The machine-readable report (also the input of the HTML page)."""
    seconds = sum(s.seconds for s in steps)
    timeline = recorder.timeline(seconds)

    def with_ratios(summary: dict[str, Any], level: float | None = None) -> dict[str, Any]:
        """Ratios to the echoes, and to the floors: at the step's own concurrency (closed loop), else to
        the floor at one caller (p50, p99) and at its highest concurrency (throughput)."""
        summary["ratio_to_echo"] = baseline_mod.ratios(summary, baseline, "echo_direct")
        summary["ratio_to_proxy_hop"] = baseline_mod.ratios(summary, baseline, "echo_proxy")
        for hop in FLOORS:
            if level is not None and cfg.mode == "closed":
                summary[f"ratio_to_{hop}"] = baseline_mod.level_ratios(summary, baseline, hop, level)
            else:
                summary[f"ratio_to_{hop}"] = baseline_mod.ratios(summary, baseline, hop)
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
            row |= with_ratios(found.summary(step.seconds), step.level)
            row["by_rpc"] = {
                rpc: with_ratios(bucket.summary(step.seconds), step.level)
                for (i, rpc), bucket in sorted(recorder.by_step_rpc.items())
                if i == index
            }
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
    if cpu is not None and cfg.mode == "closed":
        for row in cpu.get("steps", []):
            row["ratio_to_floor"] = cpu_ratios(row, baseline, row["level"])
    oa_codes = sorted(k for k in recorder.by_oa if k != NO_OA)
    cluster: dict[str, Any] = {}
    if handle is not None:
        desc = handle.refresh()
        cluster = {
            "data": desc.get("data"),
            "today": desc.get("today"),
            "tls": bool(desc.get("tls")),
            "population": cfg.population,
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
        "cpu": cpu,
        "targets": targets(cfg, step_rows, baseline, cpu),
        **(extra or {}),
    }


def cpu_ratios(window: dict[str, Any], baseline: dict[str, Any] | None, level: float) -> dict[str, Any]:
    """The chain's CPU per request (mesh processes and client) against each floor's at the same
    concurrency: ``{"floor": {"floor_chain_ms": ..., "ratio": ...}, ...}``."""
    out: dict[str, Any] = {}
    chain = (window.get("sums_ms_per_request") or {}).get("chain")
    for hop in FLOORS:
        found = ((baseline or {}).get(hop) or {}).get("by_concurrency", {}).get(str(int(level)))
        floor = ((found or {}).get("cpu") or {}).get("sums_ms_per_request", {}).get("chain")
        if floor:
            out[hop] = {"floor_chain_ms": floor, "ratio": round(chain / floor, 2) if chain else None}
    return out


# The goals of issue 13, checked on every run that has the figures (closed loop, one scenario per step).
CONSULT_P50_GOAL = 1.5  # consult p50 at 1 in flight: at most 1.5 × the floor's, same run
CONSULT_RATE_GOAL = 0.7  # consult throughput at N in flight: at least 0.7 × the floor's at N
NOTIFY_TAIL_GOAL = 10.0  # notify at N in flight: p99 under 10 × its p50
IDLE_OA_GOAL = 2.0  # an idle OA node: under 2 CPU-ms per second
FLOOR_LABELS = {"floor": "floor", "floor_check": "floor_check (issue 13's floor)"}
CONSULT_OK_SHARE = (
    0.99  # the consult goals are judged on steps whose answers were consults at least this often
)


def targets(
    cfg: RunConfig,
    steps: Sequence[dict[str, Any]],
    baseline: dict[str, Any] | None,
    cpu: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """Each goal the run can answer: its value, the goal, and whether it is met."""
    out: list[dict[str, Any]] = []

    def goal(name: str, value: float | None, op: str, limit: float, **more: Any) -> None:
        if value is None:
            return
        met = {"<": value < limit, "≤": value <= limit, "≥": value >= limit}[op]
        out.append({"name": name, "value": round(value, 3), "goal": f"{op} {limit:g}", "met": met, **more})

    if cfg.mode == "closed":
        for step in steps:
            level = int(step["level"])
            consult = (step.get("by_rpc") or {}).get("ConsultDmg")
            # Judged only when the consults were answered as consults: refusals (an unknown patient, a clock
            # moved past the population's affiliations) are cheaper than a consult and prove nothing.
            if consult and consult["ok"] >= CONSULT_OK_SHARE * (consult["ok"] + consult["refused"]) > 0:
                # Judged against both floors: issue 13 defines its floor as the chain with the check hop
                # (``floor_check``: a consult of then, hub → eHealth → OA); ``floor`` is the stricter chain
                # of a consult's present shape (hub → OA), reported beside it.
                for hop, label in FLOOR_LABELS.items():
                    ratio = consult.get(f"ratio_to_{hop}") or {}
                    if level == 1:
                        goal(
                            f"consult p50 at 1 in flight / {label} p50",
                            ratio.get("p50"),
                            "≤",
                            CONSULT_P50_GOAL,
                            step=step["index"],
                            floor=hop,
                        )
                    else:
                        goal(
                            f"consult throughput at {level} in flight / {label}'s",
                            ratio.get("throughput"),
                            "≥",
                            CONSULT_RATE_GOAL,
                            step=step["index"],
                            floor=hop,
                        )
            notify = (step.get("by_rpc") or {}).get("NotifyDmg")
            if notify and level > 1 and notify["latency_ms"]["p50"] > 0:
                lat = notify["latency_ms"]
                goal(
                    f"notify p99 / p50 at {level} in flight",
                    lat["p99"] / lat["p50"],
                    "<",
                    NOTIFY_TAIL_GOAL,
                    step=step["index"],
                )
    idle = (cpu or {}).get("idle") or {}
    oa_idle = [
        p["cpu_ms_per_s"]
        for p in idle.get("by_process", {}).values()
        if p.get("role") == "oa" and p.get("cpu_ms_per_s") is not None
    ]
    if oa_idle:
        goal("idle OA node CPU-ms per second (the busiest of them)", max(oa_idle), "<", IDLE_OA_GOAL)
    return out


async def run(cfg: RunConfig, handle: ClusterHandle, *, log: Any = print) -> dict[str, Any]:
    """Run the benchmark against a running cluster and return the report data."""
    started_at = dt.datetime.now(dt.UTC)
    mix = parse_mix(cfg.mix)
    steps = parse_steps(cfg.levels, cfg.duration)
    specs = [parse_fault(f) for f in cfg.faults]
    events = expand(specs, cfg.duration)
    ClusterControl(handle.refresh, handle.health).validate(events)
    admin: AdminClient | None = None

    interleaved = cfg.baseline and cfg.floor and cfg.mode == "closed" and not events and cfg.interleave > 0
    baseline: dict[str, Any] | None = None
    if cfg.baseline:
        levels = [s.level for s in steps] if cfg.mode == "closed" else []
        floor_now = cfg.floor and not interleaved
        log(
            "baseline: echo over one gRPC hop and over one proxy hop"
            + (
                ", the floor chains at "
                + ", ".join(map(str, baseline_mod.floor_levels(levels, cfg.baseline_concurrency)))
                + " in flight"
                if floor_now
                else ""
            )
            + f" ({cfg.baseline_seconds:g}s each) ..."
        )
        baseline = await baseline_mod.measure_baseline(
            tls=handle.baseline_tls(),
            seconds=cfg.baseline_seconds,
            concurrency=cfg.baseline_concurrency,
            mode=cfg.baseline_mode,
            floor=floor_now,
            levels=levels,
            read=cfg.floor_read,
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
        await mesh.login_all(workload.gps, pharmacies=workload.pharmacies)

        def ignore(_: Result) -> None:
            return None

        if cfg.warmup > 0:
            log(f"warm-up: {cfg.warmup:g}s")

            async def warm(step: int, intended: float) -> None:
                await mesh.scenario(mesh.pick(mix), intended, ignore)

            await run_load(cfg.mode, warm, [Step(steps[0].level, cfg.warmup)], start=time.monotonic())

        t0 = time.monotonic() + 0.05
        recorder = Recorder(t0)
        clock = PausedClock()

        async def measured(step: int, intended: float) -> None:
            def record(r: Result) -> None:
                rpc, oa, status, code, reason, start, end = r
                recorder.record(
                    rpc, oa, status, clock(start), clock(end), code=code, reason=reason, step=step
                )

            await mesh.scenario(mesh.pick(mix), intended, record)

        def overflow(step: int, due: float) -> None:
            recorder.record("(generator)", None, "CANCELLED", due, due, reason="MAX_IN_FLIGHT", step=step)

        # The faults go through the cluster's chaos API, with the administrator's certificate.
        admin = admin_from_cluster(handle.desc) if events else None
        injector = FaultInjector(ClusterControl(handle.refresh, handle.health, admin), events, t0=t0)
        log(
            f"measuring: {cfg.mode} loop, levels {cfg.levels}, {cfg.duration:g}s, mix {cfg.mix}"
            + (f", {len(events)} fault events" if events else "")
        )
        meter = CpuMeter(handle) if cfg.cpu else None
        runner: OpenLoop | ClosedLoop
        if interleaved:
            assert baseline is not None
            log(
                f"interleaved: each step in {cfg.interleave} rounds of the mesh's load then each floor chain"
                " at the same concurrency"
            )
            runner = await run_interleaved(
                cfg,
                steps,
                measured,
                t0=t0,
                clock=clock,
                meter=meter,
                baseline=baseline,
                tls=handle.baseline_tls(),
            )
        else:
            load_task = asyncio.create_task(
                run_load(
                    cfg.mode, measured, steps, start=t0, max_in_flight=cfg.max_in_flight, on_overflow=overflow
                )
            )
            fault_task = asyncio.create_task(injector.run())
            cpu_task = asyncio.create_task(meter.sample_steps(t0, steps)) if meter else None
            try:
                runner = await load_task
                await fault_task
                if meter is not None and cpu_task is not None:
                    meter.finish(await cpu_task)
            finally:
                tasks = [t for t in (load_task, fault_task, cpu_task) if t is not None]
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await injector.cleanup()
        cpu: dict[str, Any] | None = None
        if meter is not None:
            cpu = meter.steps_report(recorder, steps)
            if cfg.quiet_timeout > 0 and meter.last is not None:
                log(f"tail: CPU after the load until the mesh is quiet (at most {cfg.quiet_timeout:g}s)")
                cpu |= await meter.tail(recorder, cfg.quiet_timeout)
            if cfg.idle_seconds > 0:
                log(f"idle: {cfg.idle_settle:g}s to settle, then CPU over {cfg.idle_seconds:g}s without load")
                cpu["idle"] = await meter.idle(cfg.idle_settle, cfg.idle_seconds)
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
            cpu=cpu,
        )
    finally:
        await mesh.close()
        if admin is not None:
            await admin.close()


class PausedClock:
    """The run's clock with the floor's slices taken out: an interleaved run's mesh requests are recorded as
    if the mesh had been measured without pause (one timeline, per-second figures of the mesh only)."""

    def __init__(self) -> None:
        self.paused = 0.0

    def __call__(self, t: float) -> float:
        return t - self.paused


async def run_interleaved(
    cfg: RunConfig,
    steps: Sequence[Step],
    measured: Callable[[int, float], Any],
    *,
    t0: float,
    clock: PausedClock,
    meter: CpuMeter | None,
    baseline: dict[str, Any],
    tls: baseline_mod.TlsPaths | None,
) -> ClosedLoop:
    """Each closed-loop step in ``cfg.interleave`` rounds: a slice of the mesh's load at the step's
    concurrency, then a slice of each floor chain at the same concurrency (added to ``baseline``)."""
    session = baseline_mod.FloorSession(tls, cfg.baseline_mode, cfg.floor_read)
    await session.start()
    launched = 0
    try:
        if meter is not None:
            meter.begin()
        await asyncio.sleep(max(0.0, t0 - time.monotonic()))
        for index, step in enumerate(steps):
            part = step.seconds / cfg.interleave
            level = max(1, int(step.level))

            async def operation(_: int, intended: float, index: int = index) -> None:
                await measured(index, intended)

            for _round in range(cfg.interleave):
                before = meter.snapshot() if meter is not None else None
                runner = await run_load("closed", operation, [Step(step.level, part)], start=time.monotonic())
                launched += getattr(runner, "launched", 0)
                if meter is not None and before is not None:
                    meter.add(index, before, meter.snapshot())
                paused = time.monotonic()
                for name in baseline_mod.FLOOR_METHODS:
                    await session.measure(name, level, part)
                clock.paused += time.monotonic() - paused
        baseline |= session.result()
        for name in baseline_mod.FLOOR_METHODS:
            if name in baseline:
                baseline[name]["interleaved"] = {"rounds": cfg.interleave}
    finally:
        await session.stop()
    done = ClosedLoop(measured)
    done.launched = launched
    return done


class CpuMeter:
    """CPU of the mesh's processes (``/proc``) over the measured steps and over a quiet window: eHealth,
    the hub, each OA node, the supervisor and the ``client``, this process, the load generator."""

    def __init__(self, handle: ClusterHandle) -> None:
        self.handle = handle
        self.roles: dict[str, str] = {}
        self.codes: dict[str, str] = {}  # OA node name → insurer code
        self.windows: dict[int, list[tuple[Snapshot, Snapshot]]] = {}
        self.last: Snapshot | None = None  # the end of the last measured window
        self.watched: dict[str, int | None] = {}

    def pids(self) -> dict[str, int | None]:
        desc = self.handle.refresh()
        pids: dict[str, int | None] = {}
        for proc in desc.get("processes", []):
            pids[proc["name"]] = proc.get("pid")
            self.roles[proc["name"]] = proc.get("role", "")
            if proc.get("oa_code"):
                self.codes[proc["name"]] = proc["oa_code"]
        pids["supervisor"] = desc.get("supervisor_pid")
        pids["client"] = os.getpid()
        self.roles |= {"supervisor": "supervisor", "client": "client"}
        return pids

    async def sample_steps(self, t0: float, steps: Sequence[Step]) -> list[Snapshot]:
        """A snapshot at the start of measurement and at the end of each step but the last (that one is
        taken when the load has finished, by :meth:`finish`)."""
        self.watched = pids = self.pids()
        await asyncio.sleep(max(0.0, t0 - time.monotonic()))
        snapshots = [Snapshot.take(pids)]
        boundary = t0
        for step in steps[:-1]:
            boundary += step.seconds
            await asyncio.sleep(max(0.0, boundary - time.monotonic()))
            snapshots.append(Snapshot.take(pids))
        return snapshots

    def finish(self, snapshots: list[Snapshot]) -> None:
        """The step boundaries sampled by :meth:`sample_steps`, and now (the end of the load)."""
        ends = [*snapshots[1:], Snapshot.take(self.watched)]
        self.windows = {i: [(start, end)] for i, (start, end) in enumerate(zip(snapshots, ends, strict=True))}
        self.last = ends[-1]

    def begin(self) -> None:
        """Name the processes to watch (for :meth:`snapshot` and :meth:`add`)."""
        self.watched = self.pids()

    def snapshot(self) -> Snapshot:
        return Snapshot.take(self.watched)

    def add(self, step: int, before: Snapshot, after: Snapshot) -> None:
        """One slice of step ``step`` (an interleaved run measures each step in slices)."""
        self.windows.setdefault(step, []).append((before, after))
        self.last = after

    def groups(self, names: Sequence[str]) -> dict[str, list[str]]:
        oa = [n for n in names if self.roles.get(n) == "oa"]
        mesh = [n for n in names if self.roles.get(n) in ("hub", "ehealth", "oa")]
        return {"oa_nodes": oa, "mesh": mesh, "chain": [*mesh, "client"]}

    def _with_roles(
        self, window: dict[str, Any], served: Callable[[str], int] | None = None
    ) -> dict[str, Any]:
        """Each process's role; with ``served`` (insurer code → requests it answered in the window), an OA
        node's CPU per request *it* served as well."""
        for name, proc in window["by_process"].items():
            proc["role"] = self.roles.get(name, "")
            code = self.codes.get(name)
            if code is not None and served is not None:
                count = served(code)
                proc["served"] = count
                ms = proc.get("cpu_ms")
                proc["cpu_ms_per_served_request"] = round(ms / count, 3) if ms is not None and count else None
        return window

    def steps_report(self, recorder: Recorder, steps: Sequence[Step]) -> dict[str, Any]:
        """CPU per answered request of each process, per step and over the whole run."""
        if sorted(self.windows) != list(range(len(steps))):
            return {"steps": [], "run": None}
        names = list(self.windows[0][0][0].procs)
        groups = self.groups(names)
        rows = []
        for index, step in enumerate(steps):
            bucket = recorder.by_step.get(index)
            answered = (bucket.counts["ok"] + bucket.counts["refused"]) if bucket else 0
            window = per_request_windows(self.windows[index], answered, groups=groups)

            def served(code: str, index: int = index) -> int:
                found = recorder.by_step_oa.get((index, code))
                return found.counts["ok"] + found.counts["refused"] if found else 0

            rows.append({"index": index, "level": step.level, **self._with_roles(window, served)})
        total = recorder.overall.counts["ok"] + recorder.overall.counts["refused"]
        whole = per_request_windows(self.all_windows(), total, groups=groups)

        return {
            "source": "/proc/<pid>/stat utime + stime (every thread), per answered request",
            "steps": rows,
            "run": self._with_roles(whole, self._served_in_run(recorder)),
        }

    def all_windows(self) -> list[tuple[Snapshot, Snapshot]]:
        return [w for index in sorted(self.windows) for w in self.windows[index]]

    @staticmethod
    def _served_in_run(recorder: Recorder) -> Callable[[str], int]:
        def served(code: str) -> int:
            found = recorder.by_oa.get(code)
            return found.counts["ok"] + found.counts["refused"] if found else 0

        return served

    async def tail(
        self, recorder: Recorder, longest: float, *, every: float = 2.0, quiet_ms_per_s: float = 10.0
    ) -> dict[str, Any]:
        """The work the load left behind (relays, feeds, followers): CPU from the end of the load until every
        process of the mesh spends at most ``quiet_ms_per_s`` over ``every`` seconds (at most ``longest`` s),
        per answered request; and the run with its tail."""
        assert self.last is not None
        start = prev = self.last
        mesh = [n for n in start.procs if self.roles.get(n) in ("hub", "ehealth", "oa")]
        end, quiet = start, False
        deadline = time.monotonic() + longest
        while time.monotonic() < deadline:
            await asyncio.sleep(every)
            now = Snapshot.take(self.watched)
            deltas, seconds = cpu_delta(prev, now), max(now.at - prev.at, 1e-9)
            if all((deltas.get(n) or 0.0) / seconds <= quiet_ms_per_s for n in mesh):
                end, quiet = prev, True
                break
            prev = end = now
        total = recorder.overall.counts["ok"] + recorder.overall.counts["refused"]
        groups = self.groups(list(start.procs))
        tail = self._with_roles(per_request(start, end, total, groups=groups))
        tail["quiet"] = quiet
        whole = per_request_windows([*self.all_windows(), (start, end)], total, groups=groups)
        return {"tail": tail, "run_with_tail": self._with_roles(whole, self._served_in_run(recorder))}

    async def idle(self, settle: float, seconds: float) -> dict[str, Any]:
        """CPU per second of each process over ``seconds`` without load (after ``settle`` seconds)."""
        await asyncio.sleep(settle)
        pids = self.pids()
        before = Snapshot.take(pids)
        await asyncio.sleep(seconds)
        window = self._with_roles(per_request(before, Snapshot.take(pids), 0))
        oa = [p["cpu_ms_per_s"] for p in window["by_process"].values() if p["role"] == "oa"]
        known = [v for v in oa if v is not None]
        window["oa_max_cpu_ms_per_s"] = max(known, default=None)
        window["oa_mean_cpu_ms_per_s"] = round(sum(known) / len(known), 2) if known else None
        return window


def default_output(name: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(f"bench-{name or 'run'}-{stamp}.json")
