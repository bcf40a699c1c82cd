"""Calls from the hub to eHealth and the OA nodes: deadlines from the caller's remaining time, retries
only for idempotent methods (declared in the channel's service config), and a circuit breaker per OA so that
calls for a dead OA fail fast without touching the others."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from mycarenet_core.channels import open_channel, retry_service_config
from mycarenet_core.errors import MeshError, parse_rpc_error, unavailable
from mycarenet_core.gen.mycarenet.ehealth.v1 import (
    auth_pb2_grpc,
    cadastre_pb2_grpc,
    therapeutic_relation_pb2_grpc,
)
from mycarenet_core.gen.mycarenet.oa.v1 import (
    membership_service_pb2_grpc,
    oa_dmg_service_pb2_grpc,
    oa_insurability_service_pb2_grpc,
)
from mycarenet_core.telemetry import Telemetry

log = logging.getLogger(__name__)
T = TypeVar("T")

OA_IDEMPOTENT = [
    ("mycarenet.oa.v1.OaDmgService", "ConsultDmg"),
    ("mycarenet.oa.v1.OaDmgService", "ListHoldings"),
    ("mycarenet.oa.v1.OaDmgService", "GetEnrolment"),
    ("mycarenet.oa.v1.MembershipService", "ListAffiliationChanges"),
    ("mycarenet.oa.v1.MembershipService", "GetMember"),
    ("mycarenet.oa.v1.OaInsurabilityService", "GetMemberData"),
    ("mycarenet.oa.v1.OaInsurabilityService", "ConsultRights"),
]
EHEALTH_IDEMPOTENT = [
    ("mycarenet.ehealth.v1.AuthService", "GetSigningKeys"),
    ("mycarenet.ehealth.v1.AuthService", "ListRevocations"),
    ("mycarenet.ehealth.v1.TherapeuticRelationService", "CheckRelation"),
    ("mycarenet.ehealth.v1.TherapeuticRelationService", "ListRelationChanges"),
    ("mycarenet.ehealth.v1.CadastreService", "GetProvider"),
    ("mycarenet.ehealth.v1.CadastreService", "ListCadastreChanges"),
]
# The certificate kind the hub calls as (mycarenet_core.trust): under TLS its certificate says it, on a
# plaintext channel (development only) the channel declares it.
IDENTITY = "hub"
# Reconnect quickly when a peer comes back (the default backoff grows to two minutes).
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


@dataclass(frozen=True)
class CallPolicy:
    """Deadline caps (seconds) and the circuit breaker of the OA calls."""

    max_deadline: float = 10.0
    default_deadline: float = 5.0
    connect_timeout: float = 1.0
    margin: float = 0.05
    breaker_failures: int = 3
    breaker_cooldown: float = 2.0


def deadline(remaining: float | None, policy: CallPolicy, *, cap: float | None = None) -> float:
    """Timeout for an outgoing call: the caller's remaining time minus a margin, capped."""
    limit = policy.max_deadline if cap is None else cap
    if remaining is None:
        return min(policy.default_deadline, limit)
    return max(0.001, min(remaining - policy.margin, limit))


class CircuitBreaker:
    """Opens after ``failures`` consecutive transport failures; lets one trial call through after the
    cooldown (half-open); closes on success."""

    def __init__(self, failures: int, cooldown: float, *, monotonic: Callable[[], float] = time.monotonic):
        self._failures_to_open = failures
        self._cooldown = cooldown
        self._now = monotonic
        self.failures = 0
        self.opened_at: float | None = None
        self._trial = False

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None and self._now() - self.opened_at < self._cooldown

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        if self._now() - self.opened_at < self._cooldown or self._trial:
            return False
        self._trial = True  # half-open: one call tests the OA
        return True

    def success(self) -> None:
        self.failures, self.opened_at, self._trial = 0, None, False

    def failure(self) -> None:
        self.failures += 1
        self._trial = False
        if self.failures >= self._failures_to_open or self.opened_at is not None:
            self.opened_at = self._now()


TRANSPORT_FAILURES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _is_transport_failure(error: grpc.RpcError, parsed: MeshError) -> bool:
    code_fn = getattr(error, "code", None)
    code = code_fn() if callable(code_fn) else None
    # A rich status from the OA (ErrorInfo) is a business answer, even with these codes.
    return code in TRANSPORT_FAILURES and parsed.reason in (c.name for c in TRANSPORT_FAILURES)


