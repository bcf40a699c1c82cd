"""Every process's face of the sandbox's test clock (``mycarenet.sandbox.v1.ProcessClockService``).

The core skeleton (:class:`~mycarenet_core.service.ServiceApp`) mounts it on every process whose clock is
movable (:class:`~mycarenet_core.clock.OffsetClock`, the sandbox's): the cluster supervisor moves the clock
of eHealth, the hub and each insurer node through it. A move calls the process's observers before it
answers (an insurer node runs the year ends the move went over), so the supervisor's answer comes after.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from google.protobuf import duration_pb2

from mycarenet_core import dates
from mycarenet_core.clock import OffsetClock
from mycarenet_core.codes import McnCode
from mycarenet_core.gen.mycarenet.sandbox.v1 import clock_pb2 as pb
from mycarenet_core.gen.mycarenet.sandbox.v1 import clock_pb2_grpc as pb_grpc
from mycarenet_core.server import Service
from mycarenet_core.validation import Checker

SERVICE_NAME = "mycarenet.sandbox.v1.ProcessClockService"
MAX_OFFSET = dt.timedelta(days=36525)  # 100 years either way

# Called after each move; answers the years whose year end it ran (an insurer node), or none.
ClockObserver = Callable[[], Awaitable[Sequence[int]]]


class ProcessClockServicer(pb_grpc.ProcessClockServiceServicer):
    """Moves ``clock`` and calls ``observers`` (in order) before answering."""

    def __init__(self, name: str, clock: OffsetClock, observers: list[ClockObserver]) -> None:
        self.name = name
        self.clock = clock
        self.observers = observers

    def _state(self, years: Sequence[int] = ()) -> pb.ProcessClock:
        return pb.ProcessClock(
            process=self.name[:20],
            observed=True,
            today=dates.to_proto(self.clock.today()),
            year_ends_run=years,
        )

    async def SetOffset(self, request: pb.SetOffsetRequest, context: Any) -> pb.SetOffsetResponse:
        with Checker() as check:
            offset = None
            if not request.HasField("offset"):
                check.add("offset", McnCode.MANDATORY_FIELD_MISSING, "offset is mandatory")
            else:  # at most 100 years either way; any int64 of seconds is a violation, not an overflow
                offset = check.duration("offset", request.offset, maximum=MAX_OFFSET)
        assert offset is not None
        self.clock.move(offset)
        years: list[int] = []
        for observe in self.observers:
            years += await observe()
        return pb.SetOffsetResponse(clock=self._state(years))

    async def GetOffset(self, request: pb.GetOffsetRequest, context: Any) -> pb.GetOffsetResponse:
        offset = duration_pb2.Duration()
        offset.FromTimedelta(self.clock.offset)
        return pb.GetOffsetResponse(clock=self._state(), offset=offset)


def service(name: str, clock: OffsetClock, observers: list[ClockObserver]) -> Service:
    """The service to mount on a process's server."""
    servicer = ProcessClockServicer(name, clock, observers)
    return Service(pb_grpc.add_ProcessClockServiceServicer_to_server, servicer, SERVICE_NAME)


__all__ = ["SERVICE_NAME", "ClockObserver", "ProcessClockServicer", "service"]
