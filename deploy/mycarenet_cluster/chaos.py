"""Chaos on the running cluster: the engine the supervisor drives, and ``mycarenet.sandbox.v1.ChaosService``.

A process fault acts on a process the supervisor owns (see :class:`Processes`, which the supervisor
implements): ``kill`` (SIGKILL; the supervisor holds it down for the duration, then starts it again),
``pause`` (SIGSTOP, SIGCONT after the duration), ``restart`` (SIGTERM: a graceful stop, down for the
duration, then started). The supervisor's crash-restart never fights a deliberate kill: the fault holds the
process until it heals.

A link fault (latency fixed + jitter, or a share of calls failing with a status code) is applied by the
receiving process to the calls of the faulty peer (``mycarenet_core.chaos``): no extra hop on the normal
path and no cost once healed. The engine sends the receiving process its whole set of rules, each with its
remaining time, through the process's ``ChaosAgentService``; the process ends each rule by itself when its
time is up, and the supervisor sends the set again to a process that restarted.

Every fault heals by itself after its duration (a timer of the engine); ``ClearFaults`` heals at once; a
supervisor that stops heals everything first (:meth:`ChaosEngine.close`). Durations are real elapsed time
(``time.monotonic``), not the mesh date of the test clock.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from mycarenet_core.channels import open_channel
from mycarenet_core.chaos import MAX_DURATION_MS, MAX_LATENCY_MS, MAX_PEER_NAME, error_status
from mycarenet_core.codes import McnCode
from mycarenet_core.errors import MeshError, not_found
from mycarenet_core.gen.mycarenet.sandbox.v1 import chaos_pb2, chaos_pb2_grpc
from mycarenet_core.server import Service
from mycarenet_core.validation import Checker

log = logging.getLogger("mycarenet-cluster.chaos")

SERVICE = "mycarenet.sandbox.v1.ChaosService"
MAX_ACTIVE = 256
MAX_ID = 16
CALLER_SOURCES = ("client", "backoffice", "admin")  # link sources that are callers, not processes


class Kind(enum.StrEnum):
    KILL = "kill"
    PAUSE = "pause"
    RESTART = "restart"
    LINK = "link"


ACTION_OF = {
    Kind.KILL: chaos_pb2.PROCESS_ACTION_KILL,
    Kind.PAUSE: chaos_pb2.PROCESS_ACTION_PAUSE,
    Kind.RESTART: chaos_pb2.PROCESS_ACTION_RESTART,
}
ACTIONS: dict[int, Kind] = {int(action): kind for kind, action in ACTION_OF.items()}


@dataclass(frozen=True)
class Link:
    """What a link fault does to each call from ``source`` to ``target``."""

    source: str
    target: str
    latency_ms: int = 0
    jitter_ms: int = 0
    error_percent: int = 0
    error_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE


@dataclass(frozen=True)
class FaultRequest:
    """A validated InjectFault request."""

    kind: Kind
    process: str  # the process acted on; for a link, the receiving one
    duration: float  # seconds
    link: Link | None = None


@dataclass
class Active:
    """A fault until it heals."""

    id: str
    request: FaultRequest
    started: float
    ends_at: float
    timer: asyncio.Task[None] | None = field(default=None, repr=False)


class Processes(Protocol):
    """What the engine needs of the supervisor that owns the processes."""

    def process_names(self) -> Sequence[str]: ...

    def hold(self, name: str) -> None:
        """Do not start ``name`` again when it exits, until :meth:`release`."""

    def release(self, name: str) -> None:
        """Start ``name`` again (now, or as soon as it has exited)."""

    def signal(self, name: str, sig: int) -> bool:
        """Send ``sig`` to the running process; False when it is not running."""

    async def set_link_rules(self, name: str, rules: Sequence[chaos_pb2.LinkRule]) -> None:
        """Give process ``name`` its whole set of link rules (its ChaosAgentService)."""


def parse_request(request: chaos_pb2.InjectFaultRequest) -> FaultRequest:
    """The fault asked for; every bad field at once (INVALID_ARGUMENT)."""
    with Checker() as check:
        which = request.WhichOneof("fault")
        duration_ms = check.number("duration_ms", request.duration_ms, minimum=0, maximum=MAX_DURATION_MS)
        if which is None:
            check.add("fault", McnCode.MANDATORY_FIELD_MISSING, "a process fault or a link fault")
            kind, process, link = Kind.LINK, "", None
        elif which == "process":
            kind = check.enum("process.action", request.process.action, ACTIONS) or Kind.KILL
            process = check.text("process.process", request.process.process, max_length=MAX_PEER_NAME)
            link = None
        else:
            raw = request.link
            kind = Kind.LINK
            source = check.text("link.source", raw.source, max_length=MAX_PEER_NAME)
            process = check.text("link.target", raw.target, max_length=MAX_PEER_NAME)
            latency = check.number("link.latency_ms", raw.latency_ms, minimum=0, maximum=MAX_LATENCY_MS)
            jitter = check.number("link.jitter_ms", raw.jitter_ms, minimum=0, maximum=MAX_LATENCY_MS)
            percent = check.number("link.error_percent", raw.error_percent, minimum=0, maximum=100)
            code = error_status(raw.error_code) if raw.error_code else grpc.StatusCode.UNAVAILABLE
            if code is None:
                check.add("link.error_code", McnCode.VALUE_NOT_ALLOWED, "a status code other than OK")
            if not (latency or jitter or percent):
                check.add("link", McnCode.MANDATORY_FIELD_MISSING, "a latency, a jitter or an error share")
            if source and source == process:
                check.add("link.source", McnCode.VALUE_NOT_ALLOWED, "a link joins two different parties")
            link = Link(source, process, latency, jitter, percent, code or grpc.StatusCode.UNAVAILABLE)
        if kind in (Kind.PAUSE, Kind.LINK) and which is not None and request.duration_ms == 0:
            check.add("duration_ms", McnCode.MANDATORY_FIELD_MISSING, f"a {kind} fault needs a duration")
    return FaultRequest(kind, process, duration_ms / 1000.0, link)


def _place(fault: FaultRequest) -> tuple[str, str | None]:
    return fault.process, fault.link.source if fault.link else None


def _precondition(reason: str, message: str) -> MeshError:
    return MeshError(grpc.StatusCode.FAILED_PRECONDITION, reason, message)


class ChaosEngine:
    """The active faults of one cluster, their effects and their healing."""

    def __init__(self, processes: Processes, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.processes = processes
        self.monotonic = monotonic
        self.active: dict[str, Active] = {}
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()

    def _check_parties(self, fault: FaultRequest) -> None:
        names = set(self.processes.process_names())
        if fault.process not in names:
            field_path = "link.target" if fault.link else "process.process"
            raise not_found(
                "PROCESS_UNKNOWN",
                f"no process {fault.process!r} in the cluster (one of {', '.join(sorted(names))})",
                code=McnCode.VALUE_NOT_ALLOWED,
                field_path=field_path,
            )
        if fault.link is not None and fault.link.source not in names | set(CALLER_SOURCES):
            raise not_found(
                "PROCESS_UNKNOWN",
                f"no party {fault.link.source!r} (a process, or one of {', '.join(CALLER_SOURCES)})",
                code=McnCode.VALUE_NOT_ALLOWED,
                field_path="link.source",
            )

    def _conflict(self, fault: FaultRequest) -> Active | None:
        """The active fault in the same place: a process fault on the same process, or a link fault on the
        same link (source and target)."""
        return next((a for a in self.active.values() if _place(a.request) == _place(fault)), None)

    async def inject(self, fault: FaultRequest) -> Active:
        """Apply ``fault`` now and schedule its healing."""
        async with self._lock:
            self._check_parties(fault)
            clash = self._conflict(fault)
            if clash is not None:
                raise _precondition(
                    "FAULT_ACTIVE",
                    f"fault {clash.id} ({clash.request.kind}) is already active there: clear it first",
                )
            if len(self.active) >= MAX_ACTIVE:
                raise _precondition("TOO_MANY_FAULTS", f"at most {MAX_ACTIVE} faults at once")
            now = self.monotonic()
            active = Active(str(next(self._ids)), fault, now, now + fault.duration)
            if fault.kind in (Kind.KILL, Kind.RESTART):
                self.processes.hold(fault.process)
                sig = signal.SIGKILL if fault.kind is Kind.KILL else signal.SIGTERM
                if not self.processes.signal(fault.process, sig):
                    self.processes.release(fault.process)
                    raise _precondition(
                        "PROCESS_NOT_RUNNING", f"{fault.process} is not running now (starting again?)"
                    )
            elif fault.kind is Kind.PAUSE and not self.processes.signal(fault.process, signal.SIGSTOP):
                raise _precondition("PROCESS_NOT_RUNNING", f"{fault.process} is not running now")
            self.active[active.id] = active
            active.timer = asyncio.create_task(self._heal_later(active), name=f"chaos heal {active.id}")
            if fault.link is not None:
                await self._push(fault.process)
            log.info("fault %s: %s on %s for %.3fs", active.id, fault.kind, fault.process, fault.duration)
            return active

    async def _heal_later(self, active: Active) -> None:
        await asyncio.sleep(max(0.0, active.ends_at - self.monotonic()))
        async with self._lock:
            if self.active.get(active.id) is active:
                active.timer = None  # this task: not to be cancelled by the healing
                await self._heal(active)

    async def _heal(self, active: Active) -> None:
        """Undo one fault (the lock is held)."""
        self.active.pop(active.id, None)
        if active.timer is not None:
            active.timer.cancel()
        fault = active.request
        if fault.kind in (Kind.KILL, Kind.RESTART):
            self.processes.release(fault.process)
        elif fault.kind is Kind.PAUSE:
            self.processes.signal(fault.process, signal.SIGCONT)
        else:
            await self._push(fault.process)
        log.info("fault %s healed", active.id)

    def rules_for(self, target: str) -> list[chaos_pb2.LinkRule]:
        """The link rules ``target`` must apply now, each with its remaining time."""
        now = self.monotonic()
        rules = []
        for active in self.active.values():
            link = active.request.link
            if link is None or active.request.process != target:
                continue
            rules.append(
                chaos_pb2.LinkRule(
                    source=link.source,
                    latency_ms=link.latency_ms,
                    jitter_ms=link.jitter_ms,
                    error_percent=link.error_percent,
                    error_code=link.error_code.value[0],
                    remaining_ms=max(1, round((active.ends_at - now) * 1000)),
                )
            )
        return rules

    async def _push(self, target: str) -> None:
        """Send ``target`` its link rules. A process that is down (killed, restarting) gets them when it
        serves again (:meth:`restarted`); one that cannot be reached keeps its rules until they end."""
        try:
            await self.processes.set_link_rules(target, self.rules_for(target))
        except grpc.aio.AioRpcError as error:
            log.warning("link faults of %s not delivered now (%s): at its restart", target, error.code())

    async def restarted(self, name: str) -> None:
        """``name`` started again (a crash, a kill that healed): give it its link rules back."""
        async with self._lock:
            if self.rules_for(name):
                await self._push(name)

    def remaining(self, active: Active) -> float:
        return max(0.0, active.ends_at - self.monotonic())

    def listing(self) -> list[Active]:
        """Oldest first."""
        return sorted(self.active.values(), key=lambda a: (a.started, int(a.id)))

    async def clear(self, fault_id: str | None) -> list[str]:
        """Heal ``fault_id`` (NOT_FOUND when not active), or every fault with None."""
        async with self._lock:
            if fault_id is None:
                chosen = self.listing()
            elif fault_id in self.active:
                chosen = [self.active[fault_id]]
            else:
                raise not_found("FAULT_UNKNOWN", f"no active fault {fault_id!r}")
            for active in chosen:
                await self._heal(active)
            return [a.id for a in chosen]

    async def close(self) -> None:
        """Heal everything (the supervisor stops)."""
        await self.clear(None)


def to_message(engine: ChaosEngine, active: Active) -> chaos_pb2.Fault:
    fault = active.request
    message = chaos_pb2.Fault(
        id=active.id,
        duration_ms=round(fault.duration * 1000),
        remaining_ms=round(engine.remaining(active) * 1000),
    )
    if fault.link is None:
        message.process.CopyFrom(chaos_pb2.ProcessFault(process=fault.process, action=ACTION_OF[fault.kind]))
    else:
        link = fault.link
        message.link.CopyFrom(
            chaos_pb2.LinkFault(
                source=link.source,
                target=link.target,
                latency_ms=link.latency_ms,
                jitter_ms=link.jitter_ms,
                error_percent=link.error_percent,
                error_code=link.error_code.value[0],
            )
        )
    return message


class ChaosServicer(chaos_pb2_grpc.ChaosServiceServicer):
    """``mycarenet.sandbox.v1.ChaosService`` over one engine (administrator only: trust.toml)."""

    def __init__(self, engine: ChaosEngine) -> None:
        self.engine = engine

    async def InjectFault(
        self, request: chaos_pb2.InjectFaultRequest, context: Any
    ) -> chaos_pb2.InjectFaultResponse:
        active = await self.engine.inject(parse_request(request))
        return chaos_pb2.InjectFaultResponse(fault=to_message(self.engine, active))

    async def ListFaults(
        self, request: chaos_pb2.ListFaultsRequest, context: Any
    ) -> chaos_pb2.ListFaultsResponse:
        return chaos_pb2.ListFaultsResponse(
            faults=[to_message(self.engine, a) for a in self.engine.listing()]
        )

    async def ClearFaults(
        self, request: chaos_pb2.ClearFaultsRequest, context: Any
    ) -> chaos_pb2.ClearFaultsResponse:
        with Checker() as check:
            fault_id = check.text("id", request.id, max_length=MAX_ID, required=not request.all)
            if request.all and fault_id:
                check.add("id", McnCode.VALUE_NOT_ALLOWED, "an id or all, not both")
        cleared = await self.engine.clear(None if request.all else fault_id)
        return chaos_pb2.ClearFaultsResponse(cleared_ids=cleared)


class LinkOnly:
    """:class:`Processes` that this sandbox does not own (servers in a test's process): link faults only, a
    process fault is refused (PROCESS_NOT_RUNNING)."""

    def __init__(
        self, addresses: Callable[[], Mapping[str, str]], credentials: grpc.ChannelCredentials | None
    ) -> None:
        self.addresses = addresses
        self.credentials = credentials

    def process_names(self) -> Sequence[str]:
        return sorted(self.addresses())

    def hold(self, name: str) -> None:
        """Nothing to hold: no process of its own."""

    def release(self, name: str) -> None:
        """Nothing held."""

    def signal(self, name: str, sig: int) -> bool:
        return False

    async def set_link_rules(self, name: str, rules: Sequence[chaos_pb2.LinkRule]) -> None:
        await set_link_rules(self.addresses()[name], self.credentials, rules)


async def set_link_rules(
    address: str, credentials: grpc.ChannelCredentials | None, rules: Sequence[chaos_pb2.LinkRule]
) -> None:
    """Give the process at ``address`` its whole set of link rules, as the administrator."""
    async with open_channel(address, credentials=credentials, identity="admin") as channel:
        await chaos_pb2_grpc.ChaosAgentServiceStub(channel).SetLinkFaults(
            chaos_pb2.SetLinkFaultsRequest(rules=rules), timeout=5.0
        )


def service(engine: ChaosEngine) -> Service:
    """ChaosService over ``engine``, to mount on the sandbox server."""
    return Service(chaos_pb2_grpc.add_ChaosServiceServicer_to_server, ChaosServicer(engine), SERVICE)


__all__ = [
    "CALLER_SOURCES",
    "MAX_ACTIVE",
    "ChaosEngine",
    "ChaosServicer",
    "FaultRequest",
    "Kind",
    "Link",
    "LinkOnly",
    "Processes",
    "parse_request",
    "service",
    "set_link_rules",
]
