"""Faults applied on a schedule during a run.

A fault is written ``KIND:TARGET@AT[+DURATION][/EVERY][=VALUE]``, times in ``ms``, ``s`` (default) or ``m``:

- ``kill:oa-300@10s``            SIGKILL the process (the cluster's supervisor restarts it at once)
- ``kill:oa-300@30s/30s``        ... at 30 s, then every 30 s until the end of the run
- ``restart:hub@20s``            SIGTERM: a graceful stop, then the supervisor's restart
- ``pause:ehealth@15s+5s``       SIGSTOP, then SIGCONT 5 s later (default 5 s)
- ``latency:oa-500@10s+20s=200ms``  200 ms more on every hub → OA 500 call (default 10 s)
- ``errors:oa-500@10s+20s=30%``  that share of the hub → OA 500 calls fail UNAVAILABLE (``0.3`` or ``30%``)

A target is a process name of the cluster description (``hub``, ``ehealth``, ``oa-100`` ...; ``oa:100`` and
``100`` name the same OA node). Every fault goes through the cluster's chaos API (the supervisor's
``mycarenet.sandbox.v1.ChaosService``, with the administrator's certificate), which heals it by itself after
its duration; the injector clears what is still active when a run ends early.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mycarenet_cluster.probe import pid_alive
from mycarenet_sdk.admin import AdminClient
from mycarenet_sdk.client import MyCareNetError

KINDS = ("kill", "restart", "pause", "latency", "errors")
PROCESS_KINDS = ("kill", "restart", "pause")
LINK_KINDS = ("latency", "errors")
DEFAULT_DURATION = {"pause": 5.0, "latency": 10.0, "errors": 10.0}
_TIME = r"\d+(?:\.\d+)?(?:ms|s|m)?"
_SPEC = re.compile(
    rf"^(?P<kind>[a-z]+):(?P<target>[A-Za-z0-9:_-]+)@(?P<at>{_TIME})"
    rf"(?:\+(?P<duration>{_TIME}))?(?:/(?P<every>{_TIME}))?(?:=(?P<value>\d+(?:\.\d+)?(?:ms|s|%)?))?$"
)


class FaultSpecError(ValueError):
    """A fault that cannot be parsed or applied."""


def parse_seconds(text: str) -> float:
    """``"500ms"`` → 0.5, ``"2m"`` → 120, ``"3"`` / ``"3s"`` → 3."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", text.strip())
    if not match:
        raise FaultSpecError(f"not a duration: {text!r}")
    value, unit = float(match[1]), match[2] or "s"
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]


def normalise_target(target: str) -> str:
    """``oa:300`` / ``300`` / ``oa-300`` → ``oa-300``; ``hub`` and ``ehealth`` unchanged."""
    if target.isdigit():
        return f"oa-{target}"
    if target.startswith("oa:"):
        return f"oa-{target[3:]}"
    return target


@dataclass(frozen=True)
class FaultSpec:
    """One line of the schedule."""

    kind: str
    target: str
    at: float
    duration: float = 0.0
    every: float | None = None
    value: float = 0.0
    text: str = ""

    @property
    def oa_code(self) -> str | None:
        return self.target[3:] if self.target.startswith("oa-") else None


def parse_fault(text: str) -> FaultSpec:
    match = _SPEC.match(text.strip())
    if not match:
        raise FaultSpecError(f"cannot read fault {text!r} (KIND:TARGET@AT[+DURATION][/EVERY][=VALUE])")
    kind = match["kind"]
    if kind not in KINDS:
        raise FaultSpecError(f"unknown fault kind {kind!r} in {text!r} (one of {', '.join(KINDS)})")
    target = normalise_target(match["target"])
    duration = parse_seconds(match["duration"]) if match["duration"] else DEFAULT_DURATION.get(kind, 0.0)
    every = parse_seconds(match["every"]) if match["every"] else None
    if every is not None and every <= 0:
        raise FaultSpecError(f"repeat period must be positive in {text!r}")
    value = 0.0
    raw = match["value"]
    if kind == "latency":
        if not raw:
            raise FaultSpecError(f"latency needs a value, e.g. {text}=200ms")
        value = parse_seconds(raw) * 1000.0 if raw.endswith(("ms", "s")) else float(raw)
    elif kind == "errors":
        if not raw:
            raise FaultSpecError(f"errors needs a fraction, e.g. {text}=30%")
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
        if not 0.0 < value <= 1.0:
            raise FaultSpecError(f"error fraction must be in (0, 1] in {text!r}")
    elif raw:
        raise FaultSpecError(f"{kind} takes no value in {text!r}")
    if kind in LINK_KINDS and not target.startswith("oa-"):
        raise FaultSpecError(f"{kind} applies to an OA link (oa-XXX), not {target!r}")
    if kind == "pause" and duration <= 0:
        raise FaultSpecError(f"pause needs a duration in {text!r}")
    return FaultSpec(kind, target, parse_seconds(match["at"]), duration, every, value, text.strip())


