"""The hub enforces the trust model (``mycarenet_core/trust.toml``), through the real eHealth, hub and OA
node: no token on any public RPC, roles and mandates as the table says (PERMISSION_DENIED with its reason and
140), the table as the only source of roles, only an insurer's own node delivering its messages (also
without TLS, where the node declares itself), every refusal of the interceptor in the hub's audit, a signed
token lasting more than 12 h refused, and the sessions ended at eHealth — a mandate or a credential revoked,
a provider's validity ended — refused on the next call once the revocation has reached the hub."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import jwt
import pytest
import pytest_asyncio
from google.protobuf import descriptor_pool, message_factory
from sqlmodel import select

from ehealth.models import SigningKeyRow
from hub.app import HubApp
from hub.models import AuditRecord
from mycarenet_core.dates import to_proto
from mycarenet_core.db import create_engine, session_factory
from mycarenet_core.errors import MeshError, parse_rpc_error
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import mailbox_service_pb2 as mbx
from mycarenet_core.gen.mycarenet.ehealth.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    cadastre_pb2,
    cadastre_pb2_grpc,
    mandate_pb2,
    mandate_pb2_grpc,
)
from mycarenet_core.gen.mycarenet.hub.v1 import mailbox_intake_service_pb2 as intake
from mycarenet_core.gen.mycarenet.hub.v1 import mailbox_intake_service_pb2_grpc
from mycarenet_core.identifiers import Role, make_niss
from mycarenet_core.trust import TABLE, Certificate
from tests.hub.helpers import consult_request, notify_request, rejected
from tests.hub.mesh import FAST, TODAY, Mesh, Person, bearer, running_mesh

pytestmark = pytest.mark.asyncio(loop_scope="module")

PUBLIC = sorted(p.method for p in TABLE.policies.values() if p.service.startswith("mycarenet.dmg.v1."))
DELIVER = "/mycarenet.hub.v1.MailboxIntakeService/DeliverMessages"
CONSULT = "/mycarenet.dmg.v1.DmgService/ConsultDmg"
Metadata = tuple[tuple[str, str], ...]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    async with running_mesh(tmp_path_factory.mktemp("trust"), insurers=("100",)) as running:
        yield running


def _types(method: str) -> tuple[Any, Any, bool]:
    """Request class, response class and whether ``method`` streams its answers."""
    service, name = method.strip("/").split("/")
    found = descriptor_pool.Default().FindServiceByName(service).methods_by_name[name]
    request = message_factory.GetMessageClass(found.input_type)
    response = message_factory.GetMessageClass(found.output_type)
    return request, response, found.server_streaming


async def call(channel: grpc.aio.Channel, method: str, metadata: Metadata = ()) -> MeshError:
    """Call any RPC with an empty request; the parsed error it must end with."""
    request, response, streaming = _types(method)
    if streaming:
        stream = channel.unary_stream(
            method, request_serializer=request.SerializeToString, response_deserializer=response.FromString
        )

        async def first() -> None:
            async for _ in stream(request(), metadata=metadata, timeout=5):
                return

        return await rejected(first())
    unary = channel.unary_unary(
        method, request_serializer=request.SerializeToString, response_deserializer=response.FromString
    )
    return await rejected(unary(request(), metadata=metadata, timeout=5))


async def audit_rows(mesh: Mesh, **where: str) -> list[AuditRecord]:
    assert mesh.hub is not None
    await mesh.hub.core.audit.flush()
    async with mesh.hub.core.sessions() as session:
        stmt = select(AuditRecord)
        for column, value in where.items():
            stmt = stmt.where(getattr(AuditRecord, column) == value)
        return list((await session.execute(stmt.order_by(AuditRecord.id))).scalars())  # type: ignore[arg-type]


async def refused_soon(
    attempt: Callable[[], Awaitable[Any]], within: float = 5.0
) -> MeshError:  # the revocation feed arrives in milliseconds: poll briefly, never sleep blindly
    deadline = time.monotonic() + within
    while True:
        try:
            await attempt()
        except grpc.aio.AioRpcError as error:
            return parse_rpc_error(error)
        assert time.monotonic() < deadline, "the hub still accepts the session"
        await asyncio.sleep(0.02)


def consult(mesh: Mesh, metadata: Metadata, reference: str = "t") -> Awaitable[Any]:
    return mesh.dmg.ConsultDmg(
        consult_request(mesh.members["p100"].niss, reference=reference), metadata=metadata, timeout=5
    )


async def secretary_under_mandate(
    mesh: Mesh, principal: str, serial: int, services: list[mandate_pb2.MandatedService.ValueType]
) -> tuple[Person, str, str, str]:
    """A person registered at eHealth, mandated by ``principal`` for ``services`` (one mandate per
    principal and service at a time): (person, key fingerprint, mandate id, session token under it)."""
    giver = mesh.people[principal]
    person = Person(f"secretary of {principal}", "", make_niss(dt.date(1985, 1, 1), serial))
    fingerprint = await mesh.register_person(person)
    mandate_id = await mesh.mandate(giver, person.niss, services)
    token = await mesh.login(
        person, kind=auth_pb2.SUBJECT_KIND_PERSON, subject_id=person.niss, principal=giver.inami
    )
    return person, fingerprint, mandate_id, token


# --- who may call: certificate, token, roles, mandates ------------------------------------------------


async def test_every_public_rpc_without_a_token_is_unauthenticated_and_audited(mesh: Mesh) -> None:
    channel = mesh.channel(mesh.hub_port)
    for method in PUBLIC:
        error = await call(channel, method)
        assert (error.status.name, error.reason) == ("UNAUTHENTICATED", "MISSING_TOKEN"), method
        error = await call(channel, method, (("authorization", "Bearer not-a-token"),))
        assert (error.status.name, error.reason) == ("UNAUTHENTICATED", "MALFORMED"), method
    rows = await audit_rows(mesh, reason="MISSING_TOKEN")
    assert sorted((r.rpc, r.peer, r.outcome) for r in rows) == sorted(
        (m.rsplit("/", 1)[1], "client", "UNAUTHENTICATED") for m in PUBLIC
    )


@pytest.mark.parametrize("identity", ["backoffice", "hub", "admin", "oa-100", "nobody"])
async def test_a_public_rpc_answers_provider_software_only(mesh: Mesh, identity: str) -> None:
    token = bearer(await mesh.login(mesh.people["gp_a"]))
    error = await call(mesh.channel(mesh.hub_port, identity), CONSULT, token)
    assert (error.status.name, error.reason) == ("PERMISSION_DENIED", "CERTIFICATE_NOT_ALLOWED")
    [row] = await audit_rows(mesh, rpc="ConsultDmg", peer=identity, reason="CERTIFICATE_NOT_ALLOWED")
    assert (row.rpc, row.outcome) == ("ConsultDmg", "PERMISSION_DENIED")


async def test_a_role_outside_the_table_is_refused_140_and_audited_with_the_requester(mesh: Mesh) -> None:
    pharmacist = mesh.people["pharmacist"]
    error = await rejected(consult(mesh, bearer(await mesh.login(pharmacist)), "by-pharmacist"))
    assert (error.status.name, error.reason, error.code) == (
        "PERMISSION_DENIED",
        "PROVIDER_NOT_ENTITLED",
        140,
    )
    assert error.metadata["requester_reference"] == "by-pharmacist"
    [row] = await audit_rows(mesh, requester_reference="by-pharmacist")
    assert (row.rpc, row.peer, row.requester_inami, row.outcome, row.reason, row.codes) == (
        "ConsultDmg",
        "client",
        pharmacist.inami,
        "PERMISSION_DENIED",
        "PROVIDER_NOT_ENTITLED",
        "140",
    )


async def test_a_mandate_not_covering_the_service_is_refused_140(mesh: Mesh) -> None:
    _, _, mandate_id, token = await secretary_under_mandate(
        mesh, "gp_a", 701, [mandate_pb2.MANDATED_SERVICE_DMG_CONSULT]
    )
    await consult(mesh, bearer(token))  # inside the mandate
    outside: list[Awaitable[Any]] = [
        mesh.dmg.NotifyDmg(
            notify_request(mesh.members["p100"].niss, "sec-n"), metadata=bearer(token), timeout=5
        ),
        mesh.mailbox.GetMessages(mbx.GetMessagesRequest(), metadata=bearer(token), timeout=5),
        mesh.mailbox.PostPatientList(
            mbx.PostPatientListRequest(requester_reference="sec-l", reference_date=to_proto(TODAY)),
            metadata=bearer(token),
            timeout=5,
        ),
    ]
    for attempt in outside:
        error = await rejected(attempt)
        assert (error.status.name, error.reason, error.code) == (
            "PERMISSION_DENIED",
            "MANDATE_NOT_COVERING",
            140,
        )
    rows = await audit_rows(mesh, mandate_id=mandate_id, reason="MANDATE_NOT_COVERING")
    gp_a = mesh.people["gp_a"].inami
    assert sorted((r.rpc, r.peer, r.requester_inami, r.codes) for r in rows) == [
        ("GetMessages", "client", gp_a, "140"),
        ("NotifyDmg", "client", gp_a, "140"),
        ("PostPatientList", "client", gp_a, "140"),
    ]


async def test_a_session_naming_no_provider_is_refused_mandate_required_140(mesh: Mesh) -> None:
    person = Person("nobody's", "", make_niss(dt.date(1985, 1, 1), 703))
    await mesh.register_person(person)
    token = bearer(await mesh.login(person, kind=auth_pb2.SUBJECT_KIND_PERSON, subject_id=person.niss))
    for attempt in (
        consult(mesh, token),
        mesh.mailbox.GetMessages(mbx.GetMessagesRequest(), metadata=token, timeout=5),
    ):
        error = await rejected(attempt)
        assert (error.status.name, error.reason, error.code) == ("PERMISSION_DENIED", "MANDATE_REQUIRED", 140)
    rows = await audit_rows(mesh, executor_id=person.niss)
    assert sorted((r.rpc, r.requester_inami, r.outcome, r.codes) for r in rows) == [
        ("ConsultDmg", "", "PERMISSION_DENIED", "140"),
        ("GetMessages", "", "PERMISSION_DENIED", "140"),
    ]


async def test_roles_come_from_the_trust_table_only(
    mesh: Mesh, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A hub given a table where only GPs consult refuses the specialist the real table lets in."""
    policy = TABLE.policies[CONSULT]
    client = policy.grants[Certificate.CLIENT]
    narrower = dataclasses.replace(client, roles=frozenset({Role.GENERAL_PRACTITIONER}))
    narrow = dataclasses.replace(policy, grants={Certificate.CLIENT: narrower})
    table = dataclasses.replace(TABLE, policies={**TABLE.policies, CONSULT: narrow})
    assert mesh.ehealth is not None
    other = await HubApp.create(
        database_url=f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('narrow') / 'hub.db'}",
        clock=mesh.clock,
        ehealth_target=f"127.0.0.1:{mesh.ehealth.port}",
        oa_targets={c: f"127.0.0.1:{p}" for c, p in mesh.oa_ports.items()},
        tuning=FAST,
        trust_table=table,
    )
    try:
        port = await other.start("127.0.0.1:0")
        await other.wait_until_synced(10)
        specialist = bearer(await mesh.login(mesh.people["specialist"]))
        await consult(mesh, specialist)  # the real table
        error = await call(mesh.channel(port), CONSULT, specialist)
        assert (error.reason, error.code) == ("PROVIDER_NOT_ENTITLED", 140)
    finally:
        await other.stop(0)


