"""The cluster supervises its processes (a crashed node is restarted, `status --json` describes the mesh),
and chaos on a running cluster through the sandbox's ChaosService (the ``mycarenet chaos`` CLI and the SDK):
a killed OA node stays down for its duration and comes back serving; a latency fault shows in the call times
and heals by itself; an error-rate fault answers its code; a non-admin caller is refused; and ``down`` exits
non-zero when the cluster does not stop in time, then stops everything.

One cluster (SQLite: the back end has no part in it) for the module's two tests, in their order: the crash
first (no process restarted before it), then the chaos, which ends with ``down``."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from mycarenet_sdk import Client, MyCareNetError, admin_from_cluster, connect
from mycarenet_sdk.sync import connect_admin_sync

from mycarenet_core.channels import client_credentials, open_channel
from mycarenet_core.gen.mycarenet.sandbox.v1 import chaos_pb2, chaos_pb2_grpc
from tests.cluster.cluster_support import BIN, Cluster, cli, free_base_port, wait_for

TODAY = "2026-11-20"
HOLD = 15  # seconds a killed node stays down: long enough for the checks below on a loaded box


def status(data: Path) -> dict[str, Any]:
    done = subprocess.run(
        [str(BIN / "mycarenet-cluster"), "status", "--data", str(data), "--json"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode in (0, 3), done.stderr.decode()
    loaded: dict[str, Any] = json.loads(done.stdout)
    return loaded


def process(data: Path, name: str) -> dict[str, Any]:
    return next(p for p in status(data)["processes"] if p["name"] == name)


def address(desc: dict[str, Any], name: str) -> str:
    return str(next(p["address"] for p in desc["processes"] if p["name"] == name))


def provider_client(desc: dict[str, Any]) -> Client:
    tls = desc["tls"]
    return connect(
        hub=address(desc, "hub"),
        ehealth=address(desc, "ehealth"),
        ca=Path(tls["ca"]),
        cert=Path(tls["client_cert"]),
        key=Path(tls["client_key"]),
    )


async def consult(client: Client, niss: str) -> Any:
    return await client.consult(niss, date=dt.date.fromisoformat(TODAY))


async def consult_seconds(client: Client, niss: str) -> float:
    started = time.monotonic()
    await consult(client, niss)
    return time.monotonic() - started


def down(data: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(BIN / "mycarenet-cluster"), "down", "--data", str(data), *args],
        capture_output=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def supervised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, dict[str, Any]]]:
    c = Cluster(tmp_path_factory.mktemp("chaos") / "data", free_base_port())
    try:
        yield c, c.up(TODAY)
    finally:
        c.down()


def test_a_killed_node_is_restarted(supervised: tuple[Cluster, dict[str, Any]]) -> None:
    cluster, desc = supervised
    by_name = {p["name"]: p for p in desc["processes"]}
    assert set(by_name) == {"ehealth", "hub", *(f"oa-{c}" for c in (100, 200, 300, 400, 500, 600, 900))}
    assert desc["tls"]
    assert Path(desc["tls"]["ca"]).is_file()
    victim = by_name["oa-200"]["pid"]
    os.kill(victim, signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        now = {p["name"]: p for p in status(cluster.data)["processes"]}
        oa = now["oa-200"]
        ok = oa["pid"] != victim and oa["restarts"] == 1 and oa["health"] == "SERVING"
        return now if ok else None

    now = wait_for(restarted, timeout=60)
    assert now, status(cluster.data)
    assert all(p["health"] == "SERVING" for p in now.values())
    assert all(p["restarts"] == 0 for name, p in now.items() if name != "oa-200")


def test_chaos_on_the_running_cluster(supervised: tuple[Cluster, dict[str, Any]], tmp_path: Path) -> None:
    cluster, desc = supervised  # after test_a_killed_node_is_restarted: it ends with down
    data, session = cluster.data, tmp_path / "session.json"
    demo = desc["demo"]  # the demo patient is affiliated with insurer 100
    victim = process(data, "oa-100")

    # Kill insurer 100 for HOLD s through the API: it stays down (the supervisor does not fight the kill)...
    before_kill = time.monotonic()
    [fault] = cli(data, session, "chaos", "kill", "oa-100", "--for", str(HOLD))
    assert fault["process"] == {"process": "oa-100", "action": "PROCESS_ACTION_KILL"}
    assert process(data, "oa-100")["health"] == "UNREACHABLE"

    async def killed_and_back() -> float:
        async with provider_client(desc) as client, admin_from_cluster(desc) as admin:
            [listed] = await admin.list_faults()
            assert listed.id == fault["id"]
            assert 0 < listed.remaining_ms <= HOLD * 1000
            await client.login(demo["gp_b"], data / "keys" / f"{demo['gp_b']}.pem")
            with pytest.raises(MyCareNetError) as down_now:
                await consult(client, demo["patient"])
            assert down_now.value.status is grpc.StatusCode.UNAVAILABLE
            # ... then it is started again and answers the consult routed to it.
            deadline = time.monotonic() + 90
            while True:
                try:
                    answer = await consult(client, demo["patient"])
                    break
                except MyCareNetError:
                    assert time.monotonic() < deadline, "insurer 100 did not come back"
                    await asyncio.sleep(2.0)  # well within the hub's throttle of patient-bound calls
            answered = time.monotonic()
            assert answer.insurer_code == "100"
            assert answer.holding.holder.inami == demo["gp_a"]
            return answered

    # Not before its fault healed (the fault began after before_kill).
    assert asyncio.run(killed_and_back()) - before_kill >= HOLD
    back = wait_for(
        lambda: (p := process(data, "oa-100"))["health"] == "SERVING" and p["pid"] != victim["pid"] and p
    )
    assert back, status(data)
    assert back["restarts"] == 1
    with connect_admin_sync(
        ehealth=address(desc, "ehealth"),
        sandbox=desc["sandbox"]["address"],
        ca=Path(desc["tls"]["ca"]),
        cert=Path(desc["tls"]["admin_cert"]),
        key=Path(desc["tls"]["admin_key"]),
    ) as admin_sync:
        assert admin_sync.list_faults() == []  # healed, so no longer listed

    async def latency_errors_and_refusal() -> None:
        async with provider_client(desc) as client, admin_from_cluster(desc) as admin:
            await client.login(demo["gp_b"], data / "keys" / f"{demo['gp_b']}.pem")
            before = min([await consult_seconds(client, demo["patient"]) for _ in range(3)])
            # 600 ms more on every call from the hub to insurer 100, for 10 s.
            slow = await admin.link_fault("hub", "oa-100", 10.0, latency_ms=600)
            assert 0.6 <= await consult_seconds(client, demo["patient"]) < 0.6 + before + 5.0
            # It heals by itself: no call to clear it.
            deadline = time.monotonic() + 30
            while await consult_seconds(client, demo["patient"]) >= 0.6:
                assert time.monotonic() < deadline, "the latency fault did not heal"
                await asyncio.sleep(1.0)
            assert slow.id not in {f.id for f in await admin.list_faults()}
            # Every call of provider software to the hub fails with RESOURCE_EXHAUSTED, until cleared.
            failing = await admin.link_fault(
                "client", "hub", 60.0, error_percent=100, error_code=grpc.StatusCode.RESOURCE_EXHAUSTED
            )
            with pytest.raises(MyCareNetError) as exhausted:
                await consult(client, demo["patient"])
            assert exhausted.value.status is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert await admin.clear_faults(failing.id) == [failing.id]
            await consult(client, demo["patient"])
            # An unknown process is NOT_FOUND.
            with pytest.raises(MyCareNetError) as unknown:
                await admin.process_fault("oa-999", "kill")
            assert unknown.value.status is grpc.StatusCode.NOT_FOUND
        # Provider software's certificate may not use chaos.
        tls = desc["tls"]
        credentials = client_credentials(Path(tls["ca"]), Path(tls["client_cert"]), Path(tls["client_key"]))
        async with open_channel(desc["sandbox"]["address"], credentials=credentials) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await chaos_pb2_grpc.ChaosServiceStub(channel).InjectFault(
                    chaos_pb2.InjectFaultRequest(
                        process=chaos_pb2.ProcessFault(process="hub", action=chaos_pb2.PROCESS_ACTION_KILL)
                    )
                )
            assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED

    asyncio.run(latency_errors_and_refusal())

    # Pause insurer 200 for 3 s (stopped: no answer, then resumed by itself), then restart it gracefully.
    oa200 = process(data, "oa-200")
    [paused] = cli(data, session, "chaos", "pause", "oa-200", "--for", "3")
    assert paused["process"]["action"] == "PROCESS_ACTION_PAUSE"
    assert process(data, "oa-200")["health"] == "UNREACHABLE"
    assert wait_for(lambda: process(data, "oa-200")["health"] == "SERVING", timeout=30)
    assert process(data, "oa-200")["pid"] == oa200["pid"]  # the same process, resumed
    cli(data, session, "chaos", "restart", "oa-200")

    def restarted() -> dict[str, Any] | None:
        now = process(data, "oa-200")
        return now if now["health"] == "SERVING" and now["pid"] != oa200["pid"] else None

    again = wait_for(restarted, timeout=90)
    assert again, status(data)
    assert again["restarts"] == oa200["restarts"] + 1

    # `down` exits 1 when the cluster is still running after its timeout (here: a paused supervisor)...
    assert cluster.proc is not None
    pids = [p["pid"] for p in status(data)["processes"]]
    os.kill(cluster.proc.pid, signal.SIGSTOP)
    try:
        stuck = down(data, "--timeout", "1")
    finally:
        os.kill(cluster.proc.pid, signal.SIGCONT)
    assert stuck.returncode == 1
    assert b"still running" in stuck.stdout
    # ... and 0 once everything stopped: every process of the mesh is gone.
    done = down(data)
    assert done.returncode == 0, done.stdout.decode()
    assert cluster.proc.wait(30) == 0
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"process {pid} still runs after down")
    assert status(data) == {"up": False}
