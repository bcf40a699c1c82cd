"""The chaos agent every server of the skeleton carries: link faults set through ChaosAgentService are
applied to the calls of the faulty peer only, heal by themselves, and bad rules are refused field by field."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence

import grpc
import pytest
from mycarenet_cluster.chaos import ChaosEngine, ChaosServicer

from mycarenet_core.channels import open_channel
from mycarenet_core.chaos import LinkChaos, Rule
from mycarenet_core.errors import parse_rpc_error
from mycarenet_core.gen.mycarenet.sandbox.v1 import chaos_pb2, chaos_pb2_grpc
from mycarenet_core.server import MeshServer, Service
from mycarenet_core.trust import TrustInterceptor


class NoProcesses:
    """A sandbox that owns no process: ChaosService answers its listing (what these tests call)."""

    def process_names(self) -> Sequence[str]:
        return ()

    def hold(self, name: str) -> None: ...

    def release(self, name: str) -> None: ...

    def signal(self, name: str, sig: int) -> bool:
        return False

    async def set_link_rules(self, name: str, rules: Sequence[chaos_pb2.LinkRule]) -> None: ...


@pytest.fixture
async def server() -> AsyncIterator[tuple[MeshServer, str]]:
    srv = MeshServer(
        "sandbox",
        [
            Service(
                chaos_pb2_grpc.add_ChaosServiceServicer_to_server,
                ChaosServicer(ChaosEngine(NoProcesses())),
                "mycarenet.sandbox.v1.ChaosService",
            )
        ],
        trust=TrustInterceptor(secure=False),
    )
    port = await srv.start("127.0.0.1:0")
    try:
        yield srv, f"127.0.0.1:{port}"
    finally:
        await srv.stop(0)


async def timed(call: Callable[[], object]) -> float:
    started = time.monotonic()
    await call()  # type: ignore[misc]
    return time.monotonic() - started


async def test_latency_then_errors_on_one_peer_healed_by_itself(
    server: tuple[MeshServer, str],
) -> None:
    srv, address = server
    assert srv.chaos is not None
    async with (
        open_channel(address, identity="admin") as admin,
        open_channel(address, identity="backoffice") as other,
    ):
        agent = chaos_pb2_grpc.ChaosAgentServiceStub(admin)
        listing = chaos_pb2_grpc.ChaosServiceStub(admin).ListFaults
        assert await timed(lambda: listing(chaos_pb2.ListFaultsRequest())) < 0.2
        await agent.SetLinkFaults(
            chaos_pb2.SetLinkFaultsRequest(
                rules=[chaos_pb2.LinkRule(source="admin", latency_ms=300, jitter_ms=50, remaining_ms=1500)]
            )
        )
        slow = await timed(lambda: listing(chaos_pb2.ListFaultsRequest()))
        assert 0.3 <= slow < 1.0
        # The backoffice is refused by the trust table (only admin may list), at once: no latency on its link.
        refused_after = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await chaos_pb2_grpc.ChaosServiceStub(other).ListFaults(chaos_pb2.ListFaultsRequest())
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert time.monotonic() - refused_after < 0.2
        # Healed by itself once its time is up (no one tells the process).
        deadline = time.monotonic() + 5
        while await timed(lambda: listing(chaos_pb2.ListFaultsRequest())) >= 0.2:
            assert time.monotonic() < deadline, "the latency did not heal"
        assert not srv.chaos.rules
        await agent.SetLinkFaults(
            chaos_pb2.SetLinkFaultsRequest(
                rules=[
                    chaos_pb2.LinkRule(source="admin", error_percent=100, error_code=8, remaining_ms=60_000)
                ]
            )
        )
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await listing(chaos_pb2.ListFaultsRequest())
        assert failed.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        # The agent itself is never faulted: the fault can be cleared.
        cleared = await agent.SetLinkFaults(chaos_pb2.SetLinkFaultsRequest())
        assert cleared.active == 0
        await listing(chaos_pb2.ListFaultsRequest())


async def test_bad_rules_are_refused_with_every_field_violation(server: tuple[MeshServer, str]) -> None:
    _, address = server
    async with open_channel(address, identity="admin") as admin:
        agent = chaos_pb2_grpc.ChaosAgentServiceStub(admin)
        bad = chaos_pb2.SetLinkFaultsRequest(
            rules=[
                chaos_pb2.LinkRule(source="", latency_ms=60_001, error_percent=101, remaining_ms=0),
                chaos_pb2.LinkRule(source="hub", error_percent=10, error_code=0, remaining_ms=10),
                chaos_pb2.LinkRule(source="hub", remaining_ms=10),
            ]
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await agent.SetLinkFaults(bad)
        error = parse_rpc_error(refused.value)
        assert error.status is grpc.StatusCode.INVALID_ARGUMENT
        assert {v.field for v in error.violations} == {
            "rules[0].source",
            "rules[0].latency_ms",
            "rules[0].error_percent",
            "rules[0].error_code",
            "rules[0].remaining_ms",
            "rules[1].error_code",
            "rules[2].source",
        }
        too_many = chaos_pb2.SetLinkFaultsRequest(
            rules=[chaos_pb2.LinkRule(source=f"p{i}", latency_ms=1, remaining_ms=10) for i in range(65)]
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await agent.SetLinkFaults(too_many)
        assert parse_rpc_error(refused.value).violations[0].field == "rules"
    async with open_channel(address, identity="hub") as hub:
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await chaos_pb2_grpc.ChaosAgentServiceStub(hub).SetLinkFaults(chaos_pb2.SetLinkFaultsRequest())
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_an_ended_rule_is_dropped_and_costs_nothing() -> None:
    now = [100.0]
    chaos = LinkChaos(monotonic=lambda: now[0])
    chaos.replace({"hub": Rule("hub", latency_s=0.1, ends_at=101.0)})
    assert chaos.rule_for("hub") is not None
    assert chaos.rule_for("client") is None
    now[0] = 101.0
    assert chaos.rule_for("hub") is None
    assert chaos.rules == {}  # an empty set: the interceptor hands handlers back untouched
    await asyncio.sleep(0)
