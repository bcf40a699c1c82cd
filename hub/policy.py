"""Each hub RPC's policy, enforced by one wrapper per method built once from the trust table.

``mycarenet_core/trust.toml`` declares, next to who may call an RPC, what an admitted call costs in the
throttle of its requester of record (:class:`~mycarenet_core.trust.Throttling`) and which calls leave an
audit row (:class:`~mycarenet_core.trust.Auditing`). A servicer of the hub (:class:`Servicer`) writes each
RPC as a step, proto → domain call → proto, decorated with :func:`rpc`, which names the request's parser
(every field violation at once, :mod:`hub.requests`) and, when the domain refuses some callers before
their request costs anything, its ``guard``. At construction the servicer replaces each step with the
method's handler, built once from the method's policy, which runs every call in this order:

1. the audit row (its RPC name is the method's; written when the call ends, as the table says);
2. the caller (the session the trust interceptor verified) recorded in the row;
3. the parser, then the guard;
4. the throttle, as the table says: one token per call, or one per insurer the parsed request goes to
   (its ``insurers``, recorded in the row), taken from the requester of record's bucket;
5. the step (for a watch stream: the items are sent after the row is written, as the stream opened).

A call that fails through no fault of its caller gives its tokens back
(:func:`hub.throttle.not_the_callers_fault`); every error of the call carries the request's requester
reference in its metadata. A servicer whose service has an RPC without a step, or without a throttle and
audit in the table (:meth:`~mycarenet_core.trust.TrustTable.declared`), is refused (the hub does not start).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from hub.audit import AuditEntry
from hub.throttle import not_the_callers_fault
from mycarenet_core.errors import MeshError
from mycarenet_core.sessions import Caller
from mycarenet_core.trust import (
    TABLE,
    Auditing,
    Policy,
    Throttling,
    TrustTable,
    current_session,
    require_session,
)

if TYPE_CHECKING:
    from hub.services import HubCore

Context = grpc.aio.ServicerContext[Any, Any]
Request = TypeVar("Request")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(slots=True)
class Call(Generic[Request]):
    """One admitted call, as its step sees it."""

    request: Request
    context: Context
    entry: AuditEntry
    """The call's audit row, which the domain fills (the insurers asked) while it runs."""

    @property
    def caller(self) -> Caller:
        """The verified session of the call (its grant asked for one)."""
        caller = self.entry.caller
        return require_session() if caller is None else caller  # without one: UNAUTHENTICATED

    def remaining(self) -> float | None:
        """The seconds left before the call's deadline."""
        return self.context.time_remaining()


class GoesToInsurers(Protocol):
    """A parsed request of a method throttled per insurer: the insurers it is asked of, or routed to."""

    @property
    def insurers(self) -> Sequence[str]: ...


Parse = Callable[[Any, Call[Any]], Any]
"""(servicer, call) → the parsed request (raises INVALID_ARGUMENT with every violation)."""
Guard = Callable[[Any, Call[Any], Any], None]
"""(servicer, call, parsed request): raises the domain's refusal, before the throttle."""


@dataclass(frozen=True)
class Rpc:
    parse: Parse
    guard: Guard | None


_RPC = "__hub_rpc__"


def rpc(parse: Parse, *, guard: Guard | None = None) -> Callable[[F], F]:
    """Mark a servicer method as the step of the RPC of its name: ``parse`` makes the typed request the step
    receives (``step(self, call, parsed)``); ``guard``, when given, may refuse the call before the
    throttle is taken."""

    def mark(step: F) -> F:
        setattr(step, _RPC, Rpc(parse, guard))
        return step

    return mark


def charged_insurers(parsed: GoesToInsurers) -> Sequence[str]:
    """The insurers a call throttled per insurer pays for (``Throttling.INSURER``)."""
    return parsed.insurers


class Servicer:
    """Base of the hub's servicers: ``SERVICE`` is the service's descriptor; every RPC of it is a step marked
    with :func:`rpc`, replaced on the instance by the handler :func:`handler` builds from the table."""

    SERVICE: ClassVar[ServiceDescriptor]

    def __init__(self, core: HubCore, table: TrustTable = TABLE) -> None:
        self.core = core
        for method, policy in table.declared(self.SERVICE):
            step = getattr(type(self), method.name, None)
            spec = getattr(step, _RPC, None)
            if step is None or not isinstance(spec, Rpc):
                raise TypeError(f"{type(self).__name__}.{method.name} is not marked with @rpc")
            setattr(self, method.name, handler(self, method, step, spec, policy))


def handler(
    servicer: Servicer, method: MethodDescriptor, step: Callable[..., Any], spec: Rpc, policy: Policy
) -> Callable[..., Any]:
    """The handler of one method, enforcing ``policy`` (a declared one: :meth:`TrustTable.declared`) around
    ``step`` (built once, at start)."""
    streaming = method.server_streaming
    if streaming != inspect.isasyncgenfunction(step) or method.client_streaming:
        raise TypeError(f"{policy.method}: the step's kind does not match the RPC's")
    if not streaming:
        return _runner(servicer, method, step, spec, policy)

    async def opened(servicer: Servicer, call: Call[Any], parsed: Any) -> tuple[Call[Any], Any]:
        return call, parsed

    open_stream = _runner(servicer, method, opened, spec, policy)

    async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
        call, parsed = await open_stream(request, context)
        async for item in step(servicer, call, parsed):
            yield item

    return stream


def _runner(
    servicer: Servicer,
    method: MethodDescriptor,
    step: Callable[[Any, Call[Any], Any], Awaitable[Any]],
    spec: Rpc,
    policy: Policy,
) -> Callable[[Any, Context], Awaitable[Any]]:
    """The audited, throttled call of ``step``; everything read from the table is bound here, once."""
    core = servicer.core
    record, throttle = core.audit.record, core.throttle
    name, audit = method.name, policy.audit or Auditing.CALL
    parse, guard = spec.parse, spec.guard
    per_call = policy.throttle is Throttling.CALL
    per_insurer = policy.throttle is Throttling.INSURER
    has_reference = "requester_reference" in method.input_type.fields_by_name

    async def run(request: Any, context: Context) -> Any:
        reference: str = request.requester_reference if has_reference else ""
        taken, key = 0.0, ""
        try:
            async with record(name, audit) as entry:
                entry.requester_reference = reference
                entry.caller = current_session()
                call = Call(request, context, entry)
                parsed = parse(servicer, call)
                if guard is not None:
                    guard(servicer, call, parsed)
                if per_call:
                    key = call.caller.requester_inami
                    taken = throttle.take(key)
                elif per_insurer:
                    insurers = charged_insurers(parsed)
                    entry.insurer_codes = list(insurers)
                    key = call.caller.requester_inami
                    taken = throttle.take(key, cost=len(insurers))
                return await step(servicer, call, parsed)
        except BaseException as error:
            if taken and not_the_callers_fault(error):
                throttle.give_back(key, taken)
            if isinstance(error, MeshError):
                raise error.with_metadata(requester_reference=reference) from None
            raise

    return run


__all__ = ["Call", "GoesToInsurers", "Servicer", "charged_insurers", "handler", "rpc"]
