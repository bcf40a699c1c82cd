"""The twelve SPEC §5 scenario files played together by the runner on the in-process mesh (every insurer),
its test clock moved by the runner as the cluster's is: the quick check of the runner against the real
services (the cluster test, tests/cluster/test_scenarios.py, plays them through `mycarenet scenario run`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from mycarenet_scenario import load_scenario
from mycarenet_scenario.runner import MeshAccess, play_scenarios
from mycarenet_sdk.client import MyCareNetError
from mycarenet_sdk.testing import InProcessMesh

from mycarenet_core.channels import open_channel
from mycarenet_core.clock import BRUSSELS, FixedClock
from mycarenet_core.gen.mycarenet.oa.v1 import intake_service_pb2_grpc
from mycarenet_core.identifiers import INSURER_CODES

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios" / "spec5"


@dataclass(frozen=True)
class State:
    today: dt.date


class MeshClockOf:
    """The in-process mesh's fixed clock behind the sandbox clock's three calls (no year-end run here)."""

    def __init__(self, clock: FixedClock) -> None:
        self._clock = clock

    async def clock(self) -> State:
        return State(self._clock.today())

    async def set_clock(self, day: dt.date) -> State:
        if day < self._clock.today():
            raise MyCareNetError(grpc.StatusCode.FAILED_PRECONDITION, "CLOCK_BACKWARDS", "backwards")
        self._clock.set(dt.datetime.combine(day, dt.time(9), tzinfo=BRUSSELS).astimezone(dt.UTC))
        return State(day)

    async def advance_clock(self, days: int) -> State:
        return await self.set_clock(self._clock.today() + dt.timedelta(days=days))


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[InProcessMesh]:
    async with InProcessMesh(tmp_path, insurers=INSURER_CODES, today=dt.date(2014, 6, 1)) as started:
        yield started


async def test_the_twelve_stories_pass_on_the_in_process_mesh(mesh: InProcessMesh) -> None:
    channels = {
        code: open_channel(address, identity="backoffice") for code, address in mesh.insurer_addresses.items()
    }
    access = MeshAccess(
        admin=mesh.admin,
        clock=MeshClockOf(mesh.clock),
        new_client=mesh.client,
        intake={c: intake_service_pb2_grpc.InvoicingIntakeServiceStub(ch) for c, ch in channels.items()},
        wait_seconds=15.0,
    )
    loaded = [load_scenario(path) for path in sorted(SCENARIOS.glob("*.yaml"))]
    try:
        results = await play_scenarios(loaded, access)
    finally:
        for channel in channels.values():
            await channel.close(None)
    report = [
        f"{r.story} step {s.index} ({s.title}): {s.status}: {'; '.join(s.differences)}"
        for r in results
        for s in r.steps
        if s.status != "passed"
    ] + [f"{r.story}: {r.error}" for r in results if r.error]
    assert results[0].shift_years == 4  # 2011 -> 2015: the first year after 01.06.2014 with its calendar
    assert not [r for r in results if r.failed], "\n".join(report)
    print("\n".join(report))
