"""OpenTelemetry for every process of the mesh: traces (gRPC server/client, SQLAlchemy) and metrics.

* Traces go to OTLP/gRPC when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, nowhere otherwise (a test may pass its
  own exporter). W3C trace context crosses every hop through the gRPC instrumentation; health checks are
  not traced.
* Metrics: per-RPC request counts and latency histograms (by method, status and MyCareNet code, plus the OA
  where one is involved), and whatever gauges a service registers; exposed through a Prometheus scrape
  endpoint when a port is given.
* Patients' NISS never appear in clear: :func:`pseudonymise` gives a keyed hash for span attributes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor, filters
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from sqlalchemy.ext.asyncio import AsyncEngine

from mycarenet_core.server import current_error

VERSION = "0.1.0"
_DEFAULT_KEY = b"mycarenet-mesh-sandbox-pseudonymisation-key"


def pseudonymise(niss: str, key: bytes | None = None) -> str:
    """A keyed hash of a NISS (HMAC-SHA256, 16 hex digits): joins spans of one patient, reveals nothing."""
    secret = key or os.environ.get("MCN_TELEMETRY_KEY", "").encode() or _DEFAULT_KEY
    return hmac.new(secret, niss.encode(), hashlib.sha256).hexdigest()[:16]


@dataclass
class Telemetry:
    """The providers and interceptors of one process; pass the interceptors to servers and channels."""

    service_name: str
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    server_interceptors: list[Any] = field(default_factory=list)
    client_interceptors: list[Any] = field(default_factory=list)

    @property
    def tracer(self) -> trace.Tracer:
        return self.tracer_provider.get_tracer("mycarenet-mesh", VERSION)

    @property
    def meter(self) -> metrics.Meter:
        return self.meter_provider.get_meter("mycarenet-mesh", VERSION)

    def instrument_engine(self, engine: AsyncEngine) -> None:
        """Database spans for this engine (one per statement)."""
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine, tracer_provider=self.tracer_provider)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Request count and latency histogram per RPC, by gRPC status and MyCareNet code."""

    def __init__(self, meter: metrics.Meter) -> None:
        self._duration = meter.create_histogram(
            "rpc.server.duration", unit="ms", description="Duration of inbound RPCs"
        )
        self._requests = meter.create_counter("rpc.server.requests", description="Inbound RPCs")

    def _record(self, method: str, started: float, status: str, code: str) -> None:
        attrs = {"rpc.method": method, "rpc.grpc.status_code": status, "mycarenet.code": code}
        self._duration.record((time.perf_counter() - started) * 1000, attrs)
        self._requests.add(1, attrs)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.unary_unary is None or method.startswith("/grpc.health"):
            return handler
        inner = handler.unary_unary
        record = self._record

        async def wrapped(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            current_error.set(None)
            try:
                reply = await inner(request, context)
            except BaseException:
                error = current_error.get()
                if error is not None:
                    record(method, started, error.status.name, str(error.code or ""))
                else:
                    code = context.code() if hasattr(context, "code") else None
                    record(method, started, code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN", "")
                raise
            code = context.code() if hasattr(context, "code") else None
            record(method, started, code.name if isinstance(code, grpc.StatusCode) else "OK", "")
            return reply

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def setup(
    service_name: str,
    *,
    span_exporters: Sequence[SpanExporter] = (),
    metric_readers: Iterable[MetricReader] = (),
    prometheus_port: int | None = None,
    otlp_endpoint: str | None = None,
) -> Telemetry:
    """Telemetry for one process. Nothing is exported unless an exporter, endpoint or port is given.

    ``otlp_endpoint`` defaults to ``OTEL_EXPORTER_OTLP_ENDPOINT``.
    """
    resource = Resource.create({"service.name": service_name, "service.version": VERSION})
    tracer_provider = TracerProvider(resource=resource)
    for exporter in span_exporters:
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    endpoint = otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        tracer_provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True))
        )
    readers = list(metric_readers)
    if prometheus_port is not None:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server

        readers.append(PrometheusMetricReader())
        start_http_server(prometheus_port, addr="127.0.0.1")
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    telemetry = Telemetry(service_name, tracer_provider, meter_provider)
    not_health = filters.negate(filters.health_check())
    telemetry.server_interceptors = [
        aio_server_interceptor(tracer_provider=tracer_provider, filter_=not_health),  # type: ignore[no-untyped-call]
        MetricsInterceptor(telemetry.meter),
    ]
    telemetry.client_interceptors = list(
        aio_client_interceptors(tracer_provider=tracer_provider, filter_=not_health)  # type: ignore[no-untyped-call]
    )
    return telemetry
