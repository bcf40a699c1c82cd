"""Telemetry: server and client spans share one trace, health checks are not traced, RPC histograms exist."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from mycarenet_core import telemetry
from mycarenet_core.errors import field_error
from mycarenet_core.gen.mycarenet.ehealth.v1 import cadastre_pb2, cadastre_pb2_grpc
from mycarenet_core.server import MeshServer, Service

KEY = bytes.fromhex(telemetry.new_patient_key())


class Cadastre(cadastre_pb2_grpc.CadastreServiceServicer):
    async def GetProvider(self, request: cadastre_pb2.GetProviderRequest, context: object) -> object:
        if request.inami == "bad":
            raise field_error("inami", 111, "must be 11 digits")
        return cadastre_pb2.GetProviderResponse()


async def test_one_trace_across_client_and_server_and_metrics() -> None:
    spans = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    server_tel = telemetry.setup("ehealth", span_exporters=[spans], metric_readers=[reader], patient_key=KEY)
    client_tel = telemetry.setup("client", span_exporters=[spans], server=False)
    server = MeshServer(
        "ehealth",
        [
            Service(
                cadastre_pb2_grpc.add_CadastreServiceServicer_to_server,
                Cadastre(),
                "mycarenet.ehealth.v1.CadastreService",
            )
        ],
        interceptors=server_tel.server_interceptors,
    )
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", interceptors=client_tel.client_interceptors
        ) as channel:
            stub = cadastre_pb2_grpc.CadastreServiceStub(channel)
            await stub.GetProvider(cadastre_pb2.GetProviderRequest(inami="1"), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.GetProvider(cadastre_pb2.GetProviderRequest(inami="bad"), timeout=5)
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    finally:
        await server.stop(0)
    finished = spans.get_finished_spans()
    assert all("Health" not in s.name for s in finished), [s.name for s in finished]
    client_spans = [s for s in finished if s.kind == SpanKind.CLIENT]
    server_spans = [s for s in finished if s.kind == SpanKind.SERVER]
    assert len(client_spans) == 2
    assert len(server_spans) == 2
    for c, s in zip(client_spans, server_spans, strict=True):
        assert s.context.trace_id == c.context.trace_id
        assert s.parent is not None
        assert s.parent.span_id == c.context.span_id
    assert server_spans[0].resource.attributes["service.name"] == "ehealth"
    data = reader.get_metrics_data()
    names = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    hist = names["rpc.server.duration"]
    statuses = {dict(p.attributes)["rpc.grpc.status_code"]: p.count for p in hist.data.data_points}
    assert statuses == {"OK": 1, "INVALID_ARGUMENT": 1}
    codes = {dict(p.attributes)["mycarenet.code"] for p in hist.data.data_points}
    assert codes == {"", "111"}
    server_tel.shutdown()
    client_tel.shutdown()


def test_pseudonymise_is_keyed_and_stable() -> None:
    k1, k2 = bytes.fromhex(telemetry.new_patient_key()), bytes.fromhex(telemetry.new_patient_key())
    a = telemetry.pseudonymise("85073003328", k1)
    assert a == telemetry.pseudonymise("85073003328", k1)
    assert a != telemetry.pseudonymise("85073003328", k2)
    assert "85073003328" not in a
    assert len(a) == 16
