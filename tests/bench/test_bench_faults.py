"""The fault schedule: parsing, unrolling, and the injector against stand-in processes and proxies."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

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
from mycarenet_cluster.faultproxy import LinkFaults, read_control


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


class FakeCluster:
    """A description with one stand-in process (``sleep``) and one link control file."""

    def __init__(self, tmp: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        # Reap it once killed, as the supervisor does for a real process.
        self.reaper = threading.Thread(target=self.proc.wait, daemon=True)
        self.reaper.start()
        self.control = tmp / "faults" / "oa-100.json"
        self.health_calls = 0

    def describe(self) -> dict[str, Any]:
        return {
            "processes": [
                {"name": "oa-100", "role": "oa", "oa_code": "100", "address": "x:1", "pid": self.proc.pid}
            ],
            "fault_proxies": [{"oa_code": "100", "control": str(self.control)}],
        }

    async def health(self, address: str) -> str:
        self.health_calls += 1
        return "SERVING"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def fake(tmp_path: Path) -> Any:
    cluster = FakeCluster(tmp_path)
    yield cluster
    cluster.close()


async def test_link_fault_writes_the_control_file_then_clears_it(fake: FakeCluster) -> None:
    control = ClusterControl(fake.describe, fake.health)
    events = [FaultEvent("latency", "oa-100", 0.0, 0.2, 150.0, "latency:oa-100@0s+0.2s=150ms")]
    control.validate(events)
    injector = FaultInjector(control, events, t0=time.monotonic())
    task = asyncio.create_task(injector.run())
    await asyncio.sleep(0.1)
    assert read_control(fake.control) == LinkFaults(latency_ms=150.0)
    await task
    assert read_control(fake.control) == LinkFaults()
    (record,) = injector.records
    assert record.applied_at is not None
    assert record.cleared_at is not None


async def test_pause_then_resume_and_kill(fake: FakeCluster) -> None:
    control = ClusterControl(fake.describe, fake.health)
    pid = fake.proc.pid
    events = [
        FaultEvent("pause", "oa-100", 0.0, 0.2, 0.0, "pause:oa-100@0s+0.2s"),
        FaultEvent("kill", "oa-100", 0.4, 0.0, 0.0, "kill:oa-100@0.4s"),
    ]
    injector = FaultInjector(control, events, t0=time.monotonic(), serving_timeout=2.0)
    await injector.run()
    pause, kill = injector.records
    assert pause.pid == pid
    assert pause.cleared_at is not None
    assert pause.serving_after_s is not None
    assert kill.applied_at is not None
    assert fake.proc.wait(5) == -9
    # The stand-in is never restarted: SERVING comes from the fake health once the old pid is gone.
    assert kill.serving_after_s is not None
    assert kill.new_pid is None


def test_validate_refuses_unknown_targets_and_missing_proxies(fake: FakeCluster) -> None:
    control = ClusterControl(fake.describe, fake.health)
    with pytest.raises(FaultSpecError):
        control.validate([FaultEvent("kill", "hub", 0, 0, 0, "kill:hub@0s")])
    bare = ClusterControl(lambda: {**fake.describe(), "fault_proxies": []}, fake.health)
    with pytest.raises(FaultSpecError, match="--fault-proxies"):
        bare.validate([FaultEvent("errors", "oa-100", 0, 1, 0.5, "errors:oa-100@0s=50%")])
