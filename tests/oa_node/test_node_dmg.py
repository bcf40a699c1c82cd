"""Consult, notify (idempotency, 158, takeover with a closure), list and enrol against a real node."""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
from node_support import (
    GP_A,
    GP_B,
    INSURER,
    PATIENT,
    PATIENT_2,
    TODAY,
    TRAINEE,
    Node,
    by_niss,
    context,
    d,
    node,
    rpc_error,
    seed,
    snapshot,
    start_node,
    stop_node,
)
from sqlalchemy import func, select, update

from mycarenet_core.db import create_engine
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2, dmg_service_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import oa_dmg_service_pb2 as oa_pb2
from oa_node import models as m

__all__ = ["node"]


async def test_consult_without_then_with_a_holder(node: Node) -> None:
    request = oa_pb2.ConsultDmgRequest(context=context(GP_B), patient=by_niss(PATIENT), request_date=d(TODAY))
    empty = await node.dmg.ConsultDmg(request, timeout=10)
    assert empty.insurer_code == INSURER
    assert empty.patient.niss == PATIENT
    assert not empty.HasField("holding")
    assert not empty.payment_made_this_year

    await node.notify(GP_A)
    found = await node.dmg.ConsultDmg(request, timeout=10)
    assert found.holding.holder.inami == GP_A
    assert found.holding.status == dmg_pb2.HOLDING_STATUS_ACTIVE
    assert found.holding.procedure == dmg_pb2.PROCEDURE_ELECTRONIC
    assert (found.holding.period.start.year, found.holding.period.end.year) == (2024, 2026)
    assert found.payment_made_this_year


async def test_notify_answers_with_payment_then_takeover_closes_and_queues_a_closure(node: Node) -> None:
    first = await node.notify(GP_A, contact=dt.date(2024, 3, 10), reference="a-1")
    assert first.payment == dmg_pb2.PAYMENT_INDICATOR_WITH_PAYMENT
    assert first.holder.inami == GP_A
    assert (first.start_date.month, first.start_date.day) == (3, 10)
    assert not first.HasField("previous_holder")
    assert not first.replayed

    second = await node.notify(GP_B, contact=dt.date(2024, 3, 14), reference="b-1")
    assert second.payment == dmg_pb2.PAYMENT_INDICATOR_WITHOUT_PAYMENT
    assert second.previous_holder.inami == GP_A
    async with node.app.sessions() as session:
        rows = list((await session.execute(select(m.OutboxMessage))).scalars())
    assert [row.recipient_inami for row in rows] == [GP_A]
    message = dmg_pb2.MailboxMessage.FromString(rows[0].payload)
    assert message.kind == dmg_pb2.MESSAGE_KIND_CLOSURE
    assert message.message_id == rows[0].message_id
    assert message.message_id.startswith(f"{INSURER}-")
    assert message.closure.previous_holder.inami == GP_A
    assert (message.closure.end_date.month, message.closure.end_date.day) == (3, 13)
    assert message.closure.new_holder.inami == GP_B
    assert message.requester_reference == "b-1"
    assert not rows[0].delivered


async def test_notify_replay_returns_the_first_answer_without_a_second_effect(node: Node) -> None:
    first = await node.notify(GP_A, reference="same")
    before = await snapshot(node.app)
    again = await node.notify(GP_A, reference="same", today=TODAY + dt.timedelta(days=1))
    assert again.replayed
    again.replayed = False
    assert again == first
    assert await snapshot(node.app) == before


async def test_notify_reusing_a_reference_for_another_request_is_158(node: Node) -> None:
    await node.notify(GP_A, reference="same")
    before = await snapshot(node.app)
    error = await rpc_error(node.notify(GP_A, PATIENT_2, reference="same"))
    assert error.status == grpc.StatusCode.INVALID_ARGUMENT
    assert error.codes == (158,)
    assert error.violations[0].field == "context.requester_reference"
    assert await snapshot(node.app) == before


