"""Invoicing from the provider's side at a real insurer node, on SQLite and PostgreSQL (issue 14): the lines
of an eFact batch stored before the acknowledgement and answered afterwards through the outbox, once; a
medical house's lines for its own physicians; eAttest registered at once; the check after payment."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from node_support import (
    GP_A,
    GP_B,
    HOUSE,
    PATIENT,
    PATIENT_2,
    TODAY,
    Node,
    context,
    d,
    node,
    rpc_error,
    seed,
    start_node,
    stop_node,
)
from sqlalchemy import select

from mycarenet_core.channels import open_channel
from mycarenet_core.clock import FixedClock, OffsetClock, moved_offset
from mycarenet_core.codes import McnCode
from mycarenet_core.errors import unavailable
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from mycarenet_core.gen.mycarenet.invoicing.v1 import invoicing_service_pb2 as inv
from mycarenet_core.gen.mycarenet.oa.v1 import oa_invoicing_service_pb2 as oainv
from mycarenet_core.gen.mycarenet.oa.v1 import oa_invoicing_service_pb2_grpc as oainv_grpc
from mycarenet_core.gen.mycarenet.sandbox.v1 import clock_pb2, clock_pb2_grpc
from oa_node import invoicing
from oa_node import models as m
from oa_node.app import OaNodeApp
from oa_node.invoicing import parse_lines

__all__ = ["node"]

EUR = common_pb2.Money(currency_code="EUR", amount="30.00")


def line(number: int, niss: str, provider: str, on: dt.date) -> inv.InvoiceLine:
    return inv.InvoiceLine(
        line_number=number,
        patient_niss=niss,
        provider_inami=provider,
        contact_date=d(on),
        nomenclature_code="101010",
        amount=EUR,
    )


def stub(node: Node) -> oainv_grpc.OaInvoicingServiceAsyncStub:
    return oainv_grpc.OaInvoicingServiceStub(node.channel)  # the hub's channel


async def answers(node: Node, count: int) -> list[dmg_pb2.MailboxMessage]:
    """The invoice answers in the outbox, once there are ``count``."""
    deadline = time.monotonic() + 10
    while True:
        async with node.app.sessions() as session:
            rows = (
                await session.execute(
                    select(m.OutboxMessage)
                    .where(m.OutboxMessage.kind == dmg_pb2.MESSAGE_KIND_INVOICE_ANSWER)  # type: ignore[arg-type]
                    .order_by(m.OutboxMessage.id)  # type: ignore[arg-type]
                )
            ).scalars()
            found = [dmg_pb2.MailboxMessage.FromString(row.payload) for row in rows]
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"{len(found)} answers, {count} expected"
        await asyncio.sleep(0.05)


async def test_lines_are_stored_then_answered_once(node: Node) -> None:
    request = oainv.AcceptInvoiceLinesRequest(
        context=context(GP_A, reference="batch-1"),
        hub_reference="EFACT-1",
        lines=[line(1, PATIENT, GP_A, TODAY - dt.timedelta(days=3)), line(2, PATIENT_2, GP_A, TODAY)],
    )
    first = await stub(node).AcceptInvoiceLines(request, timeout=10)
    assert (first.accepted_count, first.already_count) == (2, 0)
    found = await answers(node, 2)
    assert [a.invoice_answer.result for a in found] == [dmg_pb2.INVOICE_LINE_RESULT_ACCEPTED] * 2
    assert {a.recipient_inami for a in found} == {GP_A}
    again = await stub(node).AcceptInvoiceLines(request, timeout=10)
    assert (again.accepted_count, again.already_count) == (0, 2)
    changed = oainv.AcceptInvoiceLinesRequest()
    changed.CopyFrom(request)
    changed.lines[1].contact_date.CopyFrom(d(TODAY - dt.timedelta(days=1)))
    error = await rpc_error(stub(node).AcceptInvoiceLines(changed, timeout=10))
    assert error.code == McnCode.IDENTIFICATION_INCONSISTENT
    await asyncio.sleep(0.3)
    assert len(await answers(node, 2)) == 2
    async with node.app.sessions() as session:
        contacts = (await session.execute(select(m.ContactRow))).scalars().all()
        lines = (await session.execute(select(m.InvoiceLineRow))).scalars().all()
    assert sorted(c.niss for c in contacts) == sorted([PATIENT, PATIENT_2])
    assert all(row.answered for row in lines)
    assert len(lines) == 2


async def test_a_medical_house_bills_for_its_members_only(node: Node) -> None:
    request = oainv.AcceptInvoiceLinesRequest(
        context=context(HOUSE, reference="house-1"),
        hub_reference="EFACT-H",
        lines=[line(1, PATIENT, GP_B, TODAY), line(2, PATIENT_2, GP_A, TODAY)],  # GP A is not a member
    )
    await stub(node).AcceptInvoiceLines(request, timeout=10)
    found = {a.invoice_answer.line_number: a.invoice_answer for a in await answers(node, 2)}
    assert found[1].result == dmg_pb2.INVOICE_LINE_RESULT_ACCEPTED
    assert (found[2].result, found[2].error_code) == (
        dmg_pb2.INVOICE_LINE_RESULT_REJECTED,
        McnCode.AUTHOR_MISMATCH,
    )


async def test_an_attest_is_registered_at_once_and_bad_input_is_refused(node: Node) -> None:
    attest = inv.SendAttestRequest(
        requester_reference="att-1",
        patient_niss=PATIENT,
        provider_inami=GP_A,
        contact_date=d(TODAY),
        nomenclature_code="101010",
        amount=EUR,
    )
    call = oainv.RegisterAttestRequest(context=context(GP_A, reference="att-1"), attest=attest)
    assert not (await stub(node).RegisterAttest(call, timeout=10)).replayed
    assert (await stub(node).RegisterAttest(call, timeout=10)).replayed
    bad = oainv.RegisterAttestRequest()
    bad.CopyFrom(call)
    bad.attest.amount.amount = "30,00"
    bad.attest.patient_niss = "123"
    error = await rpc_error(stub(node).RegisterAttest(bad, timeout=10))
    assert error.status is grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in error.violations} >= {"attest.amount.amount", "attest.patient_niss"}


async def test_the_check_after_payment(node: Node) -> None:
    contact = TODAY - dt.timedelta(days=2)
    await node.notify(GP_A, PATIENT, contact=contact, reference="n-unbilled")
    await node.notify(GP_B, PATIENT_2, contact=contact, reference="n-billed")
    await node.contact(GP_B, PATIENT_2, contact, TODAY, "office-1")  # the back office's invoicing counts
    checks = node.app.fee_checks
    assert await checks.run_once() == 0
    # the contact of 13.03.2024 may be invoiced until 31.03.2026 (24 months after the end of its month)
    node.clock.set(dt.datetime.combine(dt.date(2026, 3, 31), dt.time(10), tzinfo=dt.UTC))
    assert await checks.run_once() == 0
    node.clock.set(dt.datetime.combine(dt.date(2026, 4, 1), dt.time(10), tzinfo=dt.UTC))
    assert await checks.run_once() == 1
    assert await checks.run_once() == 0
    async with node.app.sessions() as session:
        fees = {
            p.patient: p
            for p in (
                await session.execute(select(m.PaymentRow).where(m.PaymentRow.kind == "NOTIFICATION"))  # type: ignore[arg-type]
            ).scalars()
        }
        outbox = (
            (
                await session.execute(
                    select(m.OutboxMessage).where(m.OutboxMessage.kind == dmg_pb2.MESSAGE_KIND_FEE_RECOVERY)  # type: ignore[arg-type]
                )
            )
            .scalars()
            .all()
        )
    assert fees[PATIENT].recovered
    assert not fees[PATIENT_2].recovered
    [row] = outbox
    message = dmg_pb2.MailboxMessage.FromString(row.payload)
    assert (message.recipient_inami, message.fee_recovery.notification_reference) == (GP_A, "n-unbilled")
    assert message.fee_recovery.payment.payment_reference == fees[PATIENT].reference


async def test_lines_acknowledged_before_a_stop_are_answered_after_the_restart(database_url: str) -> None:
    """Nothing acknowledged is lost: lines stored by a node that stops before answering them are answered by
    the next start (the acknowledgement is the stored row, not the answer)."""
    clock = FixedClock(dt.datetime(2024, 3, 15, 10, 0, tzinfo=dt.UTC))
    first = await start_node(database_url, clock=clock)
    try:
        await seed(first)
    finally:
        await stop_node(first)
    # Built, never started (no job runs): the acceptance alone, as the servicer would make it.
    app = await OaNodeApp.create(insurer_code="100", database_url=database_url, clock=clock)
    try:
        request = oainv.AcceptInvoiceLinesRequest(
            context=context(GP_A, reference="before-stop"),
            hub_reference="EFACT-S",
            lines=[line(1, PATIENT, GP_A, TODAY)],
        )
        async with app.audit.call("AcceptInvoiceLines", {}) as entry:
            await app.invoicing.accept(parse_lines(request), entry)
        async with app.sessions() as session:
            [row] = (await session.execute(select(m.InvoiceLineRow))).scalars().all()
        assert not row.answered
    finally:
        await app.engine.dispose()
    second = await start_node(database_url, clock=clock)
    try:
        [answer] = await answers(second, 1)
        assert answer.invoice_answer.result == dmg_pb2.INVOICE_LINE_RESULT_ACCEPTED
    finally:
        await stop_node(second)


async def test_the_check_runs_when_the_sandbox_clock_moves(database_url: str) -> None:
    clock = OffsetClock(TODAY)
    started = await start_node(database_url, clock=clock)  # type: ignore[arg-type]
    try:
        await seed(started)
        await started.notify(GP_A, PATIENT, contact=TODAY - dt.timedelta(days=1), reference="n-clock")
        offset = duration_pb2.Duration()
        offset.FromTimedelta(moved_offset(clock.offset, dt.date(2026, 4, 1)))
        async with open_channel(f"127.0.0.1:{started.app.port}", identity="admin") as channel:
            await clock_pb2_grpc.ProcessClockServiceStub(channel).SetOffset(
                clock_pb2.SetOffsetRequest(offset=offset), timeout=30
            )
        deadline = time.monotonic() + 10
        while True:
            async with started.app.sessions() as session:
                [fee] = (
                    (
                        await session.execute(select(m.PaymentRow).where(m.PaymentRow.patient == PATIENT))  # type: ignore[arg-type]
                    )
                    .scalars()
                    .all()
                )
            if fee.recovered:
                break
            assert time.monotonic() < deadline, "the move did not run the check after payment"
            await asyncio.sleep(0.05)
        assert fee.recovered_on == dt.date(2026, 4, 1)
    finally:
        await stop_node(started)


async def test_a_line_that_fails_for_a_passing_reason_stays_pending_and_holds_up_nothing(node: Node) -> None:
    """The database busy for one line: it is not answered as a rejection; the next line is answered, and it
    is answered once the fault is gone (the next pass)."""
    operations = node.app.dmg
    real = operations.register_contact
    failures = {"left": 1}

    async def flaky(event: Any, entry: Any) -> Any:
        if event.niss == PATIENT and failures["left"]:
            failures["left"] -= 1
            raise unavailable("DATABASE_BUSY", "the database is busy")
        return await real(event, entry)

    operations.register_contact = flaky  # type: ignore[method-assign]
    request = oainv.AcceptInvoiceLinesRequest(
        context=context(GP_A, reference="flaky"),
        hub_reference="EFACT-F",
        lines=[line(1, PATIENT, GP_A, TODAY), line(2, PATIENT_2, GP_A, TODAY)],
    )
    await stub(node).AcceptInvoiceLines(request, timeout=10)
    found = await answers(node, 2)
    # the second line was answered first (it did not wait), the first once the fault was gone, accepted
    assert [(a.invoice_answer.line_number, a.invoice_answer.result) for a in found] == [
        (2, dmg_pb2.INVOICE_LINE_RESULT_ACCEPTED),
        (1, dmg_pb2.INVOICE_LINE_RESULT_ACCEPTED),
    ]
    assert failures["left"] == 0


async def test_lines_that_always_fail_do_not_hold_up_those_behind_them(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More failing lines than the worker reads at once: every pass still reaches the lines behind them."""
    monkeypatch.setattr(invoicing, "BATCH", 2)
    operations = node.app.dmg
    real = operations.register_contact

    async def broken(event: Any, entry: Any) -> Any:
        if event.niss == PATIENT:
            raise RuntimeError("a line this node cannot answer")
        return await real(event, entry)

    operations.register_contact = broken  # type: ignore[method-assign]
    days = [TODAY - dt.timedelta(days=n) for n in range(3)]
    request = oainv.AcceptInvoiceLinesRequest(
        context=context(GP_A, reference="poison"),
        hub_reference="EFACT-P",
        lines=[
            *(line(n + 1, PATIENT, GP_A, on) for n, on in enumerate(days)),
            line(4, PATIENT_2, GP_A, TODAY),
        ],
    )
    await stub(node).AcceptInvoiceLines(request, timeout=10)
    found = await answers(node, 1)
    assert [(a.invoice_answer.line_number, a.invoice_answer.patient_niss) for a in found] == [(4, PATIENT_2)]
    async with node.app.sessions() as session:
        pending = (
            await session.execute(select(m.InvoiceLineRow).where(m.InvoiceLineRow.answered == False))  # type: ignore[arg-type]  # noqa: E712
        ).scalars()
        assert sorted(row.line_number for row in pending) == [1, 2, 3]  # left pending, never lost