@dataclass(frozen=True)
class FaultEvent:
    """One application of a fault, at ``at`` seconds after the start of measurement."""

    kind: str
    target: str
    at: float
    duration: float
    value: float
    spec: str


def expand(specs: Sequence[FaultSpec], run_seconds: float) -> list[FaultEvent]:
    """Every event of the schedule within the run (repeating faults unrolled), in time order."""
    events: list[FaultEvent] = []
    for spec in specs:
        at = spec.at
        while at < run_seconds:
            events.append(FaultEvent(spec.kind, spec.target, at, spec.duration, spec.value, spec.text))
            if spec.every is None:
                break
            at += spec.every
    return sorted(events, key=lambda e: (e.at, e.target, e.kind))


@dataclass
class FaultRecord:
    """What happened when an event was applied (for the report)."""

    kind: str
    target: str
    at: float
    duration: float
    value: float
    spec: str
    applied_at: float | None = None  # run seconds
    cleared_at: float | None = None  # run seconds: resumed, link restored, or back to SERVING
    pid: int | None = None
    new_pid: int | None = None
    serving_after_s: float | None = None  # from the fault (kill/restart) or the resume (pause)
    note: str = ""
    recovery: dict[str, Any] = field(default_factory=dict)

    @property
    def oa_code(self) -> str | None:
        return self.target[3:] if self.target.startswith("oa-") else None


class ClusterControl:
    """What the injector needs from the cluster: fresh pids, addresses, health, and its chaos API."""

    def __init__(
        self,
        describe: Callable[[], dict[str, Any]],
        health: Callable[[str], Awaitable[str]],
        chaos: AdminClient | None = None,
    ) -> None:
        self._describe = describe
        self._health = health
        self._chaos = chaos

    def process(self, name: str) -> dict[str, Any]:
        for proc in self._describe().get("processes", []):
            if proc["name"] == name:
                found: dict[str, Any] = proc
                return found
        raise FaultSpecError(f"no process {name!r} in the cluster description")

    @property
    def chaos(self) -> AdminClient:
        if self._chaos is None:
            raise FaultSpecError("faults need the cluster's chaos API (its sandbox server)")
        return self._chaos

    async def health(self, address: str) -> str:
        return await self._health(address)

    def validate(self, events: Sequence[FaultEvent]) -> None:
        for event in events:
            self.process(event.target)
        if events and not (self._describe().get("sandbox") or {}).get("address"):
            raise FaultSpecError(
                "this cluster has no sandbox server (its chaos API): restart it with `mycarenet-cluster up`"
            )


