"""Who calls the hub, as the trust interceptor established it, and the hub's own rules over that caller.

Which certificate, which roles and which mandated service each RPC needs is written once, in
``mycarenet_core/trust.toml``, and enforced by :class:`mycarenet_core.trust.TrustInterceptor` before any
handler runs; nothing here repeats it. What stays here is domain: the session a handler works for, and the
GP-in-training rule (a trainee acts under a supervisor, who becomes the holder; the insurer checks that the
supervisor is the one the cadastre records for the trainee).
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from mycarenet_core.errors import McnCode, MeshError, field_error
from mycarenet_core.identifiers import Role
from mycarenet_core.server import replace_behavior
from mycarenet_core.sessions import ROLE_TO_PROTO, Caller, TokenVerifier, bearer_token
from mycarenet_core.trust import TrustInterceptor, current_peer, require_session

# The requester reference of the running call's request, for the audit row of a refusal made before the
# handler (which would otherwise not know it).
request_reference: contextvars.ContextVar[str] = contextvars.ContextVar("hub_request_reference", default="")


class HubTrust(TrustInterceptor):
    """The trust interceptor, whose refusals echo the request's requester reference in their metadata as
    every other answer of the hub does (SPEC: the reference is echoed in responses), so that provider
    software can match a refusal to its request; the audit of the refusal records it too."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await super().intercept_service(continuation, handler_call_details)
        if handler is None:
            return handler
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: Any) -> Any:
                request_reference.set(_reference(request))
                try:
                    return await inner(request, context)
                except MeshError as error:
                    raise _echo(error, request) from None

            return replace_behavior(handler, unary=unary)
        if handler.unary_stream is not None:
            inner_stream: Any = handler.unary_stream

            async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                request_reference.set(_reference(request))
                try:
                    async for item in inner_stream(request, context):
                        yield item
                except MeshError as error:
                    raise _echo(error, request) from None

            return replace_behavior(handler, stream=stream)
        return handler


def _reference(request: Any) -> str:
    reference = getattr(request, "requester_reference", "")
    return reference if isinstance(reference, str) else ""


def _echo(error: MeshError, request: Any) -> MeshError:
    return error.with_metadata(requester_reference=_reference(request))


def session_caller() -> Caller:
    """The verified session of the running call (its grant asked for one): the requester of record is the
    principal under a mandate, else the provider who logged in."""
    return require_session()


def require_supervisor(caller: Caller, supervisor_inami: str) -> None:
    """A GP in training notifies under a supervisor: INVALID_ARGUMENT 100 on ``supervisor_inami`` without."""
    if caller.role is Role.GP_IN_TRAINING and not supervisor_inami:
        raise field_error(
            "supervisor_inami",
            McnCode.MANDATORY_FIELD_MISSING,
            "a GP in training notifies under a supervisor",
        )


__all__ = [
    "ROLE_TO_PROTO",
    "Caller",
    "HubTrust",
    "TokenVerifier",
    "bearer_token",
    "current_peer",
    "require_supervisor",
    "session_caller",
]