async def test_the_provider_request_carried_whole_reads_as_its_deprecated_copies(node: Node) -> None:
    """The hub carries the provider's request whole (``request``); a caller sending the deprecated copies of
    its fields is read alike: same answer, a retry recognised across the two forms, violations named as the
    provider's request names its fields."""
    asked = dmg_service_pb2.ConsultDmgRequest(patient=by_niss(PATIENT), request_date=d(TODAY))
    carried = await node.dmg.ConsultDmg(
        oa_pb2.ConsultDmgRequest(context=context(GP_B), request=asked), timeout=10
    )
    copied = await node.dmg.ConsultDmg(
        oa_pb2.ConsultDmgRequest(
            context=context(GP_B), patient=asked.patient, request_date=asked.request_date
        ),
        timeout=10,
    )
    assert carried == copied
    assert carried.patient.niss == PATIENT

    first = await node.notify(GP_A, reference="both-forms")  # the deprecated copies
    before = await snapshot(node.app)
    whole = dmg_service_pb2.NotifyDmgRequest(
        requester_reference="both-forms",
        patient=by_niss(PATIENT),
        contact_date=d(TODAY),
        nomenclature_code="101010",
    )
    again = await node.dmg.NotifyDmg(
        oa_pb2.NotifyDmgRequest(context=context(GP_A, reference="both-forms"), request=whole), timeout=10
    )
    assert again.replayed
    assert again.holder == first.holder
    assert await snapshot(node.app) == before

    whole.contact_date.CopyFrom(common_pb2.Date(year=2024, month=2, day=30))
    error = await rpc_error(
        node.dmg.NotifyDmg(
            oa_pb2.NotifyDmgRequest(context=context(GP_A, reference="bad"), request=whole), timeout=10
        )
    )
    assert error.status == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error.violations] == ["contact_date"]
    assert await snapshot(node.app) == before


async def test_list_holdings_periods_within_the_year_and_payments_paginated(node: Node) -> None:
    await node.notify(GP_A, PATIENT, reference="l-1")
    await node.notify(GP_A, PATIENT_2, reference="l-2")
    request = oa_pb2.ListHoldingsRequest(context=context(GP_A), year=2024, page_size=1)
    page1 = await node.dmg.ListHoldings(request, timeout=10)
    assert len(page1.entries) == 1
    assert page1.next_page_token
    request.page_token = page1.next_page_token
    page2 = await node.dmg.ListHoldings(request, timeout=10)
    assert not page2.next_page_token
    entries = [*page1.entries, *page2.entries]
    assert sorted(e.patient.niss for e in entries) == sorted([PATIENT, PATIENT_2])
    for entry in entries:
        assert entry.insurer_code == INSURER
        assert [(p.start.month, p.start.day, p.end.month, p.end.day) for p in entry.periods] == [
            (3, 15, 12, 31)
        ]
        assert [(p.year, p.kind, p.amount.amount, p.recovered) for p in entry.payments] == [
            (2024, dmg_pb2.PAYMENT_KIND_NOTIFICATION, "35.15", False)
        ]
    other = await node.dmg.ListHoldings(
        oa_pb2.ListHoldingsRequest(context=context(GP_B), year=2024), timeout=10
    )
    assert list(other.entries) == []


async def test_enrol_twice_is_168_and_get_enrolment(node: Node) -> None:
    from node_support import BANK, GP_NOT_ENROLLED

    info = await node.dmg.GetEnrolment(oa_pb2.GetEnrolmentRequest(inami=GP_NOT_ENROLLED), timeout=10)
    assert not info.enrolled
    reply = await node.dmg.EnrolDmg(
        oa_pb2.EnrolDmgRequest(context=context(GP_NOT_ENROLLED), bank_account=BANK), timeout=10
    )
    assert reply.insurer_code == INSURER
    assert (reply.enrolled_since.year, reply.enrolled_since.month, reply.enrolled_since.day) == (2024, 3, 15)
    info = await node.dmg.GetEnrolment(oa_pb2.GetEnrolmentRequest(inami=GP_NOT_ENROLLED), timeout=10)
    assert info.enrolled
    assert info.bank_account.iban == BANK.iban
    error = await rpc_error(
        node.dmg.EnrolDmg(
            oa_pb2.EnrolDmgRequest(context=context(GP_NOT_ENROLLED), bank_account=BANK), timeout=10
        )
    )
    assert error.status == grpc.StatusCode.ALREADY_EXISTS
    assert error.codes == (168,)


