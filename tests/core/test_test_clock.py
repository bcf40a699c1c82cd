"""The sandbox's test clock: the movable clock of every process, the offset a move computes (forward only,
the Brussels time of day kept), the supervisor's kept offset, and when an insurer's year ends are due."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import grpc
import pytest
from mycarenet_cluster.testclock import ClockOutOfRange, ClockState, SandboxClockServicer

from mycarenet_core import dates
from mycarenet_core.clock import (
    BRUSSELS,
    ClockBackwards,
    OffsetClock,
    SystemClock,
    clock_from_setting,
    moved_offset,
    until_next_midnight,
)
from mycarenet_core.errors import MeshError
from mycarenet_core.gen.mycarenet.sandbox.v1 import clock_pb2 as pb
from oa_node.year_end import years_due

SUMMER = dt.datetime(2026, 7, 1, 8, 30, tzinfo=dt.UTC)  # 10:30 in Brussels (CEST)


def test_a_move_keeps_the_brussels_time_of_day_across_summer_time() -> None:
    offset = moved_offset(dt.timedelta(0), dt.date(2014, 1, 15), real=SUMMER)
    mesh = (SUMMER + offset).astimezone(BRUSSELS)
    assert (mesh.date(), mesh.hour, mesh.minute) == (dt.date(2014, 1, 15), 10, 30)  # CET in January
    later = moved_offset(offset, dt.date(2014, 8, 1), real=SUMMER, forward_only=True)
    mesh = (SUMMER + later).astimezone(BRUSSELS)
    assert (mesh.date(), mesh.hour, mesh.minute) == (dt.date(2014, 8, 1), 10, 30)


def test_a_move_backwards_is_refused_and_the_same_day_is_not_backwards() -> None:
    offset = moved_offset(dt.timedelta(0), dt.date(2015, 5, 23), real=SUMMER)
    with pytest.raises(ClockBackwards, match="the mesh date is 2015-05-23; 2015-05-22 is before it"):
        moved_offset(offset, dt.date(2015, 5, 22), real=SUMMER, forward_only=True)
    assert moved_offset(offset, dt.date(2015, 5, 23), real=SUMMER, forward_only=True) == offset
    assert moved_offset(offset, dt.date(2013, 1, 1), real=SUMMER) < offset  # allowed when not forward only


def test_the_movable_clock_runs_and_tells_its_listeners_of_a_move() -> None:
    clock = OffsetClock(dt.date(2013, 8, 22))
    assert clock.today() == dt.date(2013, 8, 22)
    heard: list[dt.date] = []
    clock.listen(lambda: heard.append(clock.today()))
    clock.move(moved_offset(clock.offset, dt.date(2014, 3, 4)))
    assert heard == [dt.date(2014, 3, 4)]
    assert clock.today() == dt.date(2014, 3, 4)
    first = clock.now()
    assert clock.now() >= first  # time still runs
    with pytest.raises(ValueError, match="a start date or an offset"):
        OffsetClock()


def test_clock_from_settings_the_offset_wins_over_the_date() -> None:
    assert isinstance(clock_from_setting(None), SystemClock)
    by_date = clock_from_setting(dt.date(2012, 1, 1))
    assert isinstance(by_date, OffsetClock)
    assert by_date.today() == dt.date(2012, 1, 1)
    offset = moved_offset(dt.timedelta(0), dt.date(2015, 6, 1)).total_seconds()
    by_offset = clock_from_setting(dt.date(2012, 1, 1), offset)
    assert isinstance(by_offset, OffsetClock)
    assert by_offset.today() == dt.date(2015, 6, 1)


def test_the_supervisor_keeps_the_offset_and_up_today_never_goes_back(tmp_path: Path) -> None:
    assert ClockState(tmp_path, None).offset == dt.timedelta(0)  # no --today: the machine's clock
    (tmp_path / "clock.json").unlink()
    started = ClockState(tmp_path, dt.date(2013, 8, 22))
    assert started.today() == dt.date(2013, 8, 22)
    started.offset = moved_offset(started.offset, dt.date(2015, 5, 23))
    started.save()
    assert json.loads((tmp_path / "clock.json").read_text())["today"] == "2015-05-23"
    assert ClockState(tmp_path, None).today() == dt.date(2015, 5, 23)  # a restart keeps the moved clock
    assert ClockState(tmp_path, dt.date(2016, 1, 1)).today() == dt.date(2016, 1, 1)  # --today forward
    with pytest.raises(ClockBackwards):
        ClockState(tmp_path, dt.date(2015, 12, 31))
    assert ClockState(tmp_path, None).today() == dt.date(2016, 1, 1)


def test_year_ends_due_only_for_the_years_lived_through_and_not_run() -> None:
    born = dt.date(2013, 8, 22)
    assert years_due(born, dt.date(2013, 12, 31), set()) == []
    assert years_due(born, dt.date(2014, 1, 1), set()) == [2013]
    assert years_due(born, dt.date(2016, 3, 1), {2014}) == [2013, 2015]
    assert years_due(dt.date(2013, 12, 31), dt.date(2014, 1, 1), set()) == [2013]  # lived its last day
    assert years_due(born, dt.date(2014, 1, 1), {2013}) == []
    assert len(years_due(dt.date(1900, 1, 1), dt.date(2299, 1, 1), set())) == 300  # bounded per move


def test_the_next_wake_up_is_the_next_midnight_in_brussels() -> None:
    assert until_next_midnight(SUMMER) == pytest.approx((13 * 60 + 30) * 60)  # 10:30 CEST -> midnight
    just_before = dt.datetime(2013, 12, 31, 22, 59, 59, 500000, tzinfo=dt.UTC)  # 23:59:59.5 CET
    assert until_next_midnight(just_before) == 1.0  # at least one second


async def test_a_move_beyond_a_hundred_years_is_refused_before_anything_moves(tmp_path: Path) -> None:
    state = ClockState(tmp_path, dt.date(2100, 1, 1))
    clocks = SandboxClockServicer(state, lambda: [], None)  # no process to tell
    with pytest.raises(MeshError) as far:
        await clocks.SetClock(pb.SetClockRequest(date=dates.to_proto(dt.date(2199, 12, 31))), None)
    assert (far.value.status, [v.field for v in far.value.violations]) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["date"],
    )
    with pytest.raises(MeshError) as advanced:
        await clocks.AdvanceClock(pb.AdvanceClockRequest(days=36500), None)
    assert [v.field for v in advanced.value.violations] == ["days"]
    with pytest.raises(MeshError) as backwards:
        await clocks.SetClock(pb.SetClockRequest(date=dates.to_proto(dt.date(2099, 12, 31))), None)
    assert (backwards.value.status, backwards.value.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "CLOCK_BACKWARDS",
    )
    moved = await clocks.AdvanceClock(pb.AdvanceClockRequest(days=31), None)
    assert dates.from_proto(moved.clock.today, "today") == dt.date(2100, 2, 1) == state.today()
    assert ClockState(tmp_path, None).today() == dt.date(2100, 2, 1)  # kept on disk
    with pytest.raises(ClockOutOfRange):
        ClockState(tmp_path, dt.date(2199, 1, 1))
