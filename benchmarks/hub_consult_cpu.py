"""CPU time the hub spends per consult, measured on a real hub process.

eHealth and the insurer nodes run in this process (the in-process mesh of ``tests/hub/mesh.py``, seeded
through their own services); the hub runs as its own process (``python -m hub``, settings from
``MCN_HUB_*`` as in the cluster, plaintext), so that its CPU is read from ``/proc/<pid>/stat`` (user +
system time of every thread of the process) before and after the consults, without anything else mixed in.
The hub's idle CPU (its background work: feeds, audit writer) is measured over a quiet period first and
reported apart; the per-consult figure subtracts it over the run's duration.

    .venv/bin/python benchmarks/hub_consult_cpu.py --consults 2000 --concurrency 1
    .venv/bin/python benchmarks/hub_consult_cpu.py --consults 3000 --concurrency 16
    .venv/bin/python benchmarks/hub_consult_cpu.py --consults 1500 --profile /tmp/hub.txt  # py-spy stacks

Measured on the 2-core box (shared, plaintext, SQLite, insurer 100 only), hub CPU per consult (issue 13):

| hub | 1 in flight | 16 in flight |
|---|---|---|
| before (f25b685's hub/, asyncio; eHealth and OA as at 4f14791) | 3.29 ms | 2.64 ms |
| after (4f14791: relation cache, token cache, Core audit, uvloop) | 1.33 ms | 1.17 ms |

(Against the eHealth and OA nodes of f25b685 the same old hub measured 4.48 / 4.05 ms; the cause of that
difference was not measured.) The figures vary by ±15 % between runs on this box.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mycarenet_core.channels import open_channel
from mycarenet_core.clock import FixedClock, OffsetClock
from mycarenet_core.dates import to_proto
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_service_pb2 as pub
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_service_pb2_grpc
from tests.hub.mesh import TODAY, Mesh, bearer, free_port

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of every thread of process ``pid``, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15)


def hub_process(mesh: Mesh, port: int, log: Path) -> subprocess.Popen[bytes]:
    assert mesh.ehealth is not None
    env = {
        **os.environ,
        "MCN_HUB_INSECURE": "true",
        "MCN_HUB_BIND": f"127.0.0.1:{port}",
        "MCN_HUB_DATABASE_URL": mesh.db("hub"),
        "MCN_HUB_EHEALTH_TARGET": f"127.0.0.1:{mesh.ehealth.port}",
        "MCN_HUB_OA_TARGETS": ",".join(f"{c}=127.0.0.1:{p}" for c, p in mesh.oa_ports.items()),
        "MCN_HUB_SANDBOX_DATE": TODAY.isoformat(),
        "MCN_HUB_THROTTLE_RATE": "1000000",
        "MCN_HUB_THROTTLE_BURST": "1000000",
        "MCN_HUB_ABUSE_MAX_DISTINCT_PATIENTS": "1000000000",
        "MCN_HUB_LOG_LEVEL": "WARNING",
    }
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "hub"], env=env, stdout=out, stderr=subprocess.STDOUT)


def profiler(py_spy: str, pid: int, out: str) -> subprocess.Popen[bytes]:
    """py-spy sampling process ``pid`` into ``out`` (collapsed stacks) until it gets SIGINT."""
    return subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--format", "raw", "-o", out],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def run(args: argparse.Namespace) -> None:
    insurers = args.insurers.split(",")
    with tempfile.TemporaryDirectory(prefix="hub-bench-") as tmp:
        # The hub runs "as if today were" TODAY with the time running; the mesh's fixed clock is set to the
        # same instant, so that the tokens eHealth signs are valid for the hub.
        clock = FixedClock(OffsetClock(TODAY).now())
        mesh = Mesh(Path(tmp), insurers, clock)
        proc: subprocess.Popen[bytes] | None = None
        try:
            from ehealth.app import EhealthApp

            mesh.ehealth = await EhealthApp.create(database_url=mesh.db("ehealth"), clock=clock)
            await mesh.ehealth.start("127.0.0.1:0")
            await mesh.seed_ehealth()
            mesh.hub_port = free_port()
            proc = hub_process(mesh, mesh.hub_port, Path(tmp) / "hub.log")
            for code in insurers:
                await mesh.start_oa(code)
            for code in insurers:
                await mesh.seed_oa(code)
            patient = mesh.members[f"p{insurers[0]}"]
            await mesh.relate(mesh.people["gp_a"], patient)
            token = await mesh.login(mesh.people["gp_a"])
            channel = open_channel(f"127.0.0.1:{mesh.hub_port}", identity="client")
            dmg = dmg_service_pb2_grpc.DmgServiceStub(channel)
            request = pub.ConsultDmgRequest(
                requester_reference="bench",
                patient=common_pb2.PatientSelector(niss=patient.niss),
                request_date=to_proto(TODAY),
            )
            metadata = bearer(token)
            deadline = time.monotonic() + 60
            while True:  # until the hub routes the patient and the relation is known
                try:
                    await dmg.ConsultDmg(request, metadata=metadata, timeout=5)
                    break
                except Exception:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        print((Path(tmp) / "hub.log").read_text()[-4000:], file=sys.stderr)
                        raise
                    await asyncio.sleep(0.2)

            latencies: list[float] = []

            async def caller(count: int) -> None:
                for _ in range(count):
                    started = time.perf_counter()
                    await dmg.ConsultDmg(request, metadata=metadata, timeout=10)
                    latencies.append(time.perf_counter() - started)

            per_caller = max(1, args.warmup // args.concurrency)
            await asyncio.gather(*(caller(per_caller) for _ in range(args.concurrency)))
            await asyncio.sleep(1.0)
            idle_cpu, idle_wall = cpu_seconds(proc.pid), time.monotonic()
            await asyncio.sleep(args.idle)
            idle_rate = (cpu_seconds(proc.pid) - idle_cpu) / (time.monotonic() - idle_wall)
            latencies.clear()
            per_caller = max(1, args.consults // args.concurrency)
            spy = None
            if args.profile:  # py-spy (from a venv of its own) samples the hub during the run
                spy = profiler(args.py_spy, proc.pid, args.profile)
                await asyncio.sleep(1.0)
            hub_before, here_before, wall_before = (
                cpu_seconds(proc.pid),
                time.process_time(),
                time.monotonic(),
            )
            await asyncio.gather(*(caller(per_caller) for _ in range(args.concurrency)))
            await asyncio.sleep(0.5)  # the audit writer's batch of the last calls
            hub_cpu = cpu_seconds(proc.pid) - hub_before
            here_cpu = time.process_time() - here_before
            wall = time.monotonic() - wall_before
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
            count = per_caller * args.concurrency
            latencies.sort()
            print(f"consults: {count} at {args.concurrency} in flight, {count / wall:.0f}/s")
            print(f"hub idle CPU: {idle_rate * 1000:.2f} ms/s")
            print(
                f"hub CPU per consult: {hub_cpu / count * 1000:.2f} ms "
                f"(idle-corrected {(hub_cpu - idle_rate * wall) / count * 1000:.2f} ms)"
            )
            print(f"eHealth + OA + client (this process) CPU per consult: {here_cpu / count * 1000:.2f} ms")
            print(
                f"latency p50 {statistics.median(latencies) * 1000:.2f} ms, "
                f"p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:.2f} ms"
            )
            await channel.close(None)
        finally:
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            await mesh.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--consults", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of idle measure before the run")
    parser.add_argument("--profile", default="", help="write py-spy's collapsed stacks of the hub here")
    parser.add_argument("--py-spy", default="/tmp/spy3/bin/py-spy", help="the py-spy executable")
    parser.add_argument("--insurers", default="100", help="insurer nodes to start (comma separated)")
    args = parser.parse_args()
    started = dt.datetime.now()
    asyncio.run(run(args))
    print(f"(run took {(dt.datetime.now() - started).total_seconds():.0f} s)")


if __name__ == "__main__":
    main()
