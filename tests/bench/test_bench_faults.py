"""The fault schedule: parsing, unrolling, and the injector through a real chaos API (the sandbox's
ChaosService, served here over a stand-in process)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from mycarenet_bench.faults import (
    ClusterControl,
    FaultEvent,
    FaultInjector,
    FaultSpec,
    FaultSpecError,
    expand,
    parse_fault,
    parse_seconds,
)
from mycarenet_cluster import chaos
from mycarenet_sdk import AdminClient

from mycarenet_core.gen.mycarenet.sandbox.v1 import chaos_pb2
from mycarenet_core.server import MeshServer
from mycarenet_core.trust import TrustInterceptor


def test_parse_seconds() -> None:
    assert parse_seconds("500ms") == 0.5
    assert parse_seconds("2m") == 120
    assert parse_seconds("3") == 3
    with pytest.raises(FaultSpecError):
        parse_seconds("soon")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kill:oa-300@10s", FaultSpec("kill", "oa-300", 10, 0.0, None, 0.0, "kill:oa-300@10s")),
        ("kill:300@30s/30s", FaultSpec("kill", "oa-300", 30, 0.0, 30, 0.0, "kill:300@30s/30s")),
        ("restart:hub@1m", FaultSpec("restart", "hub", 60, 0.0, None, 0.0, "restart:hub@1m")),
        ("pause:ehealth@15s+2s", FaultSpec("pause", "ehealth", 15, 2, None, 0.0, "pause:ehealth@15s+2s")),
        ("pause:oa:100@5", FaultSpec("pause", "oa-100", 5, 5.0, None, 0.0, "pause:oa:100@5")),
        (
            "latency:oa-500@10s+20s=200ms",
            FaultSpec("latency", "oa-500", 10, 20, None, 200.0, "latency:oa-500@10s+20s=200ms"),
        ),
        (
            "errors:oa-500@10s=30%",
            FaultSpec("errors", "oa-500", 10, 10.0, None, 0.3, "errors:oa-500@10s=30%"),
        ),
        (
            "errors:oa-500@10s+1s=0.5",
            FaultSpec("errors", "oa-500", 10, 1, None, 0.5, "errors:oa-500@10s+1s=0.5"),
        ),
    ],
)
def test_parse_fault(text: str, expected: FaultSpec) -> None:
    assert parse_fault(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "kill",
        "melt:hub@1s",
        "latency:oa-500@1s",
        "latency:hub@1s=10ms",
        "errors:oa-500@1s=150%",
        "kill:hub@1s=3",
        "kill:hub@1s/0s",
    ],
)
def test_bad_faults_are_refused(text: str) -> None:
    with pytest.raises(FaultSpecError):
        parse_fault(text)


def test_expand_unrolls_repeats_within_the_run() -> None:
    events = expand([parse_fault("kill:oa-300@30s/30s"), parse_fault("pause:hub@45s+1s")], 120)
    assert [(e.kind, e.at) for e in events] == [("kill", 30), ("pause", 45), ("kill", 60), ("kill", 90)]


def state(pid: int) -> str:
    """The kernel's state letter of a process (R, S, T when stopped, Z ...)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]


async def eventually(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met within 5 s")


class StandIn:
    """One stand-in process (``sleep``) as a supervisor owns it: signalled for real, held down by a kill,
    started again when the fault heals; the link rules it is given are recorded."""

    def __init__(self) -> None:
        self.proc = self._spawn()
        self.rules: list[list[chaos_pb2.LinkRule]] = []
        self.health_calls = 0

    @staticmethod
    def _spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])

    def process_names(self) -> Sequence[str]:
        return ["hub", "oa-100"]  # the hub: only as the source of link faults

    def hold(self, name: str) -> None: ...

    def release(self, name: str) -> None:
        self.proc.wait(5)  # the kill is immediate; reaped, as the supervisor does
        self.proc = self._spawn()

    def signal(self, name: str, sig: int) -> bool:
        if self.proc.poll() is not None:
            return False
        self.proc.send_signal(sig)
        return True

    async def set_link_rules(self, name: str, rules: Sequence[chaos_pb2.LinkRule]) -> None:
        self.rules.append(list(rules))

    def describe(self) -> dict[str, Any]:
        return {
            "processes": [
                {"name": "oa-100", "role": "oa", "oa_code": "100", "address": "x:1", "pid": self.proc.pid}
            ],
            "sandbox": {"address": "the test's"},
        }

    async def health(self, address: str) -> str:
        self.health_calls += 1
        return "SERVING"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
