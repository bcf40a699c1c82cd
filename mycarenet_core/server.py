"""Server bootstrap shared by every process of the mesh.

``MeshServer`` builds a grpc.aio server with the standard health service (grpcio-health-checking) and
reflection (grpcio-reflection), the one interceptor that maps :class:`~mycarenet_core.errors.MeshError`
to a rich ``google.rpc.Status``, optional TLS, and graceful shutdown on SIGTERM/SIGINT. Build and serve are
separate: tests bind port 0 and stop the server themselves.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mycarenet_core.channels import merged, server_keepalive_options
from mycarenet_core.codes import McnCode
from mycarenet_core.errors import MeshError, field_error
from mycarenet_core.validation import oversized, reported_by_the_handler, unreported

if TYPE_CHECKING:
    from mycarenet_core.chaos import LinkChaos

log = logging.getLogger(__name__)

AddServicer = Callable[[Any, grpc.aio.Server], None]

# The domain error a handler ended with, for outer interceptors (metrics, tracing) of the same call.
current_error: contextvars.ContextVar[MeshError | None] = contextvars.ContextVar(
    "current_error", default=None
)


@dataclass(frozen=True)
class Service:
    """A servicer to mount: the generated ``add_XServicer_to_server``, the instance, its full name."""

    add: AddServicer
    servicer: object
    name: str


def replace_behavior(
    handler: grpc.RpcMethodHandler[Any, Any],
    *,
    unary: Callable[..., Awaitable[Any]] | None = None,
    stream: Callable[..., Any] | None = None,
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same method handler (same (de)serializers) with a new unary-unary or unary-stream behavior,
    for interceptors that wrap the call."""
    if unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    assert stream is not None
    return grpc.unary_stream_rpc_method_handler(
        stream,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


async def _abort_unexpected(error: Exception, context: Any) -> None:
    """Answer an exception that is not a MeshError: UNAVAILABLE DATABASE_BUSY for a transient database
    failure, UNIMPLEMENTED for a method without a handler, INTERNAL (logged with its stack, nothing leaked)
    for anything else. Unary and streaming calls alike."""
    if context.code() not in (None, grpc.StatusCode.OK):
        raise error
    busy = database_busy(error)
    if busy is not None:
        # The transaction was rolled back: nothing happened, the caller may retry.
        log.warning("database busy: %s", error)
        current_error.set(busy)
        await context.abort_with_status(busy.to_grpc_status())
    if isinstance(error, NotImplementedError):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not implemented")
    log.exception("unhandled error in handler")
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")


def _wrap_unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def wrapper(request: Any, context: Any) -> Any:
        try:
            return await behavior(request, context)
        except MeshError as error:
            current_error.set(error)
            await context.abort_with_status(error.to_grpc_status())
        except asyncio.CancelledError:
            raise
        except Exception as error:
            await _abort_unexpected(error, context)

    return wrapper


# SQLSTATEs of PostgreSQL that mean "try again": serialization failure, deadlock, lock not available.
_TRANSIENT_SQLSTATES = {"40001", "40P01", "55P03"}


def database_busy(error: BaseException) -> MeshError | None:
    """UNAVAILABLE DATABASE_BUSY for a transient database failure (SQLite locked past its busy timeout,
    PostgreSQL serialization failure or deadlock), else None."""
    from sqlalchemy.exc import DBAPIError

    if not isinstance(error, DBAPIError):
        return None
    text = str(error.orig).lower()
    sqlstate = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
    if "database is locked" in text or sqlstate in _TRANSIENT_SQLSTATES or error.connection_invalidated:
        return MeshError(
            grpc.StatusCode.UNAVAILABLE,
            "DATABASE_BUSY",
            "the database is busy; nothing was changed, retry shortly",
            retry_after_seconds=1.0,
        )
    return None


def _wrap_stream(behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def wrapper(request: Any, context: Any) -> Any:
        try:
            async for item in behavior(request, context):
                yield item
        except MeshError as error:
            current_error.set(error)
            await context.abort_with_status(error.to_grpc_status())
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as error:
            await _abort_unexpected(error, context)

    return wrapper


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Maps :class:`MeshError` raised by any handler to its ``google.rpc.Status`` (the only place)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


class Undecodable:
    """What a request deserializer gives for bytes that are not a message of its type: the handler of the
    method answers it INVALID_ARGUMENT (grpc.aio would answer UNKNOWN for a deserializer that raises)."""

    DESCRIPTOR = None  # no fields: what reads a request's fields (telemetry, the hub's echo) finds none

    def __init__(self, error: Exception) -> None:
        self.error = error


def _undecodable_error(request: Undecodable) -> MeshError:
    return field_error("request", McnCode.BAD_FORMAT, "not a valid protobuf message of the method's type")


def decoding_checked(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """The servicer's handler with a request deserializer that never raises (it gives :class:`Undecodable`)
    and a behavior that answers such a request INVALID_ARGUMENT before the servicer sees it; a request with
    a field past its documented maximum (:func:`~mycarenet_core.validation.oversized`) is INVALID_ARGUMENT
    too, reported by the handler's own checker with its other violations. Built at the inner end of the
    chain, so that the trust check (and its audit), telemetry and the error mapping handle an undecodable or
    oversized request as any other bad input."""
    if handler.request_deserializer is None:
        return handler
    decode = handler.request_deserializer

    def deserializer(raw: bytes) -> Any:
        try:
            return decode(raw)
        except Exception as error:  # DecodeError, or anything a parser raises on garbage
            return Undecodable(error)

    if handler.unary_unary is not None:
        inner = handler.unary_unary

        async def unary(request: Any, context: Any) -> Any:
            if isinstance(request, Undecodable):
                raise _undecodable_error(request)
            found = oversized(request)
            if not found:
                return await inner(request, context)
            with reported_by_the_handler(found) as pending:
                reply = await inner(request, context)
            error = unreported(pending)
            if error is not None:
                raise error
            return reply

        return grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=deserializer, response_serializer=handler.response_serializer
        )
    if handler.unary_stream is not None:
        inner_stream: Any = handler.unary_stream

        async def stream(request: Any, context: Any) -> Any:
            if isinstance(request, Undecodable):
                raise _undecodable_error(request)
            found = oversized(request)
            if not found:
                items = inner_stream(request, context)
                if inspect.isawaitable(items):  # a servicer that writes with context.write (health's Watch)
                    await items
                    return
                async for item in items:
                    yield item
                return
            with reported_by_the_handler(found) as pending:
                # The handler's checker runs before its first item: nothing is sent before it did.
                produced = inner_stream(request, context)
                if inspect.isawaitable(produced):  # writes with context.write: its checker runs first too
                    await produced
                    first, rest = None, None
                else:
                    rest = produced.__aiter__()
                    first = await anext(rest, None)
            error = unreported(pending)
            if error is not None:
                raise error
            if first is not None and rest is not None:
                yield first
                async for item in rest:
                    yield item

        return grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=deserializer, response_serializer=handler.response_serializer
        )
    return handler


class MethodChain(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """The server's interceptors, applied once per method instead of once per call.

    Every interceptor of the mesh only wraps the handler of the method it is given (whatever it does per
    call, it does inside the wrapper, from the call's own context), so the handler the whole chain makes for
    a method is the same at every call: it is built at the method's first call and kept, until
    :meth:`forget` (an interceptor whose choice depends on more than the method tells it). grpc.aio would
    otherwise run each interceptor's ``intercept_service`` coroutine and build new handlers at every call.
    Only methods that have a handler are kept (an unknown method name costs nothing to remember).
    """

    def __init__(self, interceptors: Sequence[Any]) -> None:
        self.interceptors = tuple(interceptors)
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def forget(self) -> None:
        """Build every method's handler again at its next call (an interceptor's choice changed: the chaos
        interceptor wraps the calls only while one of its rules is active)."""
        self._handlers = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        method = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is None:
            handler = await self._build(0, continuation, handler_call_details)
            if handler is not None:
                self._handlers[method] = handler
        return handler

    async def _build(
        self,
        index: int,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        if index == len(self.interceptors):
            found = await continuation(details)
            return found if found is None else decoding_checked(found)

        async def next_one(inner: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any]:
            return await self._build(index + 1, continuation, inner)

        handler: grpc.RpcMethodHandler[Any, Any] = await self.interceptors[index].intercept_service(
            next_one, details
        )
        return handler


def peer_identities(context: Any) -> set[str]:
    """Names in the client certificate (CN and SANs) of an mTLS peer; empty without TLS."""
    auth = context.auth_context()
    names: set[str] = set()
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        for value in auth.get(key, ()):
            names.add(value.decode() if isinstance(value, bytes) else str(value))
    return names


class PeerAllowList(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Under mutual TLS, answer only peers whose certificate names one of ``allowed`` (health and
    reflection stay open to any peer the CA vouches for, so that probes and tools work)."""

    OPEN = ("/grpc.health.v1.", "/grpc.reflection.")

    def __init__(self, allowed: set[str]) -> None:
        self.allowed = frozenset(allowed)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(self.OPEN):
            return handler
        allowed = self.allowed

        def refuse(names: set[str]) -> MeshError:
            who = ", ".join(sorted(names)) or "an anonymous peer"
            return MeshError(
                grpc.StatusCode.PERMISSION_DENIED,
                "PEER_NOT_ALLOWED",
                f"this service answers only {', '.join(sorted(allowed))}, not {who}",
            )

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: Any) -> Any:
                names = peer_identities(context)
                if not names & allowed:
                    await context.abort_with_status(refuse(names).to_grpc_status())
                return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_stream: Any = handler.unary_stream

            async def stream(request: Any, context: Any) -> Any:
                names = peer_identities(context)
                if not names & allowed:
                    await context.abort_with_status(refuse(names).to_grpc_status())
                async for item in inner_stream(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


class MeshServer:
    """One grpc.aio server of the mesh with health, reflection and error mapping.

    Usage::

        server = MeshServer("ehealth", [Service(add_fn, servicer, "mycarenet.ehealth.v1.AuthService")])
        port = await server.start("127.0.0.1:0")
        ...
        await server.stop()
    """

    def __init__(
        self,
        name: str,
        services: Sequence[Service],
        *,
        interceptors: Sequence[Any] = (),
        credentials: grpc.ServerCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
        trust: grpc.aio.ServerInterceptor | None = None,  # type: ignore[type-arg]
    ) -> None:
        self.name = name
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        # Telemetry interceptors come first (passed in by the caller), then the error mapping (so that
        # tracing sees the final status), then the trust model (mycarenet_core.trust), whose refusals the
        # error mapping turns into statuses.
        # With the trust model comes the sandbox's chaos agent (mycarenet_core.chaos): the link faults this
        # process applies to the calls of a faulty peer, set at run time by the cluster's supervisor through
        # ChaosAgentService (administrator only); it stands before the error mapping, so telemetry sees it.
        chain: list[Any] = list(interceptors)
        self.chaos: LinkChaos | None = None
        if trust is not None:
            # Imported here: mycarenet_core.chaos builds on this module.
            from mycarenet_core.chaos import ChaosInterceptor, LinkChaos, agent_service

            self.chaos = LinkChaos()
            chain.append(ChaosInterceptor(self.chaos, secure=credentials is not None))
            services = [*services, agent_service(self.chaos)]
        chain.append(ErrorMappingInterceptor())
        if trust is not None:
            chain.append(trust)
        self.services = tuple(services)
        method_chain = MethodChain(chain)
        if self.chaos is not None:
            self.chaos.on_change.append(method_chain.forget)
        # Keepalive: the pings the mesh's channels send are welcome (mycarenet_core.channels).
        self.options = merged([("grpc.so_reuseport", 0), *server_keepalive_options()], options)
        self._server = grpc.aio.server(interceptors=[method_chain], options=self.options)
        self._credentials = credentials
        self.port: int | None = None
        # Set before start: a second, plaintext listener that serves only grpc.health.v1 (same statuses), for
        # Kubernetes' native gRPC probes, which cannot speak mutual TLS. Nothing else is reachable there.
        self.health_bind: str | None = None
        self.health_port: int | None = None
        self._health_server: grpc.aio.Server | None = None
        self._stopping = asyncio.Event()
        for service in self.services:
            service.add(service.servicer, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            [s.name for s in self.services] + [health.SERVICE_NAME, reflection.SERVICE_NAME], self._server
        )

    def mount(self, service: Service) -> None:
        """Serve one more service (before :meth:`start`; the core skeleton's own, e.g. the test clock)."""
        service.add(service.servicer, self._server)
        self.services = (*self.services, service)

    async def start(self, bind: str = "127.0.0.1:0") -> int:
        """Bind, start, mark every service SERVING; return the bound port."""
        if self._credentials is None:
            port = self._server.add_insecure_port(bind)
        else:
            port = self._server.add_secure_port(bind, self._credentials)
        if port == 0:
            raise RuntimeError(f"{self.name}: could not bind {bind}")
        await self._server.start()
        self.port = port
        if self.health_bind is not None:
            self._health_server = grpc.aio.server(
                options=merged([("grpc.so_reuseport", 0)], server_keepalive_options())
            )
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_server)
            self.health_port = self._health_server.add_insecure_port(self.health_bind)
            if self.health_port == 0:
                raise RuntimeError(f"{self.name}: could not bind {self.health_bind} (health)")
            await self._health_server.start()
        serving = health_pb2.HealthCheckResponse.SERVING
        for service in self.services:
            await self.health.set(service.name, serving)
        await self.health.set(health.OVERALL_HEALTH, serving)
        log.info("%s serving on port %d", self.name, port)
        return port

    async def stop(self, grace: float = 5.0) -> None:
        """Report NOT_SERVING, then stop accepting calls and let running ones finish within ``grace``."""
        await self.health.enter_graceful_shutdown()
        await self._server.stop(grace)
        if self._health_server is not None:
            await self._health_server.stop(0)

    def request_stop(self) -> None:
        """Ask :meth:`serve_forever` to stop (what SIGTERM and SIGINT do)."""
        self._stopping.set()

    async def serve_forever(
        self, bind: str, *, grace: float = 5.0, on_stop: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Start, then wait for SIGTERM/SIGINT (or :meth:`request_stop`) and stop gracefully."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self.start(bind)
        try:
            await self._stopping.wait()
        finally:
            log.info("%s stopping", self.name)
            await self.stop(grace)
            if on_stop is not None:
                await on_stop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
