"""Under mutual TLS an OA node answers only the hub and its back office, never provider software."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mycarenet_cluster import pki

from mycarenet_core.channels import client_credentials, open_channel, server_credentials
from mycarenet_core.clock import FixedClock
from mycarenet_core.errors import parse_rpc_error
from mycarenet_core.gen.mycarenet.oa.v1 import oa_dmg_service_pb2, oa_dmg_service_pb2_grpc
from oa_node.app import OaNodeApp


@pytest.mark.parametrize(
    ("peer", "allowed"), [("hub", True), ("backoffice", True), ("client", False), ("oa-200", False)]
)
async def test_only_hub_and_backoffice_are_answered(tmp_path: Path, peer: str, allowed: bool) -> None:
    folder = tmp_path / "pki"
    server_id = pki.ensure_identity(folder, "oa-100")
    caller = pki.ensure_identity(folder, peer)
    app = await OaNodeApp.create(
        insurer_code="100",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'oa.db'}",
        clock=FixedClock(dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC)),
        server_credentials=server_credentials(server_id.ca, server_id.cert, server_id.key),
    )
    port = await app.start("127.0.0.1:0")
    try:
        creds = client_credentials(caller.ca, caller.cert, caller.key)
        async with open_channel(f"localhost:{port}", credentials=creds) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            stub = oa_dmg_service_pb2_grpc.OaDmgServiceStub(channel)
            request = oa_dmg_service_pb2.GetEnrolmentRequest(inami="11000095003")
            if allowed:
                reply = await stub.GetEnrolment(request, timeout=5)
                assert reply.enrolled is False
            else:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.GetEnrolment(request, timeout=5)
                assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert parse_rpc_error(err.value).reason == "PEER_NOT_ALLOWED"
    finally:
        await app.stop()