# --- who may deliver mailbox messages -------------------------------------------------------------------


def closure(message_id: str, recipient: str) -> dmg_pb2.MailboxMessage:
    return dmg_pb2.MailboxMessage(
        message_id=message_id, kind=dmg_pb2.MESSAGE_KIND_CLOSURE, recipient_inami=recipient
    )


async def test_only_the_insurers_own_node_delivers_its_messages(mesh: Mesh) -> None:
    gp = mesh.people["gp_a"].inami

    def deliver(identity: str, code: str, message_id: str) -> Awaitable[intake.DeliverMessagesResponse]:
        stub = mailbox_intake_service_pb2_grpc.MailboxIntakeServiceStub(mesh.channel(mesh.hub_port, identity))
        request = intake.DeliverMessagesRequest(insurer_code=code, messages=[closure(message_id, gp)])
        return stub.DeliverMessages(request, timeout=5)

    stored = await deliver("oa-100", "100", "own-100")
    assert list(stored.stored_ids) == ["own-100"]
    error = await rejected(deliver("oa-200", "300", "foreign-300"))
    assert (error.status.name, error.reason) == ("PERMISSION_DENIED", "NOT_THIS_INSURER")
    error = await rejected(deliver("oa-200", "100", "foreign-100"))
    assert (error.status.name, error.reason) == ("PERMISSION_DENIED", "NOT_THIS_INSURER")
    for identity in ("client", "backoffice", "hub", "admin", "ehealth"):
        error = await rejected(deliver(identity, "100", f"by-{identity}"))
        assert (error.status.name, error.reason) == ("PERMISSION_DENIED", "CERTIFICATE_NOT_ALLOWED"), identity
    rows = await audit_rows(mesh, rpc="DeliverMessages")
    assert [(r.peer, r.outcome, r.reason) for r in rows if r.outcome != "OK"] == [
        ("oa-200", "PERMISSION_DENIED", "NOT_THIS_INSURER"),
        ("oa-200", "PERMISSION_DENIED", "NOT_THIS_INSURER"),
        *[
            (i, "PERMISSION_DENIED", "CERTIFICATE_NOT_ALLOWED")
            for i in ("client", "backoffice", "hub", "admin", "ehealth")
        ],
    ]
    token = await mesh.login(mesh.people["gp_a"])
    mine = await mesh.mailbox.GetMessages(mbx.GetMessagesRequest(), metadata=bearer(token), timeout=5)
    assert {m.message_id for m in mine.messages} & {"own-100", "foreign-300", "foreign-100", "by-client"} == {
        "own-100"
    }


