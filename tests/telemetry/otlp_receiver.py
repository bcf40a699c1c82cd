"""A small OTLP/gRPC trace receiver for tests, built from the published ``opentelemetry-proto`` package.

It runs a grpc.aio server (port 0) on an event loop of its own in a background thread, so that real
processes (the cluster) and the test's own client can export to it whatever the test's event loop does.
Received spans are flattened into :class:`ReceivedSpan` records (ids in hex, attributes as plain values).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2

KIND = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def plain(value: common_pb2.AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [plain(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: plain(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which) if which else None


def attributes(items: Sequence[common_pb2.KeyValue]) -> dict[str, Any]:
    return {kv.key: plain(kv.value) for kv in items}


@dataclass(frozen=True)
class ReceivedLink:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: str
    attributes: dict[str, Any]
    links: list[ReceivedLink]
    status_code: int
    status_message: str
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    resource: dict[str, Any] = field(default_factory=dict)


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink: Callable[[trace_service_pb2.ExportTraceServiceRequest], None]) -> None:
        self._sink = sink

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._sink(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    """``start()`` → ``endpoint`` → ``spans()`` / ``wait_for(predicate)`` → ``stop()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="otlp-receiver", daemon=True)
        self._server: grpc.aio.Server | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _store(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        out: list[ReceivedSpan] = []
        for rs in request.resource_spans:
            resource = attributes(rs.resource.attributes)
            service = str(resource.get("service.name", ""))
            for ss in rs.scope_spans:
                for s in ss.spans:
                    out.append(
                        ReceivedSpan(
                            service=service,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            name=s.name,
                            kind=KIND.get(s.kind, str(s.kind)),
                            attributes=attributes(s.attributes),
                            links=[
                                ReceivedLink(x.trace_id.hex(), x.span_id.hex(), attributes(x.attributes))
                                for x in s.links
                            ],
                            status_code=s.status.code,
                            status_message=s.status.message,
                            events=[(e.name, attributes(e.attributes)) for e in s.events],
                            resource=resource,
                        )
                    )
        with self._lock:
            self._spans.extend(out)

    async def _start(self) -> int:
        self._server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self._store), self._server)
        port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        return port

    def start(self) -> OtlpReceiver:
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(0), self._loop).result(10)
            self._server = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def wait_for(
        self, predicate: Callable[[list[ReceivedSpan]], Any], timeout: float = 30.0
    ) -> list[ReceivedSpan]:
        """Poll until ``predicate(spans)`` is truthy (batch exporters deliver late); fail on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for spans; have {len(spans)}: "
                    + ", ".join(sorted({f"{s.service}:{s.name}" for s in spans}))[:3000]
                )
            time.sleep(0.2)
