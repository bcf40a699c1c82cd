"""The sandbox's test clock, kept by the cluster supervisor (``mycarenet.sandbox.v1.SandboxClockService``).

The mesh clock is the machine's clock moved by an offset (time keeps running). The supervisor keeps the
offset on disk (``<data>/clock.json``) and gives it to every process it (re)starts, so a process restarted
later comes back at the moved clock. A move (set to a date, advance by days) is refused when it goes
backwards; otherwise it is written to disk first, then told to every process (their
``ProcessClockService``, served by the core skeleton), and the call returns once each one observes it, the
insurer nodes having run the year ends the move went over.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from mycarenet_core import dates
from mycarenet_core.channels import open_channel
from mycarenet_core.clock import BRUSSELS, ClockBackwards, moved_offset
from mycarenet_core.codes import McnCode
from mycarenet_core.errors import MeshError, field_error, parse_rpc_error
from mycarenet_core.gen.mycarenet.sandbox.v1 import clock_pb2 as pb
from mycarenet_core.gen.mycarenet.sandbox.v1 import clock_pb2_grpc as pb_grpc
from mycarenet_core.process_clock import MAX_OFFSET
from mycarenet_core.server import Service
from mycarenet_core.validation import Checker

log = logging.getLogger(__name__)

STATE_FILE = "clock.json"
SERVICE_NAME = "mycarenet.sandbox.v1.SandboxClockService"
MAX_ADVANCE_DAYS = 36500
PROCESS_TIMEOUT = 120.0  # seconds a process may take to observe a move (an insurer runs its year ends)


class ClockOutOfRange(ValueError):
    """A mesh date more than 100 years from the machine's (what every process accepts)."""


class ClockState:
    """The mesh clock's offset, kept in ``<data>/clock.json`` (written atomically at each move)."""

    def __init__(self, data: Path, start: dt.date | None) -> None:
        """Load the kept offset; ``start`` (``up --today``) moves it to that date, never backwards
        (:class:`~mycarenet_core.clock.ClockBackwards`: reset the data to go back)."""
        self.path = data / STATE_FILE
        offset = dt.timedelta(0)
        if self.path.is_file():
            kept = json.loads(self.path.read_text())
            offset = dt.timedelta(seconds=float(kept["offset_seconds"]))
        if start is not None:
            offset = moved_offset(offset, start, forward_only=self.path.is_file())
            if abs(offset) > MAX_OFFSET:
                raise ClockOutOfRange(f"{start.isoformat()} is more than 100 years from the machine's date")
        self.offset = offset
        self.save()

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset

    def today(self) -> dt.date:
        return self.now().astimezone(BRUSSELS).date()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        record = {"offset_seconds": self.offset.total_seconds(), "today": self.today().isoformat()}
        tmp.write_text(json.dumps(record, indent=2))
        tmp.replace(self.path)


def _duration(delta: dt.timedelta) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromTimedelta(delta)
    return value


class SandboxClockServicer(pb_grpc.SandboxClockServiceServicer):
    """The public face of the test clock; ``processes()`` names and addresses the processes of the mesh."""

    def __init__(
        self,
        state: ClockState,
        processes: Callable[[], Sequence[tuple[str, str]]],
        credentials: grpc.ChannelCredentials | None,
        on_moved: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.state = state
        self.processes = processes
        self.credentials = credentials
        self.on_moved = on_moved  # e.g. the supervisor rewrites cluster.json (its "today")
        self._moving = asyncio.Lock()

    async def GetClock(self, request: pb.GetClockRequest, context: object) -> pb.GetClockResponse:
        observed = await self._tell(None)
        return pb.GetClockResponse(clock=self._answer(observed))

    async def SetClock(self, request: pb.SetClockRequest, context: object) -> pb.SetClockResponse:
        with Checker() as check:
            day = check.date("date", request.date)
        assert day is not None
        return pb.SetClockResponse(clock=await self.move_to(day))

    async def AdvanceClock(self, request: pb.AdvanceClockRequest, context: object) -> pb.AdvanceClockResponse:
        with Checker() as check:
            days = check.number("days", request.days, minimum=0, maximum=MAX_ADVANCE_DAYS)
        async with self._moving:
            day = self.state.today() + dt.timedelta(days=days)
            return pb.AdvanceClockResponse(clock=await self._move(day, "days"))

    async def move_to(self, day: dt.date) -> pb.ClockState:
        """Move the mesh to ``day`` (FAILED_PRECONDITION CLOCK_BACKWARDS before the mesh date)."""
        async with self._moving:
            return await self._move(day, "date")

    async def _move(self, day: dt.date, field: str) -> pb.ClockState:
        try:
            offset = moved_offset(self.state.offset, day, forward_only=True)
        except ClockBackwards as error:
            raise MeshError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "CLOCK_BACKWARDS",
                f"{error}: the mesh clock never goes back (reset the data: mycarenet-cluster reset)",
            ) from None
        if abs(offset) > MAX_OFFSET:  # what every process accepts (and starts with)
            raise field_error(
                field, McnCode.VALUE_NOT_ALLOWED, "the mesh date stays within 100 years of the machine's date"
            )
        self.state.offset = offset
        self.state.save()  # on disk first: a process (re)started from now on starts at the new clock
        log.info("test clock moved to %s", day.isoformat())
        answer = self._answer(await self._tell(offset))
        if self.on_moved is not None:
            await self.on_moved()
        return answer

    async def _tell(self, offset: dt.timedelta | None) -> list[pb.ProcessClock]:
        """Every process's clock: moved to ``offset`` first unless None (then only read)."""
        return list(await asyncio.gather(*(self._tell_one(n, a, offset) for n, a in self.processes())))

    async def _tell_one(self, name: str, address: str, offset: dt.timedelta | None) -> pb.ProcessClock:
        async with open_channel(address, credentials=self.credentials, identity="admin") as channel:
            stub = pb_grpc.ProcessClockServiceStub(channel)
            try:
                if offset is None:
                    got = await stub.GetOffset(pb.GetOffsetRequest(), timeout=5.0, wait_for_ready=True)
                    answer = got.clock
                else:
                    request = pb.SetOffsetRequest(offset=_duration(offset))
                    moved = await stub.SetOffset(request, timeout=PROCESS_TIMEOUT, wait_for_ready=True)
                    answer = moved.clock
            except grpc.aio.AioRpcError as error:
                failure = parse_rpc_error(error)
                log.warning("%s did not observe the clock: %s", name, failure)
                return pb.ProcessClock(process=name, observed=False, error=str(failure)[:200])
        answer.process = name
        return answer

    def _answer(self, processes: list[pb.ProcessClock]) -> pb.ClockState:
        now = timestamp_pb2.Timestamp()
        now.FromDatetime(self.state.now())
        return pb.ClockState(
            today=dates.to_proto(self.state.today()),
            now=now,
            offset=_duration(self.state.offset),
            processes=processes,
        )


def service(servicer: SandboxClockServicer) -> Service:
    """The clock service to mount on the sandbox server."""
    return Service(pb_grpc.add_SandboxClockServiceServicer_to_server, servicer, SERVICE_NAME)


__all__ = ["ClockOutOfRange", "ClockState", "SandboxClockServicer", "service"]
