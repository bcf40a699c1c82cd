"""OpenTelemetry for every process of the mesh: traces (gRPC server/client, SQLAlchemy) and metrics.

* Traces go to OTLP/gRPC when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, nowhere otherwise (a test may pass its
  own exporter). W3C trace context crosses every hop through the gRPC instrumentation; health checks are
  not traced.
* Metrics: per-RPC request counts and latency histograms (by method, status and MyCareNet code, plus the OA
  where one is involved), and whatever gauges a service registers; exposed through a Prometheus scrape
  endpoint when a port is given.
* Patients' NISS never appear in clear: :func:`pseudonymise` gives a keyed hash (HMAC-SHA256) for span
  attributes, keyed with the cluster's own random key (:func:`patient_key_from_environment`:
  ``MCN_TELEMETRY_KEY_FILE``, a file of at least 32 random bytes such as the cluster supervisor makes, or
  ``MCN_TELEMETRY_KEY``, the same as hexadecimal). There is no default key: a process that exports traces
  without a key refuses to start (:class:`MissingPatientKey`); a process that exports none does not need one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor, filters
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from mycarenet_core.server import current_error, replace_behavior

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

VERSION = "0.1.0"

KEY_FILE_VARIABLE = "MCN_TELEMETRY_KEY_FILE"
KEY_VARIABLE = "MCN_TELEMETRY_KEY"
MIN_KEY_BYTES = 32  # one year of birth dates is ~10^6 NISS: the key, not the hash, keeps them secret


class MissingPatientKey(RuntimeError):
    """Traces would carry patients' pseudonyms but no key was given (or the key is unusable)."""


def pseudonymise(niss: str, key: bytes) -> str:
    """A keyed hash of a NISS (HMAC-SHA256, 16 hex digits): joins spans of one patient, reveals nothing
    without ``key`` (the cluster's own random key: never a default)."""
    if len(key) < MIN_KEY_BYTES:
        raise MissingPatientKey(f"the pseudonymisation key has {len(key)} bytes; at least {MIN_KEY_BYTES}")
    return hmac.new(key, niss.encode(), hashlib.sha256).hexdigest()[:16]


def new_patient_key() -> str:
    """A new random pseudonymisation key, as the hexadecimal text the key file and variable hold."""
    return secrets.token_hex(MIN_KEY_BYTES)


def read_patient_key(text: str, origin: str) -> bytes:
    """The key in ``text`` (hexadecimal, as :func:`new_patient_key` makes it); ``origin`` names it in the
    error."""
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise MissingPatientKey(f"{origin}: the pseudonymisation key is not hexadecimal") from None
    if len(key) < MIN_KEY_BYTES:
        raise MissingPatientKey(
            f"{origin}: the pseudonymisation key has {len(key)} bytes; at least {MIN_KEY_BYTES} "
            f"(make one with: python -c 'import secrets; print(secrets.token_hex({MIN_KEY_BYTES}))')"
        )
    return key


