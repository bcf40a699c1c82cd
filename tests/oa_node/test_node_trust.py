"""The trust model at an insurer node: every RPC answers exactly the certificate kinds the trust table grants
it (here without TLS, each caller declaring its kind as the development mesh does), a refused call changes
nothing and is audited, and provider software never reaches the node."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message_factory import GetMessageClass
from node_support import (
    BANK,
    GP_A,
    GP_NOT_ENROLLED,
    OUTSIDER,
    PATIENT,
    PATIENT_2,
    TODAY,
    Node,
    by_niss,
    context,
    d,
    member,
    node,
    provider,
    rpc_error,
    seed,
    snapshot,
    start_node,
    stop_node,
)
from sqlalchemy import func, select

from mycarenet_core.channels import open_channel
from mycarenet_core.clock import FixedClock
from mycarenet_core.errors import parse_rpc_error
from mycarenet_core.gen.mycarenet.oa.v1 import (
    holding_feed_service_pb2,
    intake_service_pb2,
    membership_service_pb2,
    oa_dmg_service_pb2,
    oa_insurability_service_pb2,
    oa_invoicing_service_pb2,
    reference_data_service_pb2,
)
from mycarenet_core.gen.mycarenet.oa.v1 import oa_dmg_service_pb2 as oa_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import oa_dmg_service_pb2_grpc as oa_grpc
from mycarenet_core.trust import TABLE, Auditing, Peer, Throttling, TrustTable
from oa_node import models as m
from oa_node.app import SERVICE_NAMES, OaNodeApp
from oa_node.servicers import HoldingFeedServicer, OaDmgServicer, Servicer

__all__ = ["node"]

SERVICES = [
    service
    for module in (
        oa_dmg_service_pb2,
        intake_service_pb2,
        membership_service_pb2,
        reference_data_service_pb2,
        holding_feed_service_pb2,
        oa_insurability_service_pb2,
        oa_invoicing_service_pb2,
    )
    for service in module.DESCRIPTOR.services_by_name.values()
]
METHODS: list[MethodDescriptor] = [method for service in SERVICES for method in service.methods]
# Every kind of caller: each certificate of the table, this insurer and another one, and a party the table
# does not know. "" = a plaintext caller that declares nothing (taken for provider software).
CALLERS = ["client", "hub", "ehealth", "oa-100", "oa-200", "backoffice", "admin", "intruder", ""]


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def _allowed(method: MethodDescriptor, caller: str) -> bool:
    certificate = Peer.from_name(caller or "client").certificate
    return certificate is not None and certificate in TABLE.policies[_path(method)].grants


def test_every_rpc_of_the_node_is_in_the_trust_table() -> None:
    served = {_path(method) for method in METHODS}
    in_table = {p for p in TABLE.policies if p.startswith("/mycarenet.oa.v1.")}
    assert served == in_table
    assert {service.full_name for service in SERVICES} == set(SERVICE_NAMES.values())


@pytest.fixture
async def plain_node(tmp_path: Path) -> AsyncIterator[OaNodeApp]:
    app = await OaNodeApp.create(
        insurer_code="100",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'oa.db'}",
        clock=FixedClock(dt.datetime(2024, 3, 15, 10, tzinfo=dt.UTC)),
    )
    await app.start("127.0.0.1:0")
    try:
        yield app
    finally:
        await app.stop()


async def _call(channel: grpc.aio.Channel, method: MethodDescriptor) -> grpc.StatusCode | str:
    """Call ``method`` with an empty request; the status, or the refusal reason when refused."""
    request_type: Any = GetMessageClass(method.input_type)
    response_type: Any = GetMessageClass(method.output_type)
    path = _path(method)
    try:
        if method.server_streaming:
            stream = channel.unary_stream(
                path,
                request_serializer=request_type.SerializeToString,
                response_deserializer=response_type.FromString,
            )(request_type(), timeout=1)
            async for _ in stream:
                break
            stream.cancel()
        else:
            await channel.unary_unary(
                path,
                request_serializer=request_type.SerializeToString,
                response_deserializer=response_type.FromString,
            )(request_type(), timeout=10)
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.PERMISSION_DENIED:
            return parse_rpc_error(error).reason
        return error.code()
    return grpc.StatusCode.OK


async def test_every_rpc_answers_exactly_the_callers_the_table_grants(plain_node: OaNodeApp) -> None:
    """The authorization matrix of the node: 18 RPCs x 9 kinds of caller, against trust.toml."""
    wrong: list[str] = []
    for caller in CALLERS:
        target = f"127.0.0.1:{plain_node.port}"
        async with open_channel(target, identity=caller or None) as channel:
            for method in METHODS:
                outcome = await _call(channel, method)
                refused = outcome == "CERTIFICATE_NOT_ALLOWED"
                if refused == _allowed(method, caller):
                    wrong.append(f"{caller or '(none)'} -> {method.name}: {outcome}")
    assert wrong == []


# --- provider software never reaches the DMG service; the back office never notifies ---------------------


def _dmg_calls() -> dict[str, Callable[[Any], Any]]:
    """A valid request of each OaDmgService RPC (each succeeds when the hub sends it)."""
    return {
        "ConsultDmg": lambda stub: stub.ConsultDmg(
            oa_pb2.ConsultDmgRequest(context=context(GP_A), patient=by_niss(PATIENT), request_date=d(TODAY)),
            timeout=10,
        ),
        "NotifyDmg": lambda stub: stub.NotifyDmg(
            oa_pb2.NotifyDmgRequest(
                context=context(GP_A, reference="trust-1"),
                patient=by_niss(PATIENT_2),
                contact_date=d(TODAY),
                nomenclature_code="101010",
            ),
            timeout=10,
        ),
        "ListHoldings": lambda stub: stub.ListHoldings(
            oa_pb2.ListHoldingsRequest(context=context(GP_A), year=2024), timeout=10
        ),
        "EnrolDmg": lambda stub: stub.EnrolDmg(
            oa_pb2.EnrolDmgRequest(context=context(GP_NOT_ENROLLED), bank_account=BANK), timeout=10
        ),
        "GetEnrolment": lambda stub: stub.GetEnrolment(oa_pb2.GetEnrolmentRequest(inami=GP_A), timeout=10),
    }


def test_the_valid_requests_cover_every_rpc_of_the_dmg_service() -> None:
    names = {m.name for m in oa_dmg_service_pb2.DESCRIPTOR.services_by_name["OaDmgService"].methods}
    assert set(_dmg_calls()) == names


@pytest.mark.parametrize("declared", ["client", None])
async def test_provider_software_is_refused_on_every_dmg_rpc_and_nothing_changes(
    node: Node, declared: str | None
) -> None:
    before = await snapshot(node.app)
    async with open_channel(f"127.0.0.1:{node.app.port}", identity=declared) as channel:
        stub = oa_grpc.OaDmgServiceStub(channel)
        refusals = {name: await rpc_error(call(stub)) for name, call in _dmg_calls().items()}
    assert {name: (e.status, e.reason) for name, e in refusals.items()} == {
        name: (grpc.StatusCode.PERMISSION_DENIED, "CERTIFICATE_NOT_ALLOWED") for name in refusals
    }
    assert await snapshot(node.app) == before
    # The same requests from the hub pass: the refusals were about who called, not what was asked.
    for call in _dmg_calls().values():
        await call(node.dmg)


async def test_the_back_office_cannot_notify_and_the_refusal_is_audited(node: Node) -> None:
    before = await snapshot(node.app)
    async with open_channel(f"127.0.0.1:{node.app.port}", identity="backoffice") as channel:
        error = await rpc_error(_dmg_calls()["NotifyDmg"](oa_grpc.OaDmgServiceStub(channel)))
    assert (error.status, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "CERTIFICATE_NOT_ALLOWED")
    assert "backoffice" in error.message
    assert await snapshot(node.app) == before

    async def audited() -> list[m.AuditRecord]:
        async with node.app.sessions() as session:
            stmt = select(m.AuditRecord).where(m.AuditRecord.outcome == "REFUSED")
            return list((await session.execute(stmt)).scalars())

    for _ in range(100):  # the refusal's audit row is written in the background
        rows = await audited()
        if rows:
            break
        await asyncio.sleep(0.02)
    assert [(r.rpc, r.peer, r.status_code) for r in rows] == [
        ("NotifyDmg", "backoffice", "PERMISSION_DENIED")
    ]
    assert "CERTIFICATE_NOT_ALLOWED" in rows[0].incidents

    reply = await _dmg_calls()["NotifyDmg"](node.dmg)  # the hub may
    assert reply.holder.inami == GP_A


# --- each RPC's audit, as the trust table declares it (oa_node/servicers.py) ------------------------------

RPC_NAMES = {method.name for method in METHODS}


def declared_audit(name: str) -> Auditing | None:
    """The audit the trust table declares for the node's RPC ``name``."""
    (policy,) = [p for p in TABLE.for_service("mycarenet.oa.v1.") if p.name == name]
    return policy.audit


