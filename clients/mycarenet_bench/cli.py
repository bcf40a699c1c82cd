"""`mycarenet-bench`: load, faults and reports against the local cluster.

mycarenet-bench run --data var/cluster --rate 50 --duration 60 --fault kill:oa-300@20s
mycarenet-bench run --start-cluster --data var/bench --mode closed --concurrency 16 --mix consult
mycarenet-bench fanout --data var/cluster --repeat 10
mycarenet-bench baseline
mycarenet-bench report bench.json          # re-render the HTML page from a JSON report
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import random
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mycarenet_bench import baseline as baseline_mod
from mycarenet_bench.fanout import measure_fanout
from mycarenet_bench.faults import FaultSpecError
from mycarenet_bench.mesh import (
    BENCH_THROTTLE_BURST,
    BENCH_THROTTLE_RATE,
    DEFAULT_MIX,
    ClusterHandle,
    ClusterNotUp,
    Mesh,
    StartedCluster,
    build_workload,
)
from mycarenet_bench.report import (
    SUMMARY_HEADERS,
    cpu_table,
    floor_rows,
    fmt,
    oa_served_table,
    render_html,
    summary_row,
    write_reports,
)
from mycarenet_bench.run import RunConfig, default_output, run

app = typer.Typer(
    help="Latency and availability of the mycarenet-mesh: load, faults, reports.", no_args_is_help=True
)
console = Console(width=200)
DataOpt = Annotated[
    Path, typer.Option("--data", envvar="MYCARENET_DATA", help="the cluster's data folder (cluster.json)")
]
DEFAULT_DATA = Path("var/cluster")


def _ms(value: float) -> str:
    return f"{value:.2f}"


def print_summary(report: dict[str, Any]) -> None:
    table = Table(title=f"mycarenet-bench {report.get('name') or ''} ({report['duration_s']:g}s measured)")
    for col in SUMMARY_HEADERS:
        table.add_column(col, justify="right")
    summary = report["summary"]
    rows = [("all", summary["overall"]), *summary["by_rpc"].items()]
    rows += [(f"OA {k}" if k != "-" else "not bound", v) for k, v in summary["by_oa"].items()]
    for name, s in rows:
        table.add_row(*(fmt(v) for v in summary_row(name, s)))
    console.print(table)
    base = report.get("baseline")
    if base:
        for hop in ("echo_direct", "echo_proxy"):
            b = base[hop]
            console.print(
                f"baseline {hop}: p50 {_ms(b['latency']['latency_ms']['p50'])} ms, "
                f"p99 {_ms(b['latency']['latency_ms']['p99'])} ms (1 caller); "
                f"{b['throughput']['throughput_rps']:.0f}/s with {b['throughput']['concurrency']} callers"
            )
        for row in floor_rows(base):
            console.print(
                f"{row[0]} at {row[1]} in flight: p50 {fmt(row[2])} ms, p99 {fmt(row[3])} ms,"
                f" {fmt(row[4])}/s; CPU-ms per request {fmt(row[5], 3)} ({row[6]})"
            )
    for step in report.get("steps", []):
        for rpc, s in (step.get("by_rpc") or {}).items():
            ratio = s.get("ratio_to_floor") or {}
            check = s.get("ratio_to_floor_check") or {}
            console.print(
                f"step {step['index']} ({fmt(step['level'], 0)}) {rpc}: p50 {fmt(s['latency_ms']['p50'])} ms"
                f" = {fmt(ratio.get('p50'))} × floor ({fmt(check.get('p50'))} × floor_check), p99"
                f" {fmt(ratio.get('p99'))} ×, throughput {fmt(s['throughput_rps'])}/s ="
                f" {fmt(ratio.get('throughput'))} × floor ({fmt(check.get('throughput'))} × floor_check)"
            )
    headers, rows = cpu_table(report)
    if rows:
        cpu = Table(title="CPU-ms per answered request, per process (/proc utime + stime)")
        for col in headers:
            cpu.add_column(col, justify="right")
        for row in rows:
            cpu.add_row(*(fmt(v, 3) for v in row))
        console.print(cpu)
    headers, rows = oa_served_table(report)
    if rows:
        served = Table(title="OA nodes: CPU-ms per request each served itself (requests served)")
        for col in headers:
            served.add_column(col, justify="right")
        for row in rows:
            served.add_row(*(v if isinstance(v, str) else fmt(v, 0) for v in row))
        console.print(served)
    idle = (report.get("cpu") or {}).get("idle")
    if idle:
        console.print(
            f"idle CPU-ms/s over {fmt(idle['seconds'], 0)}s: "
            + ", ".join(f"{n} {fmt(p['cpu_ms_per_s'])}" for n, p in idle["by_process"].items())
        )
    for t in report.get("targets", []):
        colour = "green" if t["met"] else "red"
        console.print(
            f"[{colour}]target {t['name']}: {fmt(t['value'])} (goal {t['goal']}): "
            f"{'met' if t['met'] else 'MISSED'}[/{colour}]"
        )
    for f in report.get("faults", []):
        rec = ", ".join(f"{k} {v['recovery_seconds']:g}s" for k, v in (f.get("recovery") or {}).items())
        serving = f" SERVING after {f['serving_after_s']}s;" if f.get("serving_after_s") is not None else ""
        console.print(
            f"fault {f['spec']} at {f.get('applied_at')}s:{serving} recovery {rec} {f.get('note', '')}"
        )
    for rpc, errors in report.get("errors", {}).items():
        for key, n in errors.items():
            console.print(f"  {rpc}: {key} × {n}")
    colour = "red" if report["hung"] else "green"
    console.print(f"[{colour}]hung past deadline: {report['hung']}[/{colour}]")


@app.command("run")
def run_cmd(
    data: DataOpt = DEFAULT_DATA,
    start_cluster: Annotated[
        bool, typer.Option("--start-cluster", help="start a cluster in --data for this run (stopped after)")
    ] = False,
    population: Annotated[
        int | None, typer.Option(help="members seeded (default: read from cluster.json; 2000 when starting)")
    ] = None,
    today: Annotated[
        str | None, typer.Option(help="with --start-cluster: the mesh's today (YYYY-MM-DD)")
    ] = None,
    base_port: Annotated[
        int | None, typer.Option(help="with --start-cluster (default: a free range)")
    ] = None,
    throttle_rate: Annotated[
        float, typer.Option(help="with --start-cluster: hub throttle per provider (calls/s)")
    ] = BENCH_THROTTLE_RATE,
    throttle_burst: Annotated[
        int, typer.Option(help="with --start-cluster: hub throttle burst")
    ] = BENCH_THROTTLE_BURST,
    mode: Annotated[str, typer.Option(help="open (fixed arrival rate) or closed (N in flight)")] = "open",
    rate: Annotated[str, typer.Option(help="open loop: arrivals per second, steps comma-separated")] = "50",
    concurrency: Annotated[
        str, typer.Option(help="closed loop: requests in flight, steps comma-separated")
    ] = "8",
    duration: Annotated[float, typer.Option(help="measured seconds (split evenly over the steps)")] = 60.0,
    warmup: Annotated[float, typer.Option(help="seconds of load before measuring (not recorded)")] = 5.0,
    mix: Annotated[str, typer.Option(help="scenario weights")] = DEFAULT_MIX,
    deadline: Annotated[float, typer.Option(help="gRPC deadline of every call (s)")] = 5.0,
    hang_grace: Annotated[
        float, typer.Option(help="a call still open this long after its deadline is hung")
    ] = 2.0,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            help="KIND:TARGET@AT\\[+DURATION]\\[/EVERY]\\[=VALUE], e.g. kill:oa-300@30s/30s (repeatable)"
        ),
    ] = None,
    no_baseline: Annotated[
        bool, typer.Option("--no-baseline", help="skip the baselines (echoes and floor)")
    ] = False,
    no_floor: Annotated[bool, typer.Option("--no-floor", help="skip the floor chains")] = False,
    floor_read: Annotated[
        str,
        typer.Option(help="the floor's SQLite read: loop (sqlite3 on the event loop, as the OA) or thread"),
    ] = "loop",
    interleave: Annotated[
        int,
        typer.Option(
            help="closed loop without faults: each step in N rounds of the mesh's load then each floor chain"
            " at the same concurrency (0: the floor once, before the load)"
        ),
    ] = 5,
    no_cpu: Annotated[bool, typer.Option("--no-cpu", help="skip the CPU per process (/proc)")] = False,
    idle_seconds: Annotated[
        float,
        typer.Option(
            help="quiet window after the load: idle CPU per second of each process (0: none; /proc counts"
            " in 10 ms ticks, so 20 s resolve 0.5 ms/s)"
        ),
    ] = 20.0,
    quiet_timeout: Annotated[
        float,
        typer.Option(help="after the load, CPU until the mesh is quiet (its tail), waiting at most this (s)"),
    ] = 60.0,
    baseline_seconds: Annotated[float, typer.Option(help="seconds per baseline measurement")] = 3.0,
    baseline_mode: Annotated[str, typer.Option(help="process or inprocess echo servers")] = "process",
    channels: Annotated[int, typer.Option(help="gRPC channels to the hub")] = 2,
    seed: Annotated[int, typer.Option(help="random seed of the scenario choices")] = 1,
    name: Annotated[str, typer.Option(help="a label for the report")] = "",
    out: Annotated[Path | None, typer.Option(help="JSON report path (the HTML page goes beside it)")] = None,
) -> None:
    """Drive the cluster with the scenario mix, apply faults on a schedule, write JSON and HTML reports."""
    cfg = RunConfig(
        mode=mode,
        levels=rate if mode == "open" else concurrency,
        duration=duration,
        warmup=warmup,
        mix=mix,
        deadline=deadline,
        hang_grace=hang_grace,
        faults=list(fault or []),
        baseline=not no_baseline,
        floor=not no_floor,
        floor_read=floor_read,
        interleave=interleave,
        cpu=not no_cpu,
        idle_seconds=idle_seconds,
        quiet_timeout=quiet_timeout,
        baseline_seconds=baseline_seconds,
        baseline_mode=baseline_mode,
        baseline_concurrency=max(1, int(float(concurrency.split(",")[-1]))) if mode == "closed" else 16,
        channels=channels,
        seed=seed,
        population=population,
        name=name,
    )
    started: StartedCluster | None = None
    try:
        if start_cluster:
            started = StartedCluster(
                data,
                population=population or 2000,
                today=today,
                base_port=base_port,
                throttle_rate=throttle_rate,
                throttle_burst=throttle_burst,
            )
            console.print(f"starting a cluster in {data} (population {started.population}) ...")
            handle = started.start()
            cfg.population = started.population
        else:
            handle = ClusterHandle.load(data)
        report = asyncio.run(run(cfg, handle, log=console.print))
    except (ClusterNotUp, ValueError, FaultSpecError) as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    finally:
        if started is not None:
            console.print("stopping the cluster ...")
            started.stop()
    path = out or default_output(name)
    html_path = write_reports(report, path)
    print_summary(report)
    console.print(f"reports: {path} {html_path}")
    raise typer.Exit(1 if report["hung"] else 0)


@app.command()
def fanout(
    data: DataOpt = DEFAULT_DATA,
    repeat: Annotated[int, typer.Option(help="lists per scope")] = 10,
    gp: Annotated[str | None, typer.Option(help="the GP asking (default: the demo GP A)")] = None,
    out: Annotated[Path | None, typer.Option(help="JSON output")] = None,
) -> None:
    """The patient list over all seven OAs against each OA alone (post → PATIENT_LIST in the mailbox)."""
    handle = ClusterHandle.load(data)
    requester = gp or handle.desc["demo"]["gp_a"]

    async def go() -> dict[str, Any]:
        workload = build_workload(handle.population_size(), handle.today, 2014, handle.keys)
        mesh = Mesh(handle, workload, rng=random.Random(1))
        try:
            return await measure_fanout(mesh, requester, repeat=repeat)
        finally:
            await mesh.close()

    result = asyncio.run(go())
    result["started_at"] = dt.datetime.now(dt.UTC).isoformat()
    table = Table(title=f"patient list fan-out ({repeat} per scope, GP {requester})")
    for col in ("scope", "entries", "missing", "ack p50", "p50 ms", "p90 ms", "p99 ms", "max ms"):
        table.add_column(col, justify="right")
    for scope, s in result["scopes"].items():
        m = s["to_message_ms"]
        table.add_row(
            scope,
            str(s["entries"]),
            str(s["missing_insurers"]),
            _ms(s["post_ack_ms"]["p50"]),
            _ms(m["p50"]),
            _ms(m["p90"]),
            _ms(m["p99"]),
            _ms(m["max"]),
        )
    console.print(table)
    console.print(result["comparison"])
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        console.print(f"written: {out}")


@app.command()
def baseline(
    seconds: Annotated[float, typer.Option(help="seconds per measurement")] = 3.0,
    concurrency: Annotated[int, typer.Option(help="callers for the throughput figure")] = 16,
    mode: Annotated[str, typer.Option(help="process or inprocess")] = "process",
    data: Annotated[
        Path | None, typer.Option("--data", help="use this cluster's mTLS certificates (default: plaintext)")
    ] = None,
    floor_read: Annotated[str, typer.Option(help="the floor's SQLite read: loop or thread")] = "loop",
) -> None:
    """Only the machine's baselines: echo over one gRPC hop and over one Python proxy hop, and the floor
    chains (client → proxy → data server, and with a check hop) at one caller and ``concurrency``."""
    tls = None
    if data is not None:
        with contextlib.suppress(ClusterNotUp):
            tls = ClusterHandle.load(data).baseline_tls()
    result = asyncio.run(
        baseline_mod.measure_baseline(
            tls=tls, seconds=seconds, concurrency=concurrency, mode=mode, read=floor_read
        )
    )
    console.print_json(json.dumps(result))


@app.command()
def report(json_path: Path) -> None:
    """Render the HTML page of a JSON report again (beside it)."""
    data = json.loads(json_path.read_text())
    html_path = json_path.with_suffix(".html")
    html_path.write_text(render_html(data))
    console.print(f"written: {html_path}")
