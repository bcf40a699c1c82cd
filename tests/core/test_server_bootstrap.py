"""The shared server bootstrap: health, reflection, error mapping, graceful stop."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy.exc import IntegrityError, OperationalError

from mycarenet_core.errors import (
    FieldViolation,
    McnCode,
    invalid_argument,
    parse_rpc_error,
    resource_exhausted,
)
from mycarenet_core.gen.mycarenet.ehealth.v1 import cadastre_pb2, cadastre_pb2_grpc
from mycarenet_core.server import MeshServer, Service

CADASTRE = "mycarenet.ehealth.v1.CadastreService"


class FailingCadastre(cadastre_pb2_grpc.CadastreServiceServicer):
    """Answers GetProvider with errors chosen by the INAMI asked for."""

    async def GetProvider(
        self, request: cadastre_pb2.GetProviderRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> cadastre_pb2.GetProviderResponse:
        if request.inami == "bad":
            raise invalid_argument(
                [
                    FieldViolation("inami", McnCode.BAD_FORMAT, "must be 11 digits"),
                    FieldViolation("inami", McnCode.BAD_CHECK_DIGIT, "check digits do not match"),
                ]
            ).with_metadata(requester_reference="ref-1")
        if request.inami == "busy":
            raise resource_exhausted("THROTTLED", "slow down", retry_after_seconds=1.5)
        if request.inami == "boom":
            raise RuntimeError("unexpected")
        if request.inami == "locked":
            raise OperationalError("UPDATE x", {}, sqlite3.OperationalError("database is locked"))
        if request.inami == "constraint":
            raise IntegrityError("INSERT x", {}, sqlite3.IntegrityError("UNIQUE constraint failed"))
        return cadastre_pb2.GetProviderResponse(provider=cadastre_pb2.CadastreProvider(inami=request.inami))


@pytest.fixture
async def server() -> AsyncIterator[MeshServer]:
    srv = MeshServer(
        "test",
        [Service(cadastre_pb2_grpc.add_CadastreServiceServicer_to_server, FailingCadastre(), CADASTRE)],
    )
    await srv.start("127.0.0.1:0")
    yield srv
    await srv.stop(0)


@pytest.fixture
async def channel(server: MeshServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


async def test_binds_a_free_port(server: MeshServer) -> None:
    assert server.port is not None
    assert server.port > 0


async def test_health_reports_serving_overall_and_per_service(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for name in ("", CADASTRE):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Check(health_pb2.HealthCheckRequest(service="nope.Service"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_watch_streams_the_status(channel: grpc.aio.Channel) -> None:
    """Watch is a servicer that writes with context.write (a coroutine, not an async generator): the chain
    built around every method must stream it too (it answered INTERNAL once the skeleton checked inputs)."""
    stub = health_pb2_grpc.HealthStub(channel)
    call = stub.Watch(health_pb2.HealthCheckRequest(service=CADASTRE), timeout=5)
    first = await call.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    call.cancel()


async def test_reflection_lists_services(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def requests() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names: set[str] = set()
    async for reply in stub.ServerReflectionInfo(requests(), timeout=5):
        names |= {s.name for s in reply.list_services_response.service}
    assert {CADASTRE, "grpc.health.v1.Health"} <= names


async def test_reflection_serves_the_contract(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def requests() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(file_containing_symbol=CADASTRE)

    files = [r async for r in stub.ServerReflectionInfo(requests(), timeout=5)]
    blob = b"".join(files[0].file_descriptor_response.file_descriptor_proto)
    assert b"mycarenet/ehealth/v1/cadastre.proto" in blob


async def test_domain_error_becomes_rich_status(channel: grpc.aio.Channel) -> None:
    stub = cadastre_pb2_grpc.CadastreServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetProvider(cadastre_pb2.GetProviderRequest(inami="bad"), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    parsed = parse_rpc_error(err.value)
    assert parsed.status == grpc.StatusCode.INVALID_ARGUMENT
    assert parsed.reason == "INVALID_REQUEST"
    assert parsed.codes == (111, 112)
    assert [(v.field, v.code) for v in parsed.violations] == [("inami", 111), ("inami", 112)]
    assert parsed.violations[1].description == "check digits do not match"
    assert parsed.metadata == {"requester_reference": "ref-1"}


async def test_retry_info_round_trips(channel: grpc.aio.Channel) -> None:
    stub = cadastre_pb2_grpc.CadastreServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetProvider(cadastre_pb2.GetProviderRequest(inami="busy"), timeout=5)
    parsed = parse_rpc_error(err.value)
    assert parsed.status == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert parsed.reason == "THROTTLED"
    assert parsed.retry_after_seconds == pytest.approx(1.5)


async def test_unexpected_exception_is_internal_without_details(channel: grpc.aio.Channel) -> None:
    stub = cadastre_pb2_grpc.CadastreServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetProvider(cadastre_pb2.GetProviderRequest(inami="boom"), timeout=5)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "unexpected" not in (err.value.details() or "")


async def test_a_busy_database_is_unavailable_and_retryable(channel: grpc.aio.Channel) -> None:
    stub = cadastre_pb2_grpc.CadastreServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetProvider(cadastre_pb2.GetProviderRequest(inami="locked"), timeout=5)
    parsed = parse_rpc_error(err.value)
    assert parsed.status == grpc.StatusCode.UNAVAILABLE
    assert parsed.reason == "DATABASE_BUSY"
    assert parsed.retry_after_seconds == pytest.approx(1.0)
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await stub.GetProvider(cadastre_pb2.GetProviderRequest(inami="constraint"), timeout=5)
    assert other.value.code() == grpc.StatusCode.INTERNAL


async def test_success_passes_through(channel: grpc.aio.Channel) -> None:
    stub = cadastre_pb2_grpc.CadastreServiceStub(channel)
    reply = await stub.GetProvider(cadastre_pb2.GetProviderRequest(inami="12345"), timeout=5)
    assert reply.provider.inami == "12345"


async def test_stop_reports_not_serving_first() -> None:
    srv = MeshServer(
        "t", [Service(cadastre_pb2_grpc.add_CadastreServiceServicer_to_server, FailingCadastre(), CADASTRE)]
    )
    await srv.start()
    await srv.health.enter_graceful_shutdown()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    await srv.stop(0)
