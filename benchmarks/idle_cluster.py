"""An idle cluster: keepalive and reconnects over N minutes with nothing to do (issue 17).

Starts ``mycarenet-cluster up`` (mutual TLS, the seven insurers, SQLite or ``--postgres``) on free ports in a
scratch folder, holds one provider's mailbox watch open (``MailboxService.WatchMessages`` through the SDK,
as provider software does) besides the mesh's own watch streams (eHealth → each insurer's holder-change
feed, the hub → each insurer's affiliation feed and eHealth's revocations, each insurer → eHealth's
cadastre), lets it idle for ``--minutes`` (10 by default), stops it, and counts in every process's log
(and the supervisor's) the lines that say a connection was sent away or a watch stream reconnected:
``too_many_pings`` (a GOAWAY for pinging faster than the server's policy), any other GOAWAY, and each
feed's "ended; reconnecting" / failure line. The provider's watch counts its own ends. Exits 1 when any
count is not zero::

    .venv/bin/python benchmarks/idle_cluster.py --minutes 10
    .venv/bin/python benchmarks/idle_cluster.py --minutes 1 --keepalive 0.5   # a short run, fast pings

``--keepalive`` sets ``MCN_KEEPALIVE_SECONDS`` for every process (the pings both ends agree on: see
mycarenet_core/channels.py); by default the processes use theirs (30 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent

# What a log line says when keepalive went wrong or a watch stream was re-opened.
PATTERNS = {
    "too_many_pings": re.compile(r"too_many_pings"),
    "goaway (other)": re.compile(r"GOAWAY(?!.*too_many_pings)"),
    "feed reconnect": re.compile(
        r"(feed of \S+|cadastre watch of \S+) ended|"
        r"(affiliation feed of \S+|cadastre feed of \S+|holder feed of \S+|revocation feed): [A-Z_]+"
    ),
    "background job restarted": re.compile(r"background job .* ended; starting it again"),
}


def free_range(width: int = 20) -> int:
    """A base port with ``width`` free ports after it (the cluster uses base .. base + 16)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1]) // width * width
        if not 20000 <= base <= 60000:
            continue
        held = []
        try:
            for port in range(base, base + width):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
        return base
    raise SystemExit("no free port range")


def start(
    data: Path, base: int, population: int, postgres: str | None, env: dict[str, str]
) -> tuple[Any, Any]:
    log = open(data.parent / "supervisor.log", "wb")  # noqa: SIM115 - the child writes it
    proc = subprocess.Popen(
        [
            str(BIN / "mycarenet-cluster"),
            "up",
            "--data",
            str(data),
            "--base-port",
            str(base),
            "--population",
            str(population),
            *(["--postgres", postgres] if postgres else []),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **env},
    )
    deadline = time.monotonic() + 300
    description = data / "cluster.json"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit((data.parent / "supervisor.log").read_text(errors="replace")[-4000:])
        if description.is_file():
            desc = json.loads(description.read_text())
            if desc.get("supervisor_pid") == proc.pid:
                return proc, desc
        time.sleep(0.5)
    stop(proc)
    raise SystemExit("the cluster did not come up in 300 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def provider_watch(desc: dict[str, Any], seconds: float) -> dict[str, int]:
    """GP A's mailbox watch held open for ``seconds``; re-opened (and counted) whenever it ends early."""
    import mycarenet_sdk

    tls, demo = desc["tls"], desc["demo"]
    address = {p["name"]: p["address"] for p in desc["processes"]}
    ends = opened = 0
    deadline = time.monotonic() + seconds
    async with mycarenet_sdk.connect(
        hub=address["hub"],
        ehealth=address["ehealth"],
        ca=Path(tls["ca"]),
        cert=Path(tls["client_cert"]),
        key=Path(tls["client_key"]),
    ) as client:
        await client.login(demo["gp_a"], Path(desc["keys"]) / f"{demo['gp_a']}.pem")

        async def drain() -> None:
            async for _message in client.watch_messages():
                pass

        while (left := deadline - time.monotonic()) > 0:
            opened += 1
            try:
                await asyncio.wait_for(drain(), left)
            except TimeoutError:
                break  # held open to the end: what we want
            except Exception as error:  # the stream failed
                print(f"provider watch failed: {error}", file=sys.stderr)
            ends += 1
            await asyncio.sleep(1)
    return {"provider watch ends": ends, "provider watch opened": opened}


def sizes(data: Path) -> dict[Path, int]:
    """Where each log ends now (what was written before is not counted)."""
    return {
        path: path.stat().st_size for path in [*(data / "logs").glob("*.log"), data.parent / "supervisor.log"]
    }


def count(start: dict[Path, int], end: dict[Path, int]) -> dict[str, Counter[str]]:
    """The lines of each log written between ``start`` and ``end`` (the idle window: neither the start-up
    nor the shutdown, whose GOAWAYs are the servers' own goodbyes), by pattern."""
    found: dict[str, Counter[str]] = {}
    for path, stop_at in sorted(end.items()):
        seen: Counter[str] = Counter()
        with path.open("rb") as log:
            log.seek(start.get(path, 0))
            text = log.read(stop_at - start.get(path, 0)).decode(errors="replace")
        for line in text.splitlines():
            for name, pattern in PATTERNS.items():
                if pattern.search(line):
                    seen[name] += 1
        found[path.stem] = seen
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the cluster idles")
    parser.add_argument("--population", type=int, default=100, help="synthetic members seeded")
    parser.add_argument("--postgres", help="PostgreSQL server URL (default: SQLite files)")
    parser.add_argument("--keepalive", type=float, help="MCN_KEEPALIVE_SECONDS for every process")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (logs) afterwards")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="idle-cluster-"))
    data = scratch / "data"
    env = {"MCN_KEEPALIVE_SECONDS": str(args.keepalive)} if args.keepalive else {}
    started = time.monotonic()
    proc, desc = start(data, free_range(), args.population, args.postgres, env)
    up_at = time.monotonic()
    print(f"cluster up in {up_at - started:.0f} s ({data}); idling {args.minutes:g} min", flush=True)
    before = sizes(data)
    try:
        watch = asyncio.run(provider_watch(desc, args.minutes * 60))
        idle = time.monotonic() - up_at
        after = sizes(data)
    finally:
        stop(proc)
    found = count(before, after)
    totals: Counter[str] = Counter()
    for seen in found.values():
        totals.update(seen)
    print(f"\nidle {idle / 60:.1f} min; lines per log (only the logs with any):")
    for name, seen in found.items():
        if seen:
            print(f"  {name:12s} " + ", ".join(f"{k} {v}" for k, v in sorted(seen.items())))
    figures: dict[str, Any] = {
        "minutes": round(idle / 60, 2),
        "keepalive_seconds": args.keepalive or 30,
        **{name: totals.get(name, 0) for name in PATTERNS},
        **watch,
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(
            json.dumps({**figures, "per_log": {k: dict(v) for k, v in found.items()}}, indent=2)
        )
    if args.keep:
        print(f"logs kept in {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    trouble = sum(totals.values()) + watch["provider watch ends"]
    raise SystemExit(1 if trouble else 0)


if __name__ == "__main__":
    main()
