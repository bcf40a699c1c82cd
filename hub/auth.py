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

from mycarenet_core.clock import Clock
from mycarenet_core.errors import McnCode, MeshError, field_error
from mycarenet_core.gen.mycarenet.ehealth.v1 import auth_pb2
from mycarenet_core.identifiers import Role
from mycarenet_core.server import replace_behavior
from mycarenet_core.sessions import ROLE_TO_PROTO, Caller, TokenVerifier, bearer_token
from mycarenet_core.trust import TrustInterceptor, current_peer

# The requester reference of the running call's request, for the audit row of a refusal made before the
# handler (which would otherwise not know it).
request_reference: contextvars.ContextVar[str] = contextvars.ContextVar("hub_request_reference", default="")


class CachingTokenVerifier(TokenVerifier):
    """A :class:`TokenVerifier` that verifies each token once: the Ed25519 signature and the claims are
    checked on the first call of a session, whose :class:`Caller` is then kept (keyed by the whole token)
    until the token expires, its session is revoked, or the signing keys are fetched again. A kept caller is
    still checked on every call for expiry and revocation, which cost a dict look-up, not a signature.
    At most ``max_cached`` tokens are kept (the oldest go first)."""

    def __init__(
        self,
        fetch_keys: Callable[[], Awaitable[auth_pb2.GetSigningKeysResponse]],
        clock: Clock,
        *,
        refresh_interval: float = 5.0,
        leeway_seconds: float = 30.0,
        max_cached: int = 65_536,
    ) -> None:
        super().__init__(fetch_keys, clock, refresh_interval=refresh_interval, leeway_seconds=leeway_seconds)
        self._now = clock.now
        self._grace = leeway_seconds
        self.max_cached = max_cached
        self._verified: dict[str, tuple[Caller, float]] = {}  # token -> (caller, expiry in epoch seconds)
        self._tokens_of: dict[str, list[str]] = {}  # session id -> its cached tokens
        self.misses = 0

    async def verify(self, token: str) -> Caller:
        kept = self._verified.get(token)
        if kept is not None:
            caller, expires = kept
            if self._now().timestamp() <= expires + self._grace and not self.is_revoked(caller.session_id):
                return caller
            self._forget(token, caller.session_id)  # the full verification says why it is refused
        self.misses += 1
        caller = await super().verify(token)
        self._keep(token, caller)
        return caller

    def _keep(self, token: str, caller: Caller) -> None:
        while len(self._verified) >= self.max_cached:
            oldest = next(iter(self._verified))
            self._forget(oldest, self._verified[oldest][0].session_id)
        self._verified[token] = (caller, caller.expires.timestamp())
        self._tokens_of.setdefault(caller.session_id, []).append(token)

    def _forget(self, token: str, session_id: str) -> None:
        self._verified.pop(token, None)
        tokens = self._tokens_of.get(session_id)
        if tokens is not None:
            if token in tokens:
                tokens.remove(token)
            if not tokens:
                del self._tokens_of[session_id]

    def revoke(self, revocation: auth_pb2.Revocation) -> None:
        super().revoke(revocation)
        for token in self._tokens_of.pop(revocation.session_id, []):
            self._verified.pop(token, None)

    async def refresh_keys(self, *, force: bool = False) -> bool:
        """Fetch the keys (see :class:`TokenVerifier`); when fetched, every kept token is verified again on
        its next call (a key eHealth no longer publishes verifies nothing any more)."""
        fetched = await super().refresh_keys(force=force)
        if fetched:
            self._verified.clear()
            self._tokens_of.clear()
        return fetched

    def forget_expired(self) -> None:
        super().forget_expired()
        limit = self._now().timestamp() - self._grace
        for token, (caller, expires) in list(self._verified.items()):
            if expires < limit:
                self._forget(token, caller.session_id)

    @property
    def cached(self) -> int:
        return len(self._verified)


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
    "CachingTokenVerifier",
    "Caller",
    "HubTrust",
    "TokenVerifier",
    "bearer_token",
    "current_peer",
    "require_supervisor",
]