def declaring(audit: Auditing, *names: str) -> TrustTable:
    """The trust table with the node's RPCs ``names`` declaring ``audit`` instead."""
    policies = dict(TABLE.policies)
    for policy in TABLE.for_service("mycarenet.oa.v1."):
        if policy.name in names:
            policies[policy.method] = dataclasses.replace(policy, audit=audit)
    return dataclasses.replace(TABLE, policies=policies)


async def last_audit_id(app: OaNodeApp) -> int:
    async with app.sessions() as session:
        return (await session.execute(select(func.max(m.AuditRecord.id)))).scalar_one() or 0


async def rpc_rows(app: OaNodeApp, after: int) -> list[tuple[str, str]]:
    """(rpc, outcome) of the audit rows of RPCs written after row ``after`` (the node's jobs left out)."""
    async with app.sessions() as session:
        stmt = select(m.AuditRecord).where(m.AuditRecord.id > after).order_by(m.AuditRecord.id)  # type: ignore[arg-type]
        return [(r.rpc, r.outcome) for r in (await session.execute(stmt)).scalars() if r.rpc in RPC_NAMES]


def consult(niss: str) -> oa_pb2.ConsultDmgRequest:
    return oa_pb2.ConsultDmgRequest(context=context(GP_A), patient=by_niss(niss), request_date=d(TODAY))