# --- which tokens: lifetime, and the sessions ended at eHealth -----------------------------------------


async def test_a_signed_token_lasting_13_hours_is_refused(mesh: Mesh) -> None:
    """Signed with eHealth's own key, but eHealth never issues more than 12 h: refused all the same."""
    token = await mesh.login(mesh.people["gp_a"])
    await consult(mesh, bearer(token))
    kid = jwt.get_unverified_header(token)["kid"]
    engine = create_engine(mesh.db("ehealth"))
    try:
        async with session_factory(engine)() as session:
            key = await session.get(SigningKeyRow, kid)
    finally:
        await engine.dispose()
    assert key is not None
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["exp"] = claims["iat"] + 13 * 3600
    long_lived = jwt.encode(claims, key.private_key_pem, algorithm="EdDSA", headers={"kid": kid})
    error = await rejected(consult(mesh, bearer(long_lived), "too-long"))
    assert (error.status.name, error.reason) == ("UNAUTHENTICATED", "LIFETIME_TOO_LONG")
    [row] = await audit_rows(mesh, requester_reference="too-long")
    assert (row.outcome, row.reason) == ("UNAUTHENTICATED", "LIFETIME_TOO_LONG")


async def test_a_revoked_mandate_stops_its_sessions_on_the_next_call(mesh: Mesh) -> None:
    _, _, mandate_id, token = await secretary_under_mandate(
        mesh, "gp_b", 705, [mandate_pb2.MANDATED_SERVICE_DMG_CONSULT]
    )
    gp = bearer(await mesh.login(mesh.people["gp_b"]))
    await consult(mesh, bearer(token))
    mandates = mandate_pb2_grpc.MandateServiceStub(mesh.ehealth_admin)
    await mandates.RevokeMandate(
        mandate_pb2.RevokeMandateRequest(
            mandate_id=mandate_id, end_date=to_proto(TODAY - dt.timedelta(days=1))
        ),
        timeout=5,
    )
    error = await refused_soon(lambda: consult(mesh, bearer(token)))
    assert (error.status.name, error.reason) == ("UNAUTHENTICATED", "REVOKED")
    await consult(mesh, gp)  # the principal's own session goes on