async def fake() -> AsyncIterator[tuple[StandIn, AdminClient]]:
    """The stand-in, and an administrator's client of a real sandbox server whose chaos acts on it."""
    stand_in = StandIn()
    engine = chaos.ChaosEngine(stand_in)
    server = MeshServer("sandbox", [chaos.service(engine)], trust=TrustInterceptor(secure=False))
    port = await server.start("127.0.0.1:0")
    admin = AdminClient(ehealth="127.0.0.1:1", sandbox=f"127.0.0.1:{port}")
    try:
        yield stand_in, admin
    finally:
        await admin.close()
        await engine.close()
        await server.stop(0)
        stand_in.close()


async def test_link_fault_goes_to_the_receiving_process_then_heals(fake: tuple[StandIn, AdminClient]) -> None:
    stand_in, admin = fake
    control = ClusterControl(stand_in.describe, stand_in.health, admin)
    events = [FaultEvent("latency", "oa-100", 0.0, 0.3, 150.0, "latency:oa-100@0s+0.3s=150ms")]
    control.validate(events)
    injector = FaultInjector(control, events, t0=time.monotonic())
    await injector.run()
    await eventually(lambda: len(stand_in.rules) == 2)
    given, healed = stand_in.rules
    assert [(r.source, r.latency_ms) for r in given] == [("hub", 150)]
    assert healed == []  # healed by the chaos API after its duration
    (record,) = injector.records
    assert record.applied_at is not None
    assert record.cleared_at is not None
    assert record.cleared_at >= 0.3
    assert await admin.list_faults() == []


async def test_errors_then_an_interrupted_run_clears_what_is_active(
    fake: tuple[StandIn, AdminClient],
) -> None:
    stand_in, admin = fake
    control = ClusterControl(stand_in.describe, stand_in.health, admin)
    events = [FaultEvent("errors", "oa-100", 0.0, 60.0, 0.3, "errors:oa-100@0s+60s=30%")]
    injector = FaultInjector(control, events, t0=time.monotonic())
    task = asyncio.create_task(injector.run())
    await eventually(lambda: bool(stand_in.rules))
    [rule] = stand_in.rules[-1]
    assert (rule.source, rule.error_percent) == ("hub", 30)
    assert rule.error_code == grpc.StatusCode.UNAVAILABLE.value[0]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await injector.cleanup()
    assert await admin.list_faults() == []
    assert stand_in.rules[-1] == []


async def test_pause_then_resume_and_kill(fake: tuple[StandIn, AdminClient]) -> None:
    stand_in, admin = fake
    control = ClusterControl(stand_in.describe, stand_in.health, admin)
    first = stand_in.proc
    events = [
        FaultEvent("pause", "oa-100", 0.0, 0.3, 0.0, "pause:oa-100@0s+0.3s"),
        FaultEvent("kill", "oa-100", 0.5, 0.0, 0.0, "kill:oa-100@0.5s"),
    ]
    injector = FaultInjector(control, events, t0=time.monotonic(), serving_timeout=5.0)
    task = asyncio.create_task(injector.run())
    await eventually(lambda: bool(injector.records) and injector.records[0].applied_at is not None)
    assert state(first.pid) == "T"  # stopped by the chaos API
    await task
    pause, kill = injector.records
    assert pause.pid == first.pid
    assert pause.cleared_at is not None
    assert pause.serving_after_s is not None
    assert kill.applied_at is not None
    assert first.returncode == -signal.SIGKILL
    # Started again when the kill healed (at once: no duration): the injector saw the new pid.
    assert kill.serving_after_s is not None
    assert kill.new_pid == stand_in.proc.pid != first.pid
    assert await admin.list_faults() == []


async def test_a_refused_fault_is_noted(fake: tuple[StandIn, AdminClient]) -> None:
    stand_in, admin = fake
    control = ClusterControl(stand_in.describe, stand_in.health, admin)
    await admin.process_fault("oa-100", "pause", 60)
    events = [FaultEvent("pause", "oa-100", 0.0, 1.0, 0.0, "pause:oa-100@0s+1s")]
    injector = FaultInjector(control, events, t0=time.monotonic())
    await injector.run()
    assert injector.records[0].note.startswith("FAILED_PRECONDITION FAULT_ACTIVE")
    assert len(await admin.clear_faults()) == 1


def test_validate_refuses_unknown_targets_and_a_cluster_without_sandbox() -> None:
    stand_in = StandIn()
    try:
        control = ClusterControl(stand_in.describe, stand_in.health)
        with pytest.raises(FaultSpecError):
            control.validate([FaultEvent("kill", "hub", 0, 0, 0, "kill:hub@0s")])
        bare = ClusterControl(lambda: {**stand_in.describe(), "sandbox": None}, stand_in.health)
        with pytest.raises(FaultSpecError, match="sandbox"):
            bare.validate([FaultEvent("errors", "oa-100", 0, 1, 0.5, "errors:oa-100@0s=50%")])
    finally:
        stand_in.close()
