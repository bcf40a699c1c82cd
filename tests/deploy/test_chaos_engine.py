"""The chaos engine's bookkeeping (what it asks of the supervisor, when faults heal, what it lists) and the
validation of ChaosService requests, against a recorder of the supervisor's side."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Sequence

import grpc
import pytest
from mycarenet_cluster.chaos import ChaosEngine, ChaosServicer, Kind, parse_request

from mycarenet_core.errors import MeshError
from mycarenet_core.gen.mycarenet.sandbox.v1 import chaos_pb2

NAMES = ("ehealth", "hub", "oa-100", "oa-300")


class Recorder:
    """The supervisor's side of :class:`~mycarenet_cluster.chaos.Processes`, recorded."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.held: set[str] = set()
        self.down: set[str] = set()  # processes that are not running
        self.rules: dict[str, list[chaos_pb2.LinkRule]] = {}
        self.unreachable: set[str] = set()  # processes whose agent does not answer

    def process_names(self) -> Sequence[str]:
        return NAMES

    def hold(self, name: str) -> None:
        self.held.add(name)
        self.events.append(("hold", name))

    def release(self, name: str) -> None:
        self.held.discard(name)
        self.events.append(("release", name))

    def signal(self, name: str, sig: int) -> bool:
        if name in self.down:
            return False
        self.events.append((signal.Signals(sig).name, name))
        return True

    async def set_link_rules(self, name: str, rules: Sequence[chaos_pb2.LinkRule]) -> None:
        if name in self.unreachable:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "connection refused"
            )
        self.rules[name] = list(rules)
        self.events.append(("rules", name))


def process(name: str, action: chaos_pb2.ProcessAction.ValueType, ms: int) -> chaos_pb2.InjectFaultRequest:
    return chaos_pb2.InjectFaultRequest(
        process=chaos_pb2.ProcessFault(process=name, action=action), duration_ms=ms
    )


def link(source: str, target: str, ms: int, **fields: int) -> chaos_pb2.InjectFaultRequest:
    return chaos_pb2.InjectFaultRequest(
        link=chaos_pb2.LinkFault(source=source, target=target, **fields), duration_ms=ms
    )


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_kill_holds_the_process_down_until_it_heals_by_itself() -> None:
    sup = Recorder()
    engine = ChaosEngine(sup)
    active = await engine.inject(parse_request(process("oa-300", chaos_pb2.PROCESS_ACTION_KILL, 200)))
    assert sup.events == [("hold", "oa-300"), ("SIGKILL", "oa-300")]
    assert [a.id for a in engine.listing()] == [active.id]
    assert 0 < engine.remaining(active) <= 0.2
    await until(lambda: not engine.active)
    assert sup.events[-1] == ("release", "oa-300")
    assert not sup.held


async def test_pause_and_restart_and_clear() -> None:
    sup = Recorder()
    engine = ChaosEngine(sup)
    paused = await engine.inject(parse_request(process("hub", chaos_pb2.PROCESS_ACTION_PAUSE, 60_000)))
    restarted = await engine.inject(parse_request(process("ehealth", chaos_pb2.PROCESS_ACTION_RESTART, 0)))
    assert ("SIGSTOP", "hub") in sup.events
    assert ("SIGTERM", "ehealth") in sup.events
    await until(lambda: restarted.id not in engine.active)  # duration 0: released at once
    assert ("release", "ehealth") in sup.events
    assert await engine.clear(paused.id) == [paused.id]
    assert sup.events[-1] == ("SIGCONT", "hub")
    with pytest.raises(MeshError) as unknown:
        await engine.clear(paused.id)
    assert unknown.value.status is grpc.StatusCode.NOT_FOUND


async def test_link_faults_are_sent_to_the_receiving_process_with_their_remaining_time() -> None:
    sup = Recorder()
    engine = ChaosEngine(sup)
    slow = await engine.inject(parse_request(link("hub", "oa-300", 60_000, latency_ms=200, jitter_ms=50)))
    await engine.inject(parse_request(link("client", "oa-300", 100, error_percent=30, error_code=8)))
    rules = {r.source: r for r in sup.rules["oa-300"]}
    assert rules["hub"].latency_ms == 200
    assert rules["hub"].jitter_ms == 50
    assert 59_000 < rules["hub"].remaining_ms <= 60_000
    assert rules["client"].error_percent == 30
    assert rules["client"].error_code == 8
    await until(lambda: len(sup.rules["oa-300"]) == 1)  # the 100 ms one healed: the set sent again
    assert sup.rules["oa-300"][0].source == "hub"
    await engine.restarted("oa-300")  # a restarted process gets its rules back
    assert sup.events[-1] == ("rules", "oa-300")
    listed = ChaosServicer(engine)
    answer = await listed.ListFaults(chaos_pb2.ListFaultsRequest(), None)
    assert [f.id for f in answer.faults] == [slow.id]
    assert answer.faults[0].link.target == "oa-300"
    assert answer.faults[0].remaining_ms > 59_000
    cleared = await listed.ClearFaults(chaos_pb2.ClearFaultsRequest(all=True), None)
    assert list(cleared.cleared_ids) == [slow.id]
    assert sup.rules["oa-300"] == []