def patient_key_from_environment(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The pseudonymisation key of this process: the file named by ``MCN_TELEMETRY_KEY_FILE`` (a mounted
    Secret, or the cluster's data folder), else ``MCN_TELEMETRY_KEY``; None when neither is set."""
    env = os.environ if environ is None else environ
    path = env.get(KEY_FILE_VARIABLE, "")
    if path:
        try:
            text = Path(path).read_text()
        except OSError as error:
            raise MissingPatientKey(f"{KEY_FILE_VARIABLE}={path}: {error.strerror or error}") from None
        return read_patient_key(text, f"{KEY_FILE_VARIABLE}={path}")
    value = env.get(KEY_VARIABLE, "")
    return read_patient_key(value, KEY_VARIABLE) if value else None


# --- W3C trace context carried by messages (the asynchronous link) ----------------------------------------

_W3C = TraceContextTextMapPropagator()


class TraceCarrier(Protocol):
    """A message with the W3C trace context fields (``mycarenet.dmg.v1.MailboxMessage``)."""

    message_id: str
    traceparent: str
    tracestate: str


def current_trace_context() -> tuple[str, str]:
    """``(traceparent, tracestate)`` of the current span; ``("", "")`` outside a trace."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get("traceparent", ""), carrier.get("tracestate", "")


def stamp_trace_context(message: TraceCarrier) -> None:
    """Write the current trace context into ``message`` (kept when it already carries one)."""
    if message.traceparent:
        return
    message.traceparent, message.tracestate = current_trace_context()


def link_to(traceparent: str, tracestate: str = "", attributes: Attributes = None) -> trace.Link | None:
    """A span link to the span a W3C ``traceparent`` names; None when it is empty or malformed."""
    if not traceparent:
        return None
    found = _W3C.extract({"traceparent": traceparent, "tracestate": tracestate})
    span_context = trace.get_current_span(found).get_span_context()
    if not span_context.is_valid:
        return None
    return trace.Link(span_context, attributes)


def message_links(messages: Iterable[TraceCarrier]) -> list[trace.Link]:
    """One link per message that carries a trace context (to the request that caused it)."""
    links = (link_to(m.traceparent, m.tracestate, {"messaging.message.id": m.message_id}) for m in messages)
    return [link for link in links if link is not None]


# --- database spans -------------------------------------------------------------------------------------


class _ChildSpansOnly(trace.Tracer):
    """A tracer that records a span only inside an existing trace: statements of background polls (outbox
    relay, gauges, audit flush) do not each start a trace of their own."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    @staticmethod
    def _in_trace(context: otel_context.Context | None) -> bool:
        return trace.get_current_span(context).get_span_context().is_valid

    def start_span(
        self, name: str, context: otel_context.Context | None = None, *args: Any, **kw: Any
    ) -> Any:
        if not self._in_trace(context):
            return trace.INVALID_SPAN
        return self._tracer.start_span(name, context, *args, **kw)

    @contextlib.contextmanager
    def start_as_current_span(  # type: ignore[override]
        self, name: str, context: otel_context.Context | None = None, *args: Any, **kw: Any
    ) -> Iterator[trace.Span]:
        if not self._in_trace(context):
            yield trace.INVALID_SPAN
            return
        with self._tracer.start_as_current_span(name, context, *args, **kw) as span:
            yield span


# --- the process's telemetry ----------------------------------------------------------------------------


@dataclass
class Telemetry:
    """The providers and interceptors of one process; pass the interceptors to servers and channels.

    ``attributes`` (e.g. ``{"mycarenet.oa": "100"}``) are on the resource, on every server span and on
    every server metric of the process.
    """

    service_name: str
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    server_interceptors: list[Any] = field(default_factory=list)
    client_interceptors: list[Any] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)
    prometheus_server: Any = None
    patient_key: bytes | None = None
    """The pseudonymisation key (None: spans carry no patient attribute)."""
    _otel_client: list[Any] = field(default_factory=list)
    _client_instruments: tuple[metrics.Histogram, metrics.Counter] | None = None

    @property
    def tracer(self) -> trace.Tracer:
        return self.tracer_provider.get_tracer("mycarenet-mesh", VERSION)

    @property
    def meter(self) -> metrics.Meter:
        return self.meter_provider.get_meter("mycarenet-mesh", VERSION)

    def client_interceptors_for(self, **attributes: str) -> list[Any]:
        """Interceptors for a channel to one peer: client spans (W3C context injected) and the client
        duration histogram, both tagged with ``attributes`` (``peer_service="ehealth"``, ``oa="100"``:
        keys become ``peer.service`` and ``mycarenet.oa``)."""
        if self._client_instruments is None:
            meter = self.meter
            self._client_instruments = (
                meter.create_histogram(
                    "rpc.client.duration", unit="ms", description="Duration of outbound RPCs"
                ),
                meter.create_counter("rpc.client.requests", description="Outbound RPCs"),
            )
        names = {"peer_service": "peer.service", "oa": "mycarenet.oa"}
        tags = {names.get(k, k): v for k, v in attributes.items()}
        return [*self._otel_client, ClientMetricsInterceptor(*self._client_instruments, tags)]

    def instrument_engine(self, engine: AsyncEngine | Engine) -> None:
        """Database spans for this engine (one per statement, inside a trace) and its connection-pool
        usage, with this process's providers (no global patching: several engines, one per app, may live
        in one test process). A synchronous engine too (the insurers' read-only SQLite connection)."""
        from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
        from sqlalchemy import Engine

        usage = self.meter.create_up_down_counter(
            "db.client.connections.usage", unit="connections", description="Connections by state"
        )
        sync = engine if isinstance(engine, Engine) else engine.sync_engine
        EngineTracer(_ChildSpansOnly(self.tracer), sync, usage)  # type: ignore[no-untyped-call]

    def observe(self, name: str, read: Callable[[], float], *, description: str, unit: str = "1") -> None:
        """An observable gauge whose value ``read()`` gives at each collection (keep it cheap and
        non-blocking: a scrape calls it from the exporter's thread)."""
        tags = dict(self.attributes)

        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            try:
                return [Observation(read(), tags)]
            except Exception:  # a gauge must never break a scrape
                log.exception("gauge %s failed", name)
                return []

        self.meter.create_observable_gauge(name, callbacks=[callback], unit=unit, description=description)

    def sampled_gauge(
        self,
        name: str,
        sample: Callable[[], Awaitable[float]],
        *,
        interval: float,
        description: str,
        unit: str = "1",
    ) -> SampledGauge:
        """A gauge whose value an async ``sample()`` (a database count) refreshes every ``interval``
        seconds once :meth:`SampledGauge.start` is called; scrapes read the last value."""
        gauge = SampledGauge(sample, interval)
        self.observe(name, lambda: gauge.value, description=description, unit=unit)
        return gauge

    def shutdown(self) -> None:
        """Flush and stop: pending spans are exported, the scrape endpoint closes."""
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        if self.prometheus_server is not None:
            self.prometheus_server.shutdown()
            self.prometheus_server.server_close()
            self.prometheus_server = None


class SampledGauge:
    """The last value of an async sampler, refreshed in a task (see :meth:`Telemetry.sampled_gauge`)."""

    def __init__(self, sample: Callable[[], Awaitable[float]], interval: float) -> None:
        self._sample = sample
        self.interval = interval
        self.value = 0.0
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> float:
        self.value = float(await self._sample())
        return self.value

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database hiccupped: keep the last value
                log.warning("gauge sampling failed: %s", error)
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="gauge sampler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# --- interceptors ---------------------------------------------------------------------------------------

REFERENCE_FIELDS = ("requester_reference", "context.requester_reference")
MAX_SPAN_REFERENCE = 200
"""The requester reference's documented maximum: a longer one is cut in the span (and refused by the call)."""
PATIENT_FIELDS = ("patient.niss", "patient_niss")


def _field(message: Any, path: str) -> Any:
    for name in path.split("."):
        descriptor = getattr(message, "DESCRIPTOR", None)
        if descriptor is None or name not in getattr(descriptor, "fields_by_name", {}):
            return None
        message = getattr(message, name)
    return message


def request_attributes(request: Any, patient_key: bytes | None) -> dict[str, str]:
    """Span attributes read from a request: the requester reference and the patient, pseudonymised with
    ``patient_key`` (no patient attribute without a key)."""
    out: dict[str, str] = {}
    for path in REFERENCE_FIELDS:
        value = _field(request, path)
        if value:  # bounded: a span is recorded before the request's limits refuse a huge one
            out["mycarenet.requester_reference"] = str(value)[:MAX_SPAN_REFERENCE]
            break
    if patient_key is None:
        return out
    for path in PATIENT_FIELDS:
        value = _field(request, path)
        if value:
            out["mycarenet.patient"] = pseudonymise(str(value), patient_key)
            break
    return out


class SpanAttributesInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Inside the server span: the process's attributes, the request's (reference, pseudonymised
    patient), and on failure the status, the MyCareNet code and reason (``abort_with_status`` bypasses
    the instrumentation's own status recording)."""

    def __init__(self, attributes: Mapping[str, str], patient_key: bytes | None = None) -> None:
        self._attributes = dict(attributes)
        self._patient_key = patient_key

    def _failed(self, span: trace.Span, context: Any) -> None:
        error = current_error.get()
        if error is not None:
            status, code, reason = error.status, str(error.code or ""), error.reason
        else:
            found = context.code() if hasattr(context, "code") else None
            status = found if isinstance(found, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
            code, reason = "", ""
            if status is grpc.StatusCode.OK:
                return
        span.set_attribute("rpc.grpc.status_code", status.value[0])
        if code:
            span.set_attribute("mycarenet.code", code)
        if reason:
            span.set_attribute("mycarenet.reason", reason)
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"{status.name} {reason}".strip()))

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith("/grpc."):
            return handler
        static = self._attributes
        failed = self._failed
        key = self._patient_key

        def start(request: Any) -> trace.Span:
            span = trace.get_current_span()
            if span.is_recording():
                span.set_attributes({**static, **request_attributes(request, key)})
            current_error.set(None)
            return span

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: Any) -> Any:
                span = start(request)
                try:
                    return await inner(request, context)
                except BaseException:
                    failed(span, context)
                    raise

            return replace_behavior(handler, unary=unary)
        if handler.unary_stream is not None:
            inner_stream: Any = handler.unary_stream

            async def stream(request: Any, context: Any) -> Any:
                span = start(request)
                try:
                    async for item in inner_stream(request, context):
                        yield item
                except BaseException:
                    failed(span, context)
                    raise

            return replace_behavior(handler, stream=stream)
        return handler


class ClientMetricsInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Outbound duration histogram and count per method and status, tagged with the peer (e.g. the OA);
    the tags also go on the current client span."""

    def __init__(
        self, duration: metrics.Histogram, requests: metrics.Counter, attributes: Mapping[str, str]
    ) -> None:
        self._duration = duration
        self._requests = requests
        self._attributes = dict(attributes)

    async def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Awaitable[Any]], client_call_details: Any, request: Any
    ) -> Any:
        method = client_call_details.method
        method = method.decode() if isinstance(method, bytes) else str(method)
        span = trace.get_current_span()
        if self._attributes and span.is_recording():
            span.set_attributes(self._attributes)
        started = time.perf_counter()
        status = "UNKNOWN"
        try:
            call = await continuation(client_call_details, request)
            code = await call.code()
            status = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
            return call
        except grpc.aio.AioRpcError as error:
            status = error.code().name
            raise
        except asyncio.CancelledError:
            status = "CANCELLED"
            raise
        finally:
            if not method.startswith("/grpc."):
                attrs = {**self._attributes, "rpc.method": method, "rpc.grpc.status_code": status}
                self._duration.record((time.perf_counter() - started) * 1000, attrs)
                self._requests.add(1, attrs)


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Request count and latency histogram per RPC, by gRPC status and MyCareNet code."""

    def __init__(self, meter: metrics.Meter, attributes: Mapping[str, str] | None = None) -> None:
        self._duration = meter.create_histogram(
            "rpc.server.duration", unit="ms", description="Duration of inbound RPCs"
        )
        self._requests = meter.create_counter("rpc.server.requests", description="Inbound RPCs")
        self._attributes = dict(attributes or {})

    def _record(self, method: str, started: float, status: str, code: str) -> None:
        attrs = {
            **self._attributes,
            "rpc.method": method,
            "rpc.grpc.status_code": status,
            "mycarenet.code": code,
        }
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

        return replace_behavior(handler, unary=wrapped)


