"""The load models: arrivals at a fixed rate, latency from the intended start, N in flight."""

from __future__ import annotations

import asyncio
import time

import pytest
from mycarenet_bench.load import ClosedLoop, OpenLoop, Step, arrivals, parse_steps, run_load
from mycarenet_bench.mesh import Mesh, Result


def test_parse_steps_splits_the_duration() -> None:
    assert parse_steps("20,40", 60) == [Step(20, 30), Step(40, 30)]
    with pytest.raises(ValueError, match="positive"):
        parse_steps("0", 10)
    with pytest.raises(ValueError, match="positive"):
        parse_steps("", 10)


def test_arrivals_are_evenly_spaced_per_step() -> None:
    got = list(arrivals(100.0, [Step(4, 1), Step(2, 1)]))
    assert got == [(0, 100.0), (0, 100.25), (0, 100.5), (0, 100.75), (1, 101.0), (1, 101.5)]


async def test_open_loop_measures_from_the_intended_start_through_a_stall() -> None:
    """The first request blocks the whole process for 0.3 s: the requests due during the stall must carry
    the stall in their latency (measured from when they were due, not from when they could be sent)."""
    seen: list[tuple[float, float]] = []  # (intended, latency)

    async def op(step: int, intended: float) -> None:
        if not seen:
            time.sleep(0.3)  # noqa: ASYNC251 - the stall under test
        seen.append((intended, time.monotonic() - intended))

    start = time.monotonic() + 0.02
    runner = OpenLoop(op)
    await runner.run(start, [Step(100, 0.2)])
    assert runner.launched == 20
    stall_end = seen[0][0] + seen[0][1]
    for intended, latency in seen[1:]:
        if intended < stall_end:
            # Sent only once the stall was over: its latency includes the wait since it was due.
            assert latency >= stall_end - intended - 1e-6


async def test_open_loop_does_not_wait_for_earlier_requests() -> None:
    in_flight = 0
    peak = 0

    async def slow(step: int, intended: float) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.2)
        in_flight -= 1

    runner = OpenLoop(slow)
    await runner.run(time.monotonic(), [Step(100, 0.1)])
    assert runner.launched == 10
    assert peak == 10


async def test_open_loop_records_overflow_instead_of_skipping() -> None:
    overflowed: list[float] = []

    async def slow(step: int, intended: float) -> None:
        await asyncio.sleep(0.1)

    runner = OpenLoop(slow, max_in_flight=3, on_overflow=lambda s, due: overflowed.append(due))
    await runner.run(time.monotonic(), [Step(200, 0.05)])
    assert runner.launched == 3
    assert len(overflowed) == 7


async def test_closed_loop_keeps_n_in_flight_per_step() -> None:
    in_flight = 0
    peaks: dict[int, int] = {}

    async def op(step: int, started: float) -> None:
        nonlocal in_flight
        in_flight += 1
        peaks[step] = max(peaks.get(step, 0), in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1

    runner = await run_load("closed", op, [Step(3, 0.1), Step(5, 0.1)], start=time.monotonic())
    assert isinstance(runner, ClosedLoop)
    assert peaks == {0: 3, 1: 5}
    with pytest.raises(ValueError, match="mode"):
        await run_load("sideways", op, [Step(1, 0.1)], start=time.monotonic())


async def test_a_call_still_open_past_its_deadline_and_grace_is_hung() -> None:
    mesh = Mesh.__new__(Mesh)  # only the timing of calls: no channel
    mesh.deadline, mesh.hang_grace = 0.01, 0.01
    got: list[Result] = []

    async def never() -> None:
        await asyncio.Event().wait()

    async def answers() -> str:
        return "answer"

    assert await mesh.timed("ConsultDmg", "100", never, 0.0, got.append) is None
    assert await mesh.timed("ConsultDmg", "100", answers, 0.0, got.append) == "answer"
    assert [(r[0], r[1], r[2]) for r in got] == [("ConsultDmg", "100", "HUNG"), ("ConsultDmg", "100", "OK")]
