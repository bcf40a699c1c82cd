"""The one skeleton of the mesh: background lifecycle, backoff, validation idiom, page tokens, and the error
mapping of unexpected failures on unary and streaming calls alike."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from mycarenet_core.channels import open_channel
from mycarenet_core.codes import McnCode
from mycarenet_core.errors import MeshError
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import auth_pb2, auth_pb2_grpc
from mycarenet_core.lifecycle import Background, Backoff
from mycarenet_core.server import MeshServer, Service
from mycarenet_core.service import ServiceApp
from mycarenet_core.validation import Checker, decode_page_token, encode_page_token, paginate


async def test_a_failing_background_job_is_started_again_and_stop_cancels_everything() -> None:
    runs: list[int] = []
    forever = asyncio.Event()

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("boom")
        await forever.wait()

    background = Background("test")
    background.add("flaky", flaky, backoff=Backoff(0.01, 0.02))
    ticks: list[int] = []

    async def tick() -> None:
        ticks.append(1)

    background.every("tick", 0.01, tick)
    background.start()
    for _ in range(200):
        if len(runs) >= 3 and len(ticks) >= 3:
            break
        await asyncio.sleep(0.01)
    assert len(runs) == 3
    assert len(ticks) >= 3
    assert background.running
    await background.stop()
    assert not background.running


def test_backoff_doubles_up_to_its_maximum_and_resets() -> None:
    backoff = Backoff(0.1, 0.4)
    delays = [backoff.next_delay() for _ in range(5)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(d <= 0.4 for d in delays)
    assert delays[-1] >= 0.2
    backoff.reset()
    assert backoff.next_delay() <= 0.1


def test_the_checker_raises_every_violation_at_once() -> None:
    check = Checker()
    check.niss("patient.niss", "12345")
    check.text("requester_reference", "x" * 65, max_length=64)
    check.date("contact_date", common_pb2.Date(year=2025, month=2, day=30))
    check.items("message_ids", list(range(1001)), maximum=1000)
    check.enum("role", 99, {1: "a"})
    with pytest.raises(MeshError) as raised:
        check.done()
    fields = {(v.field, v.code) for v in raised.value.violations}
    assert fields == {
        ("patient.niss", McnCode.BAD_FORMAT),
        ("requester_reference", McnCode.BAD_FORMAT),
        ("contact_date", McnCode.IMPLAUSIBLE_DATE),
        ("message_ids", McnCode.VALUE_NOT_ALLOWED),
        ("role", McnCode.VALUE_NOT_ALLOWED),
    }
    assert raised.value.status is grpc.StatusCode.INVALID_ARGUMENT


def test_a_valid_request_passes_the_checker() -> None:
    with Checker() as check:
        reference = check.text("requester_reference", " ref-1 ", max_length=64)
    assert reference == "ref-1"


@pytest.mark.parametrize(
    "token",
    [
        "٣٤",  # digits, but not ASCII ones
        "not base64 !",
        "W10",  # []
        encode_page_token(["a"]) * 100,  # too long
        "WzEsMl0",  # [1, 2]: the wrong arity
        "WzFlOTk5XQ",  # [1e999]
        "Wzk5OTk5OTk5OTk5OTk5OTk5OTk5XQ",  # a number beyond 64 bits
    ],
)
def test_a_token_that_is_not_ours_is_a_field_violation(token: str) -> None:
    check = Checker()
    check.page_token("page_token", token, 1)
    with pytest.raises(MeshError) as raised:
        check.done()
    assert [(v.field, v.code) for v in raised.value.violations] == [("page_token", McnCode.BAD_FORMAT)]


def test_page_tokens_round_trip_and_paginate() -> None:
    assert decode_page_token(encode_page_token(["2025-01-01", 7]), 2) == ["2025-01-01", 7]
    page, token = paginate([1, 2, 3], 2, lambda r: [r])
    assert page == [1, 2]
    assert decode_page_token(token, 1) == [2]
    assert paginate([1, 2], 2, lambda r: [r]) == ([1, 2], "")


class Broken(auth_pb2_grpc.AuthServiceServicer):
    async def GetSigningKeys(self, request: Any, context: Any) -> Any:
        raise KeyError("a bug")

    async def WatchRevocations(self, request: Any, context: Any) -> Any:
        yield auth_pb2.WatchRevocationsResponse()
        raise KeyError("a bug in a stream")


async def test_unexpected_errors_answer_internal_unary_and_streaming_and_missing_ones_unimplemented() -> None:
    server = MeshServer(
        "broken",
        [
            Service(
                auth_pb2_grpc.add_AuthServiceServicer_to_server, Broken(), "mycarenet.ehealth.v1.AuthService"
            )
        ],
    )
    app = ServiceApp(server)
    port = await app.start()
    try:
        async with open_channel(f"127.0.0.1:{port}") as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            with pytest.raises(grpc.RpcError) as unary:
                await stub.GetSigningKeys(auth_pb2.GetSigningKeysRequest(), timeout=5)
            assert unary.value.code() is grpc.StatusCode.INTERNAL
            stream = stub.WatchRevocations(auth_pb2.WatchRevocationsRequest(), timeout=5)
            with pytest.raises(grpc.RpcError) as streamed:
                async for _ in stream:
                    pass
            assert streamed.value.code() is grpc.StatusCode.INTERNAL
            with pytest.raises(grpc.RpcError) as missing:
                await stub.Logout(auth_pb2.LogoutRequest(), timeout=5)
            assert missing.value.code() is grpc.StatusCode.UNIMPLEMENTED
    finally:
        await app.stop()
    await app.stop()  # twice is harmless


class CountingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Counts how often the chain asks it for a handler, and tags every call it wraps."""

    def __init__(self) -> None:
        self.built: list[str] = []
        self.calls = 0

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        self.built.append(details.method)
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        async def counted(request: Any, context: Any) -> Any:
            self.calls += 1
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            counted,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


async def test_the_interceptor_chain_is_built_once_per_method_and_still_runs_at_every_call() -> None:
    counting = CountingInterceptor()
    server = MeshServer(
        "counted",
        [
            Service(
                auth_pb2_grpc.add_AuthServiceServicer_to_server, Broken(), "mycarenet.ehealth.v1.AuthService"
            )
        ],
        interceptors=[counting],
    )
    app = ServiceApp(server)
    port = await app.start()
    try:
        async with open_channel(f"127.0.0.1:{port}") as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            for _ in range(3):
                with pytest.raises(grpc.RpcError) as failed:
                    await stub.GetSigningKeys(auth_pb2.GetSigningKeysRequest(), timeout=5)
                assert failed.value.code() is grpc.StatusCode.INTERNAL  # the error mapping still wraps it
            unknown = channel.unary_unary("/no.Such/Method")
            for _ in range(2):
                with pytest.raises(grpc.RpcError) as missing:
                    await unknown(b"", timeout=5)
                assert missing.value.code() is grpc.StatusCode.UNIMPLEMENTED
    finally:
        await app.stop()
    assert counting.calls == 3
    assert counting.built.count("/mycarenet.ehealth.v1.AuthService/GetSigningKeys") == 1
    assert counting.built.count("/no.Such/Method") == 2  # a method without a handler is not remembered
