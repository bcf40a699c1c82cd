"""Link faults a process applies to the calls it receives: the receiving half of the sandbox's chaos.

Every :class:`~mycarenet_core.server.MeshServer` with a trust interceptor gets, from the skeleton, a
:class:`LinkChaos` (the active rules), a :class:`ChaosInterceptor` in its chain and the internal
``mycarenet.sandbox.v1.ChaosAgentService`` (administrator certificate only, see ``trust.toml``), through
which the cluster's supervisor (``mycarenet_cluster.chaos``) replaces the rules at run time. A rule names the
calling peer as its certificate does (``hub``, ``oa-300``, ``client`` …, see
:func:`mycarenet_core.trust.identify`) and adds a latency (fixed + uniform jitter) and/or fails a share of
its calls with a status code.

Each rule carries its own end (real elapsed time, ``time.monotonic``: a fault lasts so many seconds whatever
the mesh date says), so it heals by itself even when nobody tells the process. With no rule active the
interceptor hands the handler back untouched: a healed link costs one empty-dict test per call.
Health, reflection and the agent itself are never faulted (so that probes work and a fault can be cleared).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from mycarenet_core.codes import McnCode
from mycarenet_core.gen.mycarenet.sandbox.v1 import chaos_pb2, chaos_pb2_grpc
from mycarenet_core.server import Service, replace_behavior
from mycarenet_core.trust import OPEN_PREFIXES, identify
from mycarenet_core.validation import Checker

AGENT_SERVICE = "mycarenet.sandbox.v1.ChaosAgentService"
MAX_RULES = 64
MAX_PEER_NAME = 32
MAX_LATENCY_MS = 60_000
MAX_DURATION_MS = 3_600_000
STATUS_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
_EXEMPT = (*OPEN_PREFIXES, f"/{AGENT_SERVICE}/")


@dataclass(frozen=True)
class Rule:
    """One faulty link, seen from the receiving process."""

    source: str
    latency_s: float = 0.0
    jitter_s: float = 0.0
    error_fraction: float = 0.0
    error_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    ends_at: float = 0.0  # monotonic seconds


def error_status(number: int) -> grpc.StatusCode | None:
    """The gRPC status of a ``google.rpc.Code`` number that may fail a call (not OK, not unknown)."""
    code = STATUS_BY_NUMBER.get(number)
    return None if code is None or code is grpc.StatusCode.OK else code


class LinkChaos:
    """The active rules of one process, by calling peer."""

    def __init__(
        self, *, monotonic: Callable[[], float] = time.monotonic, rng: random.Random | None = None
    ) -> None:
        self.monotonic = monotonic
        self.rng = rng or random.Random()
        self.rules: dict[str, Rule] = {}
        self.on_change: list[Callable[[], None]] = []
        """Called whenever the rules change (the server's interceptor chain, kept per method, is rebuilt:
        the chaos interceptor wraps the calls only while a rule is active)."""

    def replace(self, rules: Mapping[str, Rule]) -> None:
        self.rules = dict(rules)
        self._changed()

    def _changed(self) -> None:
        for callback in self.on_change:
            callback()

    def rule_for(self, peer: str) -> Rule | None:
        """The rule of ``peer`` while it lasts (an ended rule is dropped here)."""
        rule = self.rules.get(peer)
        if rule is not None and self.monotonic() >= rule.ends_at:
            self.rules = {k: r for k, r in self.rules.items() if r is not rule}
            self._changed()
            return None
        return rule

    async def apply(self, rule: Rule, context: Any) -> None:
        """Hold the call for the rule's latency, then fail it with the rule's share."""
        delay = rule.latency_s + (self.rng.uniform(0.0, rule.jitter_s) if rule.jitter_s else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        if rule.error_fraction and self.rng.random() < rule.error_fraction:
            await context.abort(rule.error_code, f"chaos: injected fault on the link from {rule.source}")


class ChaosInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Applies the :class:`LinkChaos` rules to the calls of the faulty peers; nothing when none is active."""

    def __init__(self, chaos: LinkChaos, *, secure: bool) -> None:
        self.chaos = chaos
        self.secure = secure

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if not self.chaos.rules or handler is None or handler_call_details.method.startswith(_EXEMPT):
            return handler
        chaos, secure = self.chaos, self.secure
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: Any) -> Any:
                rule = chaos.rule_for(identify(context, secure=secure).name)
                if rule is not None:
                    await chaos.apply(rule, context)
                return await inner(request, context)

            return replace_behavior(handler, unary=unary)
        if handler.unary_stream is not None:
            inner_stream: Any = handler.unary_stream

            async def stream(request: Any, context: Any) -> Any:
                rule = chaos.rule_for(identify(context, secure=secure).name)
                if rule is not None:
                    await chaos.apply(rule, context)
                async for item in inner_stream(request, context):
                    yield item

            return replace_behavior(handler, stream=stream)
        return handler


def parse_rules(request: chaos_pb2.SetLinkFaultsRequest, now: float) -> dict[str, Rule]:
    """The rules of a SetLinkFaults request (every bad field at once: INVALID_ARGUMENT)."""
    rules: dict[str, Rule] = {}
    with Checker() as check:
        if check.items("rules", request.rules, maximum=MAX_RULES):
            for i, raw in enumerate(request.rules):
                at = f"rules[{i}]"
                source = check.text(f"{at}.source", raw.source, max_length=MAX_PEER_NAME)
                latency = check.number(f"{at}.latency_ms", raw.latency_ms, minimum=0, maximum=MAX_LATENCY_MS)
                jitter = check.number(f"{at}.jitter_ms", raw.jitter_ms, minimum=0, maximum=MAX_LATENCY_MS)
                percent = check.number(f"{at}.error_percent", raw.error_percent, minimum=0, maximum=100)
                remaining = check.number(
                    f"{at}.remaining_ms", raw.remaining_ms, minimum=1, maximum=MAX_DURATION_MS
                )
                code = error_status(raw.error_code)
                if percent and code is None:
                    check.add(f"{at}.error_code", McnCode.VALUE_NOT_ALLOWED, "a status code other than OK")
                if source in rules:
                    check.add(f"{at}.source", McnCode.VALUE_NOT_ALLOWED, "one rule per source")
                if source:
                    rules[source] = Rule(
                        source,
                        latency / 1000.0,
                        jitter / 1000.0,
                        percent / 100.0,
                        code or grpc.StatusCode.UNAVAILABLE,
                        now + remaining / 1000.0,
                    )
    return rules


class ChaosAgentServicer(chaos_pb2_grpc.ChaosAgentServiceServicer):
    """``SetLinkFaults``: replace the rules of this process."""

    def __init__(self, chaos: LinkChaos) -> None:
        self.chaos = chaos

    async def SetLinkFaults(
        self, request: chaos_pb2.SetLinkFaultsRequest, context: Any
    ) -> chaos_pb2.SetLinkFaultsResponse:
        self.chaos.replace(parse_rules(request, self.chaos.monotonic()))
        return chaos_pb2.SetLinkFaultsResponse(active=len(self.chaos.rules))


def agent_service(chaos: LinkChaos) -> Service:
    """ChaosAgentService over ``chaos``, as every server of the skeleton mounts it."""
    return Service(
        chaos_pb2_grpc.add_ChaosAgentServiceServicer_to_server, ChaosAgentServicer(chaos), AGENT_SERVICE
    )


__all__ = [
    "AGENT_SERVICE",
    "ChaosAgentServicer",
    "ChaosInterceptor",
    "LinkChaos",
    "Rule",
    "agent_service",
    "error_status",
    "parse_rules",
]