async def test_a_revoked_credential_stops_its_sessions_on_the_next_call(mesh: Mesh) -> None:
    person, fingerprint, _, token = await secretary_under_mandate(
        mesh, "specialist", 707, [mandate_pb2.MANDATED_SERVICE_DMG_CONSULT]
    )
    await consult(mesh, bearer(token))
    auth = auth_pb2_grpc.AuthServiceStub(mesh.ehealth_admin)
    answer = await auth.RevokeCredential(
        auth_pb2.RevokeCredentialRequest(
            subject=auth_pb2.Subject(kind=auth_pb2.SUBJECT_KIND_PERSON, id=person.niss),
            fingerprint=fingerprint,
        ),
        timeout=5,
    )
    assert (answer.revoked, answer.ended_sessions) == (True, 1)
    error = await refused_soon(lambda: consult(mesh, bearer(token)))
    assert (error.status.name, error.reason) == ("UNAUTHENTICATED", "REVOKED")


async def test_a_provider_whose_validity_ended_is_stopped_on_the_next_call(mesh: Mesh) -> None:
    gp_c = mesh.people["gp_c"]
    await mesh.relate(gp_c, mesh.members["p100"])
    token = bearer(await mesh.login(gp_c))
    others = bearer(await mesh.login(mesh.people["gp_b"]))
    await consult(mesh, token)
    cadastre = cadastre_pb2_grpc.CadastreServiceStub(mesh.ehealth_admin)
    await cadastre.UpsertProvider(
        cadastre_pb2.UpsertProviderRequest(
            provider=cadastre_pb2.CadastreProvider(
                inami=gp_c.inami,
                niss=gp_c.niss,
                first_name=gp_c.name,
                last_name="Test",
                validity=common_pb2.Period(
                    start=to_proto(dt.date(2000, 1, 1)), end=to_proto(TODAY - dt.timedelta(days=1))
                ),
                public_key_pem=gp_c.public_pem,
            )
        ),
        timeout=5,
    )
    error = await refused_soon(lambda: consult(mesh, token))
    assert (error.status.name, error.reason) == ("UNAUTHENTICATED", "REVOKED")
    await consult(mesh, others)


async def test_a_watch_in_progress_ends_revoked_when_its_session_is_ended(mesh: Mesh) -> None:
    gp_b = mesh.people["gp_b"]
    token = await mesh.login(gp_b)
    await mesh.intake_for("100").DeliverMessages(
        intake.DeliverMessagesRequest(insurer_code="100", messages=[closure("watch-b", gp_b.inami)]),
        timeout=5,
    )
    stream = mesh.mailbox.WatchMessages(mbx.WatchMessagesRequest(), metadata=bearer(token))
    async for event in stream:  # the stream is open and serving
        if event.message.message_id == "watch-b":
            break
    await mesh.logout(token)

    async def rest() -> None:
        async for _ in stream:
            pass

    error = await rejected(asyncio.wait_for(rest(), 5))
    assert (error.status.name, error.reason) == ("UNAUTHENTICATED", "REVOKED")