async def test_a_link_fault_on_a_process_that_is_down_reaches_it_when_it_is_back() -> None:
    sup = Recorder()
    sup.unreachable.add("oa-300")
    engine = ChaosEngine(sup)
    fault = await engine.inject(parse_request(link("hub", "oa-300", 60_000, latency_ms=100)))
    assert [a.id for a in engine.listing()] == [fault.id]
    assert "oa-300" not in sup.rules
    sup.unreachable.clear()
    await engine.restarted("oa-300")
    assert [r.source for r in sup.rules["oa-300"]] == ["hub"]
    await engine.close()
    assert sup.rules["oa-300"] == []


async def test_refusals_unknown_process_conflict_and_not_running() -> None:
    sup = Recorder()
    engine = ChaosEngine(sup)
    with pytest.raises(MeshError) as unknown:
        await engine.inject(parse_request(process("oa-999", chaos_pb2.PROCESS_ACTION_KILL, 0)))
    assert unknown.value.status is grpc.StatusCode.NOT_FOUND
    assert unknown.value.violations[0].field == "process.process"
    with pytest.raises(MeshError) as source:
        await engine.inject(parse_request(link("nobody", "hub", 10, latency_ms=1)))
    assert source.value.status is grpc.StatusCode.NOT_FOUND
    await engine.inject(parse_request(process("hub", chaos_pb2.PROCESS_ACTION_PAUSE, 60_000)))
    with pytest.raises(MeshError) as clash:
        await engine.inject(parse_request(process("hub", chaos_pb2.PROCESS_ACTION_KILL, 10)))
    assert clash.value.status is grpc.StatusCode.FAILED_PRECONDITION
    assert clash.value.reason == "FAULT_ACTIVE"
    sup.down.add("oa-100")
    with pytest.raises(MeshError) as down:
        await engine.inject(parse_request(process("oa-100", chaos_pb2.PROCESS_ACTION_KILL, 10)))
    assert down.value.reason == "PROCESS_NOT_RUNNING"
    assert "oa-100" not in sup.held  # not left held
    await engine.close()
    assert not engine.active
    assert sup.events[-1] == ("SIGCONT", "hub")


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        (chaos_pb2.InjectFaultRequest(), {"fault"}),
        (process("", chaos_pb2.PROCESS_ACTION_UNSPECIFIED, 10), {"process.process", "process.action"}),
        (process("hub", chaos_pb2.PROCESS_ACTION_PAUSE, 0), {"duration_ms"}),
        (process("hub", chaos_pb2.PROCESS_ACTION_KILL, 3_600_001), {"duration_ms"}),
        (process("x" * 33, chaos_pb2.PROCESS_ACTION_KILL, 10), {"process.process"}),
        (link("hub", "hub", 10, latency_ms=1), {"link.source"}),
        (link("hub", "oa-100", 10), {"link"}),
        (
            link("hub", "oa-100", 10, latency_ms=60_001, jitter_ms=70_000),
            {"link.latency_ms", "link.jitter_ms"},
        ),
        (link("hub", "oa-100", 10, error_percent=101), {"link.error_percent"}),
        (link("hub", "oa-100", 10, error_percent=5, error_code=99), {"link.error_code"}),
        (link("", "", 0, latency_ms=1), {"link.source", "link.target", "duration_ms"}),
    ],
)
def test_bad_requests_get_every_field_violation(
    request_: chaos_pb2.InjectFaultRequest, fields: set[str]
) -> None:
    with pytest.raises(MeshError) as refused:
        parse_request(request_)
    assert refused.value.status is grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in refused.value.violations} == fields


def test_a_good_request_is_parsed() -> None:
    fault = parse_request(link("hub", "oa-300", 1500, latency_ms=200, error_percent=10, error_code=14))
    assert fault.kind is Kind.LINK
    assert fault.process == "oa-300"
    assert fault.duration == 1.5
    assert fault.link is not None
    assert fault.link.error_code is grpc.StatusCode.UNAVAILABLE


async def test_clear_needs_an_id_or_all() -> None:
    servicer = ChaosServicer(ChaosEngine(Recorder()))
    for bad in (chaos_pb2.ClearFaultsRequest(), chaos_pb2.ClearFaultsRequest(id="1", all=True)):
        with pytest.raises(MeshError) as refused:
            await servicer.ClearFaults(bad, None)
        assert refused.value.status is grpc.StatusCode.INVALID_ARGUMENT