def setup(
    service_name: str,
    *,
    span_exporters: Sequence[SpanExporter] = (),
    metric_readers: Iterable[MetricReader] = (),
    prometheus_port: int | None = None,
    otlp_endpoint: str | None = None,
    attributes: Mapping[str, str] | None = None,
    patient_key: bytes | None = None,
    server: bool = True,
) -> Telemetry:
    """Telemetry for one process. Nothing is exported unless an exporter, endpoint or port is given.

    ``otlp_endpoint`` defaults to ``OTEL_EXPORTER_OTLP_ENDPOINT`` (batch export; the standard
    ``OTEL_BSP_*`` variables tune it). ``attributes`` tag the resource, every server span and every
    server metric (e.g. ``{"mycarenet.oa": "100"}``). No global provider is set.

    ``patient_key`` (default: :func:`patient_key_from_environment`) keys the patients' pseudonyms on the
    server spans. When traces are exported (an exporter or an endpoint) it is required: without it this
    raises :class:`MissingPatientKey`. Metrics alone need none (they never name a patient), nor does a
    process that only calls (``server=False``: client spans never name a patient).
    """
    static = dict(attributes or {})
    endpoint = otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    key = patient_key if patient_key is not None else patient_key_from_environment()
    if key is None and server and (span_exporters or endpoint):
        raise MissingPatientKey(
            f"{service_name}: traces are exported but no pseudonymisation key is set: "
            f"set {KEY_FILE_VARIABLE} (a file with the cluster's key, e.g. a mounted Secret) "
            f"or {KEY_VARIABLE} (hexadecimal, "
            f"{MIN_KEY_BYTES} bytes at least); there is no default key"
        )
    if key is not None and len(key) < MIN_KEY_BYTES:
        raise MissingPatientKey(
            f"{service_name}: the pseudonymisation key has fewer than {MIN_KEY_BYTES} bytes"
        )
    resource = Resource.create({"service.name": service_name, "service.version": VERSION, **static})
    tracer_provider = TracerProvider(resource=resource)
    for exporter in span_exporters:
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    if endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        tracer_provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True))
        )
    readers = list(metric_readers)
    http_server = None
    if prometheus_port is not None:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server

        readers.append(PrometheusMetricReader())
        http_server, _thread = start_http_server(prometheus_port, addr="127.0.0.1")
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    telemetry = Telemetry(
        service_name,
        tracer_provider,
        meter_provider,
        attributes=static,
        prometheus_server=http_server,
        patient_key=key,
    )
    not_health = filters.negate(filters.health_check())
    telemetry.server_interceptors = [
        aio_server_interceptor(tracer_provider=tracer_provider, filter_=not_health),  # type: ignore[no-untyped-call]
        MetricsInterceptor(telemetry.meter, static),
        SpanAttributesInterceptor(static, key),
    ]
    telemetry._otel_client = list(
        aio_client_interceptors(tracer_provider=tracer_provider, filter_=not_health)  # type: ignore[no-untyped-call]
    )
    telemetry.client_interceptors = telemetry.client_interceptors_for()
    return telemetry


def from_environment(
    service_name: str,
    *,
    metrics_port: int | None = None,
    attributes: Mapping[str, str] | None = None,
    server: bool = True,
) -> Telemetry | None:
    """The telemetry of a process started from the command line: traces to OTLP when
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, a Prometheus endpoint when ``metrics_port`` is; None (no
    instrumentation at all, no overhead) when neither is. A server that exports traces without a
    pseudonymisation key (or with an unusable one) does not start: it says why and exits with status 2."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") and metrics_port is None:
        return None
    try:
        return setup(service_name, prometheus_port=metrics_port, attributes=attributes, server=server)
    except MissingPatientKey as error:
        print(f"{service_name} cannot start: {error}", file=sys.stderr)
        raise SystemExit(2) from None
