"""Under mutual TLS an OA node answers, per RPC, the certificates the trust table grants (the hub, the
insurer's back office, the administrator), never provider software, eHealth or another insurer; a
certificate cannot pass for another kind by declaring it in metadata."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mycarenet_cluster import pki

from ehealth.app import EhealthApp
from mycarenet_core.channels import client_credentials, open_channel, server_credentials
from mycarenet_core.clock import FixedClock
from mycarenet_core.errors import parse_rpc_error
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import cadastre_pb2, cadastre_pb2_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import (
    context_pb2,
    oa_dmg_service_pb2,
    oa_dmg_service_pb2_grpc,
    reference_data_service_pb2,
    reference_data_service_pb2_grpc,
)
from mycarenet_core.trust import PEER_METADATA
from oa_node.app import OaNodeApp


async def _tls_node(tmp_path: Path) -> OaNodeApp:
    server_id = pki.ensure_identity(tmp_path / "pki", "oa-100")
    return await OaNodeApp.create(
        insurer_code="100",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'oa.db'}",
        clock=FixedClock(dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC)),
        server_credentials=server_credentials(server_id.ca, server_id.cert, server_id.key),
    )


@pytest.mark.parametrize(
    ("peer", "allowed"),
    [
        ("hub", True),
        ("backoffice", True),
        ("client", False),
        ("ehealth", False),
        ("admin", False),
        ("oa-200", False),
        ("oa-100", False),
        ("intruder", False),  # a certificate of the mesh CA for a party the trust table does not know
    ],
)
async def test_get_enrolment_answers_the_certificates_the_table_grants(
    tmp_path: Path, peer: str, allowed: bool
) -> None:
    app = await _tls_node(tmp_path)
    port = await app.start("127.0.0.1:0")
    try:
        caller = pki.ensure_identity(tmp_path / "pki", peer)
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
                assert parse_rpc_error(err.value).reason == "CERTIFICATE_NOT_ALLOWED"
    finally:
        await app.stop()


async def test_under_tls_the_certificate_decides_not_the_declared_kind(tmp_path: Path) -> None:
    """Provider software declaring itself the hub in x-mcn-peer is still provider software."""
    app = await _tls_node(tmp_path)
    port = await app.start("127.0.0.1:0")
    try:
        caller = pki.ensure_identity(tmp_path / "pki", "client")
        creds = client_credentials(caller.ca, caller.cert, caller.key)
        async with open_channel(f"localhost:{port}", credentials=creds) as channel:
            stub = oa_dmg_service_pb2_grpc.OaDmgServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetEnrolment(
                    oa_dmg_service_pb2.GetEnrolmentRequest(inami="11000095003"),
                    metadata=((PEER_METADATA, "hub"),),
                    timeout=5,
                )
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert parse_rpc_error(err.value).reason == "CERTIFICATE_NOT_ALLOWED"
    finally:
        await app.stop()


async def test_under_tls_the_node_follows_ehealth_with_its_own_insurer_certificate(tmp_path: Path) -> None:
    """The follower's channel is the node's other client channel: mutual TLS with the oa-100 certificate,
    which eHealth's trust table lets read the cadastre feed (provider software could not)."""
    folder = tmp_path / "pki"

    def creds(name: str) -> tuple[grpc.ServerCredentials, grpc.ChannelCredentials]:
        ident = pki.ensure_identity(folder, name)
        return (
            server_credentials(ident.ca, ident.cert, ident.key),
            client_credentials(ident.ca, ident.cert, ident.key),
        )

    clock = FixedClock(dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC))
    ehealth = await EhealthApp.create(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'ehealth.db'}",
        clock=clock,
        credentials=creds("ehealth")[0],
    )
    ehealth_port = await ehealth.start("127.0.0.1:0")
    server, client = creds("oa-100")
    node = await OaNodeApp.create(
        insurer_code="100",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'oa.db'}",
        clock=clock,
        server_credentials=server,
        channel_credentials=client,
        ehealth_target=f"localhost:{ehealth_port}",
    )
    port = await node.start("127.0.0.1:0")
    try:
        inami = "11000095003"
        async with open_channel(f"localhost:{ehealth_port}", credentials=creds("admin")[1]) as admin:
            reply = await cadastre_pb2_grpc.CadastreServiceStub(admin).UpsertProvider(
                cadastre_pb2.UpsertProviderRequest(
                    provider=cadastre_pb2.CadastreProvider(
                        inami=inami,
                        niss="80051711820",
                        first_name="Anne",
                        last_name="Dupont",
                        validity=common_pb2.Period(start=common_pb2.Date(year=2000, month=1, day=1)),
                    )
                ),
                timeout=10,
            )
        async with open_channel(f"localhost:{port}", credentials=creds("backoffice")[1]) as office:
            reference = reference_data_service_pb2_grpc.ReferenceDataServiceStub(office)
            for _ in range(500):
                now = await reference.GetCadastrePosition(
                    reference_data_service_pb2.GetCadastrePositionRequest(), timeout=5
                )
                if now.following and now.applied_sequence >= reply.change_sequence:
                    break
                await asyncio.sleep(0.02)
            assert (now.applied_sequence, now.following) == (reply.change_sequence, True)
        async with open_channel(f"localhost:{port}", credentials=creds("hub")[1]) as hub:
            enrolled = await oa_dmg_service_pb2_grpc.OaDmgServiceStub(hub).EnrolDmg(
                oa_dmg_service_pb2.EnrolDmgRequest(
                    context=context_pb2.RequestContext(
                        requester_inami=inami,
                        requester_reference="tls-1",
                        processing_date=common_pb2.Date(year=2026, month=11, day=20),
                    ),
                    bank_account=common_pb2.BankAccount(iban="BE68539007547034", bic="GKCCBEBB"),
                ),
                timeout=10,
            )
        assert enrolled.insurer_code == "100"
    finally:
        await node.stop()
        await ehealth.stop()