class OaClient:
    """One OA node: stubs on one channel, its breaker, and :meth:`call` which maps failures."""

    def __init__(
        self,
        insurer_code: str,
        target: str,
        policy: CallPolicy,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        interceptors: Sequence[Any] = (),
    ) -> None:
        self.insurer_code = insurer_code
        self.target = target
        self.policy = policy
        self.channel = open_channel(
            target,
            credentials=credentials,
            service_config=retry_service_config(OA_IDEMPOTENT),
            options=CHANNEL_OPTIONS,
            interceptors=interceptors,
            identity=IDENTITY,
        )
        self.dmg = oa_dmg_service_pb2_grpc.OaDmgServiceStub(self.channel)
        self.membership = membership_service_pb2_grpc.MembershipServiceStub(self.channel)
        self.insurability = oa_insurability_service_pb2_grpc.OaInsurabilityServiceStub(self.channel)
        self.breaker = CircuitBreaker(policy.breaker_failures, policy.breaker_cooldown)

    def down(self, why: str) -> MeshError:
        return unavailable(
            "OA_UNAVAILABLE", f"insurer {self.insurer_code} is unavailable: {why}", retry_after_seconds=1.0
        ).with_metadata(insurer_code=self.insurer_code)

    async def _connected(self, within: float) -> None:
        state = self.channel.get_state(try_to_connect=True)
        if state is grpc.ChannelConnectivity.READY:
            return
        if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            raise self.down("not reachable")
        try:
            await asyncio.wait_for(self.channel.channel_ready(), within)
        except TimeoutError:
            raise self.down("no connection within the connect deadline") from None

    async def call(self, fn: Callable[[float], Awaitable[T]], remaining: float | None) -> T:
        """Run ``fn(timeout)`` against this OA, failing fast when it is known to be down.

        OA business errors are re-raised unchanged (rich status); transport failures become
        UNAVAILABLE OA_UNAVAILABLE and count towards the breaker.
        """
        if not self.breaker.allow():
            raise self.down("circuit open after repeated failures")
        timeout = deadline(remaining, self.policy)
        started = time.monotonic()
        try:
            await self._connected(min(timeout, self.policy.connect_timeout))
            result = await fn(max(0.001, timeout - (time.monotonic() - started)))
        except MeshError:
            self.breaker.failure()
            raise
        except grpc.RpcError as error:
            parsed = parse_rpc_error(error)
            if _is_transport_failure(error, parsed):
                self.breaker.failure()
                if parsed.status is grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise MeshError(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        "OA_TIMEOUT",
                        f"insurer {self.insurer_code} did not answer in time",
                    ).with_metadata(insurer_code=self.insurer_code) from None
                raise self.down(parsed.message or "transport failure") from None
            self.breaker.success()
            raise parsed from None
        self.breaker.success()
        return result

    async def close(self) -> None:
        await self.channel.close(None)


class EhealthClient:
    """The eHealth services the hub uses, on one channel."""

    def __init__(
        self,
        target: str,
        policy: CallPolicy,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        interceptors: Sequence[Any] = (),
    ) -> None:
        self.policy = policy
        self.channel = open_channel(
            target,
            credentials=credentials,
            service_config=retry_service_config(EHEALTH_IDEMPOTENT),
            options=CHANNEL_OPTIONS,
            interceptors=interceptors,
            identity=IDENTITY,
        )
        self.auth = auth_pb2_grpc.AuthServiceStub(self.channel)
        self.relations = therapeutic_relation_pb2_grpc.TherapeuticRelationServiceStub(self.channel)
        self.cadastre = cadastre_pb2_grpc.CadastreServiceStub(self.channel)

    async def call(self, fn: Callable[[float], Awaitable[T]], remaining: float | None) -> T:
        """Run ``fn(timeout)``; eHealth business errors pass through, transport failures become
        UNAVAILABLE EHEALTH_UNAVAILABLE."""
        try:
            return await fn(deadline(remaining, self.policy))
        except grpc.RpcError as error:
            parsed = parse_rpc_error(error)
            if _is_transport_failure(error, parsed):
                raise unavailable(
                    "EHEALTH_UNAVAILABLE",
                    f"eHealth is unavailable: {parsed.message}",
                    retry_after_seconds=1.0,
                ) from None
            raise parsed from None

    async def close(self) -> None:
        await self.channel.close(None)


def make_oa_clients(
    targets: Mapping[str, str],
    policy: CallPolicy,
    credentials: grpc.ChannelCredentials | None,
    telemetry: Telemetry | None = None,
) -> dict[str, OaClient]:
    """One client per OA; with ``telemetry`` each channel's spans and duration histogram name its OA."""
    return {
        code: OaClient(
            code,
            target,
            policy,
            credentials=credentials,
            interceptors=telemetry.client_interceptors_for(peer_service=f"oa-{code}", oa=code)
            if telemetry
            else (),
        )
        for code, target in targets.items()
    }