async def test_each_rpc_declared_call_writes_a_row_named_after_it_and_one_declared_none_writes_none(
    node: Node,
) -> None:
    audited = ("ConsultDmg", "NotifyDmg", "GetEnrolment", "ListHoldings", "UpsertProviders")
    assert {name: declared_audit(name) for name in (*audited, "GetMember", "ListTariffs")} == {
        **dict.fromkeys(audited, Auditing.CALL),
        "GetMember": Auditing.NONE,
        "ListTariffs": Auditing.NONE,
    }
    after = await last_audit_id(node.app)
    await node.dmg.ConsultDmg(consult(PATIENT), timeout=10)
    await node.notify(GP_A, PATIENT_2, reference="named")
    await node.dmg.GetEnrolment(oa_pb2.GetEnrolmentRequest(inami=GP_A), timeout=10)
    await node.dmg.ListHoldings(oa_pb2.ListHoldingsRequest(context=context(GP_A), year=2024), timeout=10)
    await node.reference.UpsertProviders(
        reference_data_service_pb2.UpsertProvidersRequest(providers=[provider(GP_A)]), timeout=10
    )
    await node.members.GetMember(
        membership_service_pb2.GetMemberRequest(patient=by_niss(PATIENT)), timeout=10
    )
    await node.reference.ListTariffs(reference_data_service_pb2.ListTariffsRequest(year=2024), timeout=10)
    missing = membership_service_pb2.GetMemberRequest(patient=by_niss(OUTSIDER))
    assert (await rpc_error(node.members.GetMember(missing, timeout=10))).status == grpc.StatusCode.NOT_FOUND
    assert await rpc_rows(node.app, after) == [(name, "OK") for name in audited]