async def test_every_request_leaves_an_audit_row(node: Node) -> None:
    """A change's row is written in its transaction; a rejection's and a read's are queued and written in
    bulk (a flush writes them all, also what the background writer had not written yet)."""
    await node.app.audit.flush()
    async with node.app.sessions() as session:
        before = (await session.execute(select(func.count()).select_from(m.AuditRecord))).scalar_one()
    await node.notify(GP_A, reference="audited")
    await rpc_error(node.notify(GP_A, reference="audited", contact=TODAY + dt.timedelta(days=1)))
    consult = oa_pb2.ConsultDmgRequest(context=context(GP_B), patient=by_niss(PATIENT), request_date=d(TODAY))
    await node.dmg.ConsultDmg(consult, timeout=10)
    await node.app.audit.flush()
    assert node.app.audit.queued == 0
    async with node.app.sessions() as session:
        rows = list(
            (await session.execute(select(m.AuditRecord).order_by(m.AuditRecord.id).offset(before))).scalars()  # type: ignore[arg-type]
        )
    assert [(r.rpc, r.outcome, r.requester_inami, r.patient_niss) for r in rows] == [
        ("NotifyDmg", "OK", GP_A, PATIENT),
        ("NotifyDmg", "REJECTED", GP_A, ""),
        ("ConsultDmg", "OK", GP_B, PATIENT),
    ]
    assert rows[1].mycarenet_codes == "158"
    assert rows[0].session_id == "session-1"
    assert rows[0].requester_reference == "audited"
    assert rows[2].status_code == "OK"


async def test_queued_audit_rows_are_written_by_a_clean_stop(pg_admin_url: str, database_url: str) -> None:
    node = await start_node(database_url)
    try:
        await seed(node)
        await node.app.audit.flush()
        consult = oa_pb2.ConsultDmgRequest(
            context=context(GP_A), patient=by_niss(PATIENT), request_date=d(TODAY)
        )
        for _ in range(20):
            await node.dmg.ConsultDmg(consult, timeout=10)
    finally:
        await stop_node(node)
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            stmt = select(func.count()).select_from(m.AuditRecord).where(m.AuditRecord.rpc == "ConsultDmg")
            assert (await conn.execute(stmt)).scalar_one() == 20
    finally:
        await engine.dispose()


async def test_a_trainee_notifies_only_under_the_supervisor_the_cadastre_records(node: Node) -> None:
    """Naming another enrolled GP would make that GP holder without consent: 156, and nothing changes."""
    before = await snapshot(node.app)
    error = await rpc_error(node.notify(TRAINEE, supervisor=GP_B, reference="t-1"))
    assert error.status == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.code) for v in error.violations] == [("supervisor_inami", 156)]
    assert GP_A in error.violations[0].description  # says whom the cadastre records
    assert await snapshot(node.app) == before

    reply = await node.notify(TRAINEE, supervisor=GP_A, reference="t-2")  # the recorded supervisor
    assert reply.holder.inami == GP_A


async def test_a_consult_reads_while_a_writer_holds_the_database(node: Node) -> None:
    """A consult's reads never need a write lock: on PostgreSQL it answers while another connection holds
    the patient's row lock. Its audit row is committed before it answers (issue 17: nothing answered is
    missing from the audit), so on SQLite, whose one write lock another process holds here, it answers
    once that writer commits, and never fails."""
    await node.notify(GP_A, reference="before")
    request = oa_pb2.ConsultDmgRequest(context=context(GP_B), patient=by_niss(PATIENT), request_date=d(TODAY))
    engine = create_engine(str(node.app.engine.url.render_as_string(hide_password=False)))
    try:
        async with engine.begin() as writer:
            await writer.execute(
                update(m.Member)
                .where(m.Member.niss == PATIENT)
                .values(file_version=m.Member.file_version + 1)  # type: ignore[arg-type]
            )
            consult = asyncio.ensure_future(node.dmg.ConsultDmg(request, timeout=10))
            if engine.dialect.name != "sqlite":
                await asyncio.wait_for(asyncio.shield(consult), 5)
        answer = await asyncio.wait_for(consult, 8)
        assert answer.holding.holder.inami == GP_A
    finally:
        await engine.dispose()
    await node.app.audit.flush()