class FaultInjector:
    """Applies a schedule against a cluster while the load runs; every task it starts ends by itself."""

    def __init__(
        self,
        control: ClusterControl,
        events: Sequence[FaultEvent],
        *,
        t0: float,
        serving_timeout: float = 60.0,
        poll: float = 0.05,
    ) -> None:
        self.control = control
        self.events = list(events)
        self.t0 = t0
        self.serving_timeout = serving_timeout
        self.poll = poll
        self.records: list[FaultRecord] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._active: set[str] = set()  # ids of the faults injected and not known to be healed
        self._injecting: set[asyncio.Future[Any]] = set()  # injections whose answer may not be back yet

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 3)

    async def run(self) -> None:
        """Apply each event at its time (returns when all are applied and their follow-ups are done)."""
        try:
            for event in self.events:
                wait = self.t0 + event.at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                record = FaultRecord(
                    event.kind, event.target, event.at, event.duration, event.value, event.spec
                )
                self.records.append(record)
                self._tasks.append(asyncio.create_task(self._apply(event, record)))
            await asyncio.gather(*self._tasks)
        finally:
            await self.cleanup()

    async def cleanup(self) -> None:
        """Heal every fault of this run that may still be active (also when the run is interrupted)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # An injection in flight when the run was cut still creates its fault: wait for its id.
        await asyncio.gather(*self._injecting, return_exceptions=True)
        for fault_id in sorted(self._active):
            # Healed already (NOT_FOUND) or the cluster is gone: either way it heals by itself in time.
            with contextlib.suppress(MyCareNetError):
                await self.control.chaos.clear_faults(fault_id)
        self._active.clear()

    async def _injected(self, call: Awaitable[Any]) -> Any:
        """Inject a fault; its id is kept for :meth:`cleanup` even when the run is cancelled while the call is
        in flight (the supervisor creates the fault all the same)."""
        task = asyncio.ensure_future(call)
        self._injecting.add(task)

        def noted(done: asyncio.Future[Any]) -> None:
            self._injecting.discard(done)
            if not done.cancelled() and done.exception() is None:
                self._active.add(done.result().id)

        task.add_done_callback(noted)
        return await asyncio.shield(task)

    async def _wait_serving(self, address: str, since: float, pid: int | None) -> float | None:
        """Seconds from ``since`` (monotonic) until the process at ``address`` answers SERVING again
        (after the old ``pid`` is gone, when given)."""
        deadline = since + self.serving_timeout
        while time.monotonic() < deadline:
            if (pid is None or not pid_alive(pid)) and await self.control.health(address) == "SERVING":
                return round(time.monotonic() - since, 3)
            await asyncio.sleep(self.poll)
        return None

    async def _new_pid(self, target: str, old: int, within: float = 5.0) -> int | None:
        """The pid the supervisor recorded for the restarted process (it writes it once SERVING)."""
        give_up = time.monotonic() + within
        while True:
            pid: int | None = self.control.process(target).get("pid")
            if pid != old or time.monotonic() > give_up:
                return pid if pid != old else None
            await asyncio.sleep(self.poll)

    async def _until_healed(self, event: FaultEvent, fault_id: str) -> float:
        """Wait until the fault's end (the chaos API heals it then); the monotonic time of its end."""
        await asyncio.sleep(max(0.0, self.t0 + event.at + event.duration - time.monotonic()))
        self._active.discard(fault_id)
        return time.monotonic()

    async def _apply(self, event: FaultEvent, record: FaultRecord) -> None:
        try:
            await self._inject(event, record)
        except MyCareNetError as error:  # refused by the chaos API (e.g. the process is restarting)
            record.note = f"{error.status.name} {error.reason}: {error.message}"

    async def _inject(self, event: FaultEvent, record: FaultRecord) -> None:
        proc = self.control.process(event.target)
        record.pid = proc.get("pid")
        address = proc["address"]
        chaos = self.control.chaos
        if event.kind in ("kill", "restart"):
            if not record.pid or not pid_alive(record.pid):
                record.note = "process was not running (still restarting?)"
                return
            fired = time.monotonic()
            await chaos.process_fault(event.target, event.kind, 0.0)
            record.applied_at = self.now()
            record.serving_after_s = await self._wait_serving(address, fired, record.pid)
            if record.serving_after_s is not None:
                record.cleared_at = round(fired - self.t0 + record.serving_after_s, 3)
            else:
                record.note = f"not SERVING after {self.serving_timeout:.0f}s"
            record.new_pid = await self._new_pid(event.target, record.pid)
        elif event.kind == "pause":
            fault = await self._injected(chaos.process_fault(event.target, "pause", event.duration))
            record.applied_at = self.now()
            resumed = await self._until_healed(event, fault.id)
            record.serving_after_s = await self._wait_serving(address, resumed, None)
            record.cleared_at = round(resumed - self.t0, 3)
        else:
            if event.kind == "latency":
                fault = await self._injected(
                    chaos.link_fault("hub", event.target, event.duration, latency_ms=round(event.value))
                )
            else:
                percent = max(1, round(event.value * 100))
                fault = await self._injected(
                    chaos.link_fault("hub", event.target, event.duration, error_percent=percent)
                )
            record.applied_at = self.now()
            await self._until_healed(event, fault.id)
            record.cleared_at = self.now()