@pytest.mark.parametrize(
    ("audit", "expected"),
    [
        (
            Auditing.CALL,
            [
                ("ConsultDmg", "OK"),
                ("ConsultDmg", "REJECTED"),
                ("NotifyDmg", "OK"),
                ("NotifyDmg", "REJECTED"),
                ("GetMember", "OK"),
            ],
        ),
        (Auditing.FAILURES, [("ConsultDmg", "REJECTED"), ("NotifyDmg", "REJECTED")]),
        (Auditing.NONE, []),
    ],
)
async def test_the_node_writes_the_rows_its_table_declares(
    pg_admin_url: str, database_url: str, audit: Auditing, expected: list[tuple[str, str]]
) -> None:
    """A read (ConsultDmg, group commit), a change (NotifyDmg, its row in its own transaction) and a read
    the real table does not audit (GetMember), each called once successfully and once not."""
    node = await start_node(
        database_url, trust_table=declaring(audit, "ConsultDmg", "NotifyDmg", "GetMember")
    )
    try:
        await seed(node)
        after = await last_audit_id(node.app)
        await node.dmg.ConsultDmg(consult(PATIENT), timeout=10)
        await rpc_error(node.dmg.ConsultDmg(consult("12345"), timeout=10))
        await node.notify(GP_A, reference="declared")
        await rpc_error(node.notify(GP_A, reference="late", contact=TODAY + dt.timedelta(days=1)))
        request = membership_service_pb2.GetMemberRequest(patient=by_niss(PATIENT))
        await node.members.GetMember(request, timeout=10)
        assert await rpc_rows(node.app, after) == expected
    finally:
        await stop_node(node)


async def test_a_change_declared_call_writes_its_row_in_its_own_transaction(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As durable as the change: the rows of NotifyDmg and UpsertMembers are not the group-commit writer's
    (a read's, ConsultDmg's, is)."""
    assert declared_audit("NotifyDmg") is declared_audit("UpsertMembers") is Auditing.CALL
    writer = node.app.audit.writer
    through_writer: list[str] = []
    write = writer.write

    async def recording(row: dict[str, Any]) -> None:
        through_writer.append(row["rpc"])
        await write(row)

    monkeypatch.setattr(writer, "write", recording)
    after = await last_audit_id(node.app)
    await node.notify(GP_A, PATIENT_2, reference="durable")
    update = membership_service_pb2.UpsertMembersRequest(
        members=[member(PATIENT_2, start=dt.date(2000, 1, 1))]
    )
    await node.members.UpsertMembers(update, timeout=10)
    await node.dmg.ConsultDmg(consult(PATIENT), timeout=10)
    assert await rpc_rows(node.app, after) == [
        ("NotifyDmg", "OK"),
        ("UpsertMembers", "OK"),
        ("ConsultDmg", "OK"),
    ]
    assert through_writer == ["ConsultDmg"]


@pytest.mark.parametrize(
    ("servicer", "policy", "error"),
    [
        (OaDmgServicer, {"throttle": Throttling.CALL}, "throttles nothing"),
        (HoldingFeedServicer, {"audit": Auditing.CALL}, "audits no stream"),
        (HoldingFeedServicer, {"audit": None}, "declares no throttle and audit"),
        (HoldingFeedServicer, None, "not in the trust table"),
    ],
)
def test_a_table_the_node_cannot_follow_is_refused(
    servicer: type[Servicer], policy: dict[str, Any] | None, error: str
) -> None:
    """The node throttles nothing and audits no stream: it does not start rather than ignore the table."""
    name = "ConsultDmg" if servicer is OaDmgServicer else "WatchHolderChanges"
    (method,) = [p.method for p in TABLE.for_service("mycarenet.oa.v1.") if p.name == name]
    policies = dict(TABLE.policies)
    if policy is None:
        del policies[method]
    else:
        policies[method] = dataclasses.replace(policies[method], **policy)
    table = dataclasses.replace(TABLE, policies=policies)
    with pytest.raises(ValueError, match=error):
        servicer(None, SimpleNamespace(call=None), table)  # type: ignore[arg-type]
    servicer(None, SimpleNamespace(call=None), TABLE)  # type: ignore[arg-type]
