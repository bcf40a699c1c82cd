"""The authorization matrix: every RPC of every service x every kind of caller, under mutual TLS, against
what the trust table says.

Callers: no certificate; a certificate the CA signed for an unknown party; each certificate of the table
without a token; provider software (``client``) with the session of each role; a person under a mandate
(inside and outside what it covers); a person's session without a mandate. For each pair the expected answer
is derived from ``trust.toml``: refused by certificate, by session, by mandate or by role with the exact
status and reason, or admitted (then whatever the handler says of an empty request, but never a refusal of
the trust layer). The refusals also carry code 140 where MyCareNet has one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import message_factory

from mycarenet_core.errors import parse_rpc_error
from mycarenet_core.gen.mycarenet.ehealth.v1 import mandate_pb2
from mycarenet_core.identifiers import Role
from mycarenet_core.sessions import service_name
from mycarenet_core.trust import TABLE, Peer, Policy, SessionNeed, service_modules
from tests.trust.tls_mesh import TlsMesh, tls_mesh

# Where each service runs (the insurer services are called on insurer 100).
PROCESS = {
    "mycarenet.ehealth.v1": "ehealth",
    "mycarenet.dmg.v1": "hub",
    "mycarenet.hub.v1": "hub",
    "mycarenet.insurability.v1": "hub",
    "mycarenet.invoicing.v1": "hub",
    "mycarenet.oa.v1": "oa-100",
    "mycarenet.sandbox.v1": "sandbox",
}
# Services that run elsewhere than the rest of their package: every process's own, called on insurer 100.
PROCESS_OF_SERVICE = {
    "mycarenet.sandbox.v1.ProcessClockService": "oa-100",
    "mycarenet.sandbox.v1.ChaosAgentService": "oa-100",
}
MODULES = service_modules()
MANDATED = [mandate_pb2.MANDATED_SERVICE_DMG_CONSULT, mandate_pb2.MANDATED_SERVICE_MAILBOX]
TRUST_REASONS = {
    "CERTIFICATE_NOT_ALLOWED",
    "MANDATE_NOT_ALLOWED",
    "MANDATE_NOT_COVERING",
    "MANDATE_REQUIRED",
    "PROVIDER_NOT_ENTITLED",
}


@dataclass(frozen=True)
class Caller:
    """One kind of caller: the certificate it presents (None: none at all) and the session it sends."""

    label: str
    identity: str | None
    token: str = ""  # a name in TlsMesh.tokens
    role: Role | None = None
    mandated: bool = False
    provider: bool = True  # the session names a provider (own, or the principal of a mandate)


GP = Role.GENERAL_PRACTITIONER
CALLERS = [
    Caller("no certificate", None),
    Caller("unknown certificate", "intruder"),
    Caller("client, no token", "client"),
    Caller("client + GP", "client", "gp", GP),
    Caller("client + GP in training", "client", "trainee", Role.GP_IN_TRAINING),
    Caller("client + specialist", "client", "specialist", Role.SPECIALIST),
    Caller("client + dentist", "client", "dentist", Role.DENTIST),
    Caller("client + pharmacist", "client", "pharmacist", Role.PHARMACIST),
    Caller("client + pharmacy session", "client", "pharmacy", Role.PHARMACY),
    Caller(
        "client + person under the GP's mandate",
        "client",
        "secretary_for_gp",
        Role.GENERAL_PRACTITIONER,
        True,
    ),
    Caller("client + person without mandate", "client", "secretary", None, provider=False),
    Caller("hub", "hub"),
    Caller("ehealth", "ehealth"),
    Caller("insurer 100", "oa-100"),
    Caller("insurer 200 (another insurer)", "oa-200"),
    Caller("back office", "backoffice"),
    Caller("admin", "admin"),
    Caller("admin + GP token", "admin", "gp", GP),
]


@dataclass(frozen=True)
class Expected:
    status: grpc.StatusCode | None  # None: admitted by the trust layer
    reason: str = ""


def expected(policy: Policy, caller: Caller) -> Expected:
    """What the trust table says this caller gets (an independent reading of trust.toml)."""
    if caller.identity is None:
        return Expected(grpc.StatusCode.UNAVAILABLE)  # the TLS handshake fails: no answer at all
    kind = Peer.from_name(caller.identity).certificate
    grant = policy.grants.get(kind) if kind is not None else None
    if grant is None:
        return Expected(grpc.StatusCode.PERMISSION_DENIED, "CERTIFICATE_NOT_ALLOWED")
    if grant.session is SessionNeed.NONE:
        return Expected(None)
    if not caller.token:
        return Expected(grpc.StatusCode.UNAUTHENTICATED, "MISSING_TOKEN")
    if caller.mandated and grant.session is SessionNeed.PROVIDER:
        return Expected(grpc.StatusCode.PERMISSION_DENIED, "MANDATE_NOT_ALLOWED")
    if caller.mandated and grant.service not in {service_name(s) for s in MANDATED}:
        return Expected(grpc.StatusCode.PERMISSION_DENIED, "MANDATE_NOT_COVERING")
    if not caller.provider:
        return Expected(grpc.StatusCode.PERMISSION_DENIED, "MANDATE_REQUIRED")
    if grant.roles and caller.role not in grant.roles:
        return Expected(grpc.StatusCode.PERMISSION_DENIED, "PROVIDER_NOT_ENTITLED")
    return Expected(None)


def methods() -> Iterator[tuple[str, Any, Any, bool]]:
    """(full method name, request class, response class, server-streaming) of every RPC in protos/."""
    for module in MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                yield (
                    f"/{service.full_name}/{method.name}",
                    message_factory.GetMessageClass(method.input_type),
                    message_factory.GetMessageClass(method.output_type),
                    method.server_streaming,
                )


async def call(
    mesh: TlsMesh, method: str, request_type: Any, response_type: Any, streaming: bool, caller: Caller
) -> tuple[grpc.StatusCode, str, int | None]:
    """Call ``method`` with an empty request as ``caller``: (status, reason, first MyCareNet code)."""
    service = method.split("/")[1]
    process = PROCESS_OF_SERVICE.get(service) or PROCESS[service.rsplit(".", 1)[0]]
    channel = mesh.channel(process, caller.identity)
    metadata = (("authorization", f"Bearer {mesh.tokens[caller.token]}"),) if caller.token else ()
    serialize, deserialize = request_type.SerializeToString, response_type.FromString
    try:
        if streaming:
            stream = channel.unary_stream(
                method, request_serializer=serialize, response_deserializer=deserialize
            )
            it = stream(request_type(), metadata=metadata, timeout=1.0)
            async for _ in it:
                break
            it.cancel()
        else:
            unary = channel.unary_unary(
                method, request_serializer=serialize, response_deserializer=deserialize
            )
            await unary(request_type(), metadata=metadata, timeout=5.0)
    except grpc.RpcError as error:
        parsed = parse_rpc_error(error)
        return parsed.status, parsed.reason, parsed.code
    return grpc.StatusCode.OK, "", None


async def test_every_rpc_of_every_service_for_every_kind_of_caller(tmp_path: Path) -> None:
    policies = TABLE.policies
    failures: list[str] = []
    seen = 0
    async with tls_mesh(tmp_path, MANDATED) as mesh:
        for method, request_type, response_type, streaming in methods():
            policy = policies[method]
            for caller in CALLERS:
                want = expected(policy, caller)
                status, reason, code = await call(
                    mesh, method, request_type, response_type, streaming, caller
                )
                seen += 1
                where = f"{method} as {caller.label}: got {status.name} {reason}"
                if want.status is None:
                    refused_here = status is grpc.StatusCode.UNAUTHENTICATED or (
                        status is grpc.StatusCode.PERMISSION_DENIED and reason in TRUST_REASONS
                    )
                    if refused_here or status is grpc.StatusCode.UNAVAILABLE:
                        failures.append(f"{where}, expected admitted")
                    if status is grpc.StatusCode.INTERNAL or status is grpc.StatusCode.UNKNOWN:
                        failures.append(f"{where} on an empty request")
                    continue
                if status is not want.status or (want.reason and reason != want.reason):
                    failures.append(f"{where}, expected {want.status.name} {want.reason}")
                elif want.reason in TRUST_REASONS - {"CERTIFICATE_NOT_ALLOWED"} and code != 140:
                    failures.append(f"{where}: the refusal carries no MyCareNet code 140 (got {code})")
            await asyncio.sleep(0)
    assert seen == len(policies) * len(CALLERS)
    assert not failures, f"{len(failures)} of {seen} answers differ from the trust table:\n" + "\n".join(
        failures
    )
