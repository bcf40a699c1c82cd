"""Issue 17: the clients' keepalive pings and the servers' ping policy agree (GOAWAY ``too_many_pings`` was
seen 71 times in 86 minutes, and the watch streams reconnected). The options of both ends come from one
place (mycarenet_core.channels) and are consistent; a watch stream left idle for many keepalive periods
(shortened with ``MCN_KEEPALIVE_SECONDS``) keeps its connection and still carries the next message, while
the same stream against gRPC's default server policy is sent away (the check can fail)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from mycarenet_core import channels
from mycarenet_core.channels import client_keepalive_options, open_channel, server_keepalive_options
from mycarenet_core.gen.mycarenet.oa.v1 import holding_feed_service_pb2 as feed
from mycarenet_core.gen.mycarenet.oa.v1 import holding_feed_service_pb2_grpc as feed_grpc
from mycarenet_core.server import MeshServer, Service

PERIOD = 0.1  # seconds: the test's keepalive period (gRPC itself sends at most about one ping a second)
IDLE = 4.0  # seconds a stream stays silent: the default policy's three strikes come within about 3 s
GRPC_DEFAULT_SERVER_POLICY = [  # what the servers had: one ping per 5 minutes, none without calls
    ("grpc.http2.min_ping_interval_without_data_ms", 300_000),
    ("grpc.keepalive_permit_without_calls", 0),
]


def consistent(client: dict[str, int], server: dict[str, int]) -> None:
    assert client["grpc.keepalive_time_ms"] >= server["grpc.http2.min_ping_interval_without_data_ms"]
    if client["grpc.keepalive_permit_without_calls"]:
        assert server["grpc.keepalive_permit_without_calls"] == 1
    assert client["grpc.http2.max_pings_without_data"] == 0  # a silent stream keeps pinging
    assert client["grpc.keepalive_timeout_ms"] <= channels.KEEPALIVE_TIMEOUT_MS


async def test_the_clients_pings_are_within_the_servers_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(channels.KEEPALIVE_VARIABLE, raising=False)
    assert channels.keepalive_ms() == 30_000
    for period in (100, 1_000, 30_000, None):
        consistent(dict(client_keepalive_options(period)), dict(server_keepalive_options(period)))
    # Every server of the mesh uses the policy (a caller's own options still win).
    server = MeshServer("keepalive", [])
    assert dict(server_keepalive_options()).items() <= dict(server.options).items()
    assert (
        dict(MeshServer("k", [], options=[("grpc.http2.max_ping_strikes", 5)]).options)[
            "grpc.http2.max_ping_strikes"
        ]
        == 5
    )
    # One setting shortens both ends alike.
    monkeypatch.setenv(channels.KEEPALIVE_VARIABLE, "0.2")
    assert dict(client_keepalive_options())["grpc.keepalive_time_ms"] == 200
    assert dict(MeshServer("k", []).options)["grpc.http2.min_ping_interval_without_data_ms"] == 100
    monkeypatch.setenv(channels.KEEPALIVE_VARIABLE, "soon")
    with pytest.raises(ValueError, match="MCN_KEEPALIVE_SECONDS"):
        channels.keepalive_ms()


class QuietFeed(feed_grpc.HoldingFeedServiceServicer):
    """A watch that sends one change, stays silent until told, then sends the next."""

    def __init__(self) -> None:
        self.go_on = asyncio.Event()

    async def WatchHolderChanges(  # type: ignore[override]
        self, request: feed.WatchHolderChangesRequest, context: Any
    ) -> AsyncIterator[feed.WatchHolderChangesResponse]:
        yield feed.WatchHolderChangesResponse(change=feed.HolderChange(sequence=1))
        await self.go_on.wait()
        yield feed.WatchHolderChangesResponse(change=feed.HolderChange(sequence=2))


async def idle_watch(server_options: list[tuple[str, Any]]) -> tuple[grpc.ChannelConnectivity, int | None]:
    """Open a watch, leave it silent for IDLE seconds, then have the server send; (the channel's state
    after the silence, the sequence the stream then delivers or None if it failed)."""
    quiet = QuietFeed()
    service = Service(
        feed_grpc.add_HoldingFeedServiceServicer_to_server, quiet, "mycarenet.oa.v1.HoldingFeedService"
    )
    server = MeshServer("keepalive", [service], options=server_options)
    port = await server.start("127.0.0.1:0")
    channel = open_channel(f"127.0.0.1:{port}")
    try:
        call = feed_grpc.HoldingFeedServiceStub(channel).WatchHolderChanges(feed.WatchHolderChangesRequest())
        first = await asyncio.wait_for(call.read(), 5)
        assert first.change.sequence == 1
        await asyncio.sleep(IDLE)
        state = channel.get_state()
        quiet.go_on.set()
        try:
            second = await asyncio.wait_for(call.read(), 5)
            sequence = None if second is grpc.aio.EOF else second.change.sequence
        except grpc.aio.AioRpcError:
            sequence = None
        call.cancel()
        return state, sequence
    finally:
        await channel.close(None)
        await server.stop(0)


async def test_an_idle_watch_stream_keeps_its_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(channels.KEEPALIVE_VARIABLE, str(PERIOD))
    # The mesh's policy, and (the control, at the same time) the same pings against gRPC's default server
    # policy, which answers GOAWAY too_many_pings and ends the stream (it would reconnect).
    (state, sequence), (control_state, control_sequence) = await asyncio.gather(
        idle_watch([]), idle_watch(GRPC_DEFAULT_SERVER_POLICY)
    )
    assert state == grpc.ChannelConnectivity.READY
    assert sequence == 2
    assert control_state != grpc.ChannelConnectivity.READY
    assert control_sequence is None
