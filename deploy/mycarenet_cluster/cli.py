"""`mycarenet-cluster`: the local cluster in one command (up, down, status, reset)."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer

# status and down must answer fast: the supervisor (seeder, SDK, telemetry) is imported by `up` only.
from mycarenet_cluster.probe import DESCRIPTION, channel_credentials, health, running

app = typer.Typer(help="Run the mycarenet-mesh locally as real processes.", no_args_is_help=True)


@functools.cache
def console() -> Any:
    """rich's console, imported on first use: `status --json` never needs it (and starts faster)."""
    from rich.console import Console

    return Console()


DataOpt = Annotated[Path, typer.Option("--data", envvar="MYCARENET_DATA", help="data folder")]
DEFAULT_DATA = Path("var/cluster")


def _read(data: Path) -> dict[str, Any] | None:
    path = data / DESCRIPTION
    if not path.is_file():
        return None
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def _table(desc: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"mycarenet-mesh ({desc['data']}), today = {desc['today']}")
    for col in ("process", "role", "address", "pid", "health", "restarts"):
        table.add_column(col)
    for p in desc["processes"]:
        colour = "green" if p["health"] == "SERVING" else "red"
        table.add_row(
            p["name"],
            p["role"],
            p["address"],
            str(p["pid"]),
            f"[{colour}]{p['health']}[/{colour}]",
            str(p["restarts"]),
        )
    return table


@app.command()
def up(
    data: DataOpt = DEFAULT_DATA,
    base_port: Annotated[int, typer.Option(help="hub port; eHealth = +1, OA nodes = +10..+16")] = 7400,
    population: Annotated[int, typer.Option(help="synthetic members to seed on first start")] = 500,
    today: Annotated[str | None, typer.Option(help="run the mesh as if today were YYYY-MM-DD")] = None,
    database_template: Annotated[
        str | None,
        typer.Option(help="database URL per process, '{name}' = process name (default SQLite files)"),
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="development only: plaintext inside the mesh")
    ] = False,
    reset: Annotated[bool, typer.Option("--reset", help="delete the data folder first")] = False,
    postgres: Annotated[
        str | None,
        typer.Option(help="PostgreSQL server URL: one database per process (created when missing)"),
    ] = None,
    otlp_endpoint: Annotated[
        str | None, typer.Option(help="send every process's traces to this OTLP/gRPC endpoint (host:port)")
    ] = None,
    metrics: Annotated[
        bool, typer.Option("--metrics", help="Prometheus endpoint per process (port + 1000)")
    ] = False,
) -> None:
    """Start eHealth, the hub and the seven OA nodes; Ctrl-C or SIGTERM stops them all."""
    from mycarenet_cluster.supervisor import ClusterConfig, run

    existing = _read(data)
    if existing and running(existing.get("supervisor_pid")):
        console().print(
            f"[red]a cluster is already up with this data folder (pid {existing['supervisor_pid']})[/red]"
        )
        raise typer.Exit(1)
    if reset and data.exists():
        shutil.rmtree(data)
    cfg = ClusterConfig(
        data=data,
        base_port=base_port,
        population=population,
        insecure=insecure,
        today=dt.date.fromisoformat(today) if today else None,
        database_template=database_template,
        postgres=postgres,
        otlp_endpoint=otlp_endpoint,
        metrics=metrics,
    )

    def ready(desc: dict[str, Any]) -> None:
        console().print(_table(desc))
        console().print(f"cluster description: {data / DESCRIPTION}")
        demo = desc.get("demo") or {}
        if demo:
            console().print(
                f"demo: GP A {demo['gp_a']}, GP B {demo['gp_b']}, patient {demo['patient']}"
                f" — try: mycarenet login {demo['gp_b']} && mycarenet consult {demo['patient']}"
            )
            if demo.get("pharmacist"):
                console().print(
                    f"demo pharmacist {demo['pharmacist']} — try: mycarenet login {demo['pharmacist']}"
                    f" && mycarenet pharmacy rights {demo['patient']}"
                )
            if demo.get("pharmacy"):
                console().print(
                    f"demo pharmacy {demo['pharmacy']} (a pharmacy's session, seed 003 §8.2.2.1) — try:"
                    f" mycarenet login {demo['pharmacy']} --pharmacist {demo['pharmacist']}"
                    f" && mycarenet pharmacy rights {demo['patient']}"
                )
        console().print(
            "your own test case: mycarenet admin provider add INAMI --first .. --last .."
            " and mycarenet admin patient add NISS --insurer 300 (README)"
        )
        console().print("[bold green]cluster up[/bold green] — Ctrl-C to stop")

    raise typer.Exit(asyncio.run(run(cfg, on_ready=ready)))


@app.command()
def down(
    data: DataOpt = DEFAULT_DATA,
    timeout: Annotated[
        float, typer.Option(help="seconds to wait for the supervisor and every process to end")
    ] = 45.0,
) -> None:
    """Stop the cluster that runs with this data folder; exit 1 when a process is still running after
    ``timeout`` (the supervisor gives each group of processes 10 s before it kills them)."""
    desc = _read(data)
    pid = desc.get("supervisor_pid") if desc else None
    if not desc or not running(pid):
        console().print("no cluster is up")
        return
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    pids = {"supervisor": pid} | {p["name"]: p["pid"] for p in desc["processes"] if p.get("pid")}
    deadline = time.monotonic() + timeout
    while any(running(p) for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [f"{name} (pid {p})" for name, p in pids.items() if running(p)]
    if alive:
        console().print(f"[red]still running after {timeout:g} s: {', '.join(alive)}[/red]")
        raise typer.Exit(1)
    console().print("stopped")


@app.command()
def status(data: DataOpt = DEFAULT_DATA, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every process with its address, pid and live health (probed all at once)."""
    desc = _read(data)
    if not desc or not running(desc.get("supervisor_pid")):
        if as_json:
            print(json.dumps({"up": False}))
        else:
            console().print("no cluster is up")
        raise typer.Exit(3)
    creds = channel_credentials(desc.get("tls"))

    async def refresh() -> None:
        states = await asyncio.gather(*(health(p["address"], creds, 0.5) for p in desc["processes"]))
        for p, state in zip(desc["processes"], states, strict=True):
            p["health"] = state

    asyncio.run(refresh())
    desc["up"] = True
    if as_json:
        print(json.dumps(desc, indent=2))
    else:
        console().print(_table(desc))


@app.command()
def reset(data: DataOpt = DEFAULT_DATA) -> None:
    """Delete the data folder (databases, keys, certificates). Refuses while the cluster is up."""
    desc = _read(data)
    if desc and running(desc.get("supervisor_pid")):
        console().print("[red]the cluster is up: run `mycarenet-cluster down` first[/red]")
        raise typer.Exit(1)
    if data.exists():
        shutil.rmtree(data)
    console().print(f"removed {data}")
