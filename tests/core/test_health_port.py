"""The plaintext health listener (``health_bind``): Kubernetes' native gRPC probes cannot speak mutual
TLS, so a server under mTLS may also answer grpc.health.v1 in plaintext on a second port, and nothing else
there; it follows the same statuses (NOT_SERVING from the start of a graceful stop)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mycarenet_cluster import pki

from mycarenet_core.channels import server_credentials
from mycarenet_core.config import MeshSettings
from mycarenet_core.gen.mycarenet.ehealth.v1 import cadastre_pb2, cadastre_pb2_grpc
from mycarenet_core.server import MeshServer, Service

CADASTRE = "mycarenet.ehealth.v1.CadastreService"


async def _check(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
    return reply.status


async def test_plaintext_health_port_beside_a_mutual_tls_server(tmp_path: Path) -> None:
    ident = pki.ensure_identity(tmp_path, "ehealth")
    srv = MeshServer(
        "ehealth",
        [
            Service(
                cadastre_pb2_grpc.add_CadastreServiceServicer_to_server,
                cadastre_pb2_grpc.CadastreServiceServicer(),
                CADASTRE,
            )
        ],
        credentials=server_credentials(ident.ca, ident.cert, ident.key),
    )
    srv.health_bind = "127.0.0.1:0"
    await srv.start("127.0.0.1:0")
    try:
        assert srv.health_port
        assert srv.health_port != srv.port
        assert await _check(srv.health_port) == health_pb2.HealthCheckResponse.SERVING
        # Only health there: the services stay behind mutual TLS.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.health_port}") as ch:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await cadastre_pb2_grpc.CadastreServiceStub(ch).GetProvider(
                    cadastre_pb2.GetProviderRequest(inami="12345"), timeout=5
                )
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        await srv.health.enter_graceful_shutdown()
        assert await _check(srv.health_port) == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await srv.stop(0)


def test_health_bind_is_a_setting_of_every_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCN_HEALTH_BIND", "0.0.0.0:7499")
    assert MeshSettings(insecure=True).health_bind == "0.0.0.0:7499"
    assert MeshSettings(insecure=True, health_bind=None).health_bind is None
