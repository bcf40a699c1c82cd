"""Issue 14, invoicing from the provider's side, through the in-process mesh: a GP's software plays S1 on its
own (notify, then its eFact or eAttest for next year's first contact gives the prolongation and the
GMD-EXTENSION, with no back-office call); the check after payment (a notification whose contact never comes
is recovered after the period, with a message; one whose contact comes is not); a batch spanning insurers,
a bad line rejected with its code while the others are accepted, a re-posted batch without a second
effect, bad input and wrong callers refused."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from sqlalchemy import func, select

from mycarenet_core.codes import McnCode
from mycarenet_core.dates import to_proto
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import mailbox_service_pb2 as mbx
from mycarenet_core.gen.mycarenet.ehealth.v1 import auth_pb2, mandate_pb2
from mycarenet_core.gen.mycarenet.invoicing.v1 import invoicing_service_pb2 as inv
from mycarenet_core.gen.mycarenet.invoicing.v1 import invoicing_service_pb2_grpc as inv_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import oa_invoicing_service_pb2 as oainv
from mycarenet_core.gen.mycarenet.oa.v1 import oa_invoicing_service_pb2_grpc as oainv_grpc
from mycarenet_core.identifiers import make_niss
from oa_node import models as m
from tests.hub.helpers import notify_request, rejected
from tests.hub.mesh import NOW, TODAY, Mesh, Person, bearer, running_mesh

pytestmark = pytest.mark.asyncio(loop_scope="function")

EUR = common_pb2.Money(currency_code="EUR", amount="30.00")


@pytest_asyncio.fixture(loop_scope="function")
async def mesh(tmp_path: object) -> AsyncIterator[Mesh]:
    async with running_mesh(tmp_path, insurers=("100", "200")) as running:  # type: ignore[arg-type]
        yield running


def invoicing(mesh: Mesh) -> inv_grpc.InvoicingServiceAsyncStub:
    return inv_grpc.InvoicingServiceStub(mesh.channel(mesh.hub_port))


def line(number: int, niss: str, provider: Person, on: dt.date, code: str = "101010") -> inv.InvoiceLine:
    return inv.InvoiceLine(
        line_number=number,
        patient_niss=niss,
        provider_inami=provider.inami,
        contact_date=to_proto(on),
        nomenclature_code=code,
        amount=EUR,
    )


async def messages(
    mesh: Mesh, token: str, kind: dmg_pb2.MessageKind.ValueType
) -> list[dmg_pb2.MailboxMessage]:
    answer = await mesh.mailbox.GetMessages(
        mbx.GetMessagesRequest(kinds=[kind]), metadata=bearer(token), timeout=5
    )
    return list(answer.messages)


async def wait_for(
    mesh: Mesh, token: str, kind: dmg_pb2.MessageKind.ValueType, count: int
) -> list[dmg_pb2.MailboxMessage]:
    deadline = time.monotonic() + 15
    while len(found := await messages(mesh, token, kind)) < count:
        assert time.monotonic() < deadline, f"{len(found)} messages of kind {kind}, {count} expected"
        await asyncio.sleep(0.1)
    return found


def move_to(mesh: Mesh, day: dt.date) -> None:
    mesh.clock.set(dt.datetime.combine(day, NOW.timetz()))


async def fee_of(mesh: Mesh, code: str, niss: str, kind: str) -> list[m.PaymentRow]:
    async with mesh.oas[code].sessions() as session:
        rows = await session.execute(
            select(m.PaymentRow).where(m.PaymentRow.patient == niss, m.PaymentRow.kind == kind)  # type: ignore[arg-type]
        )
        return list(rows.scalars())


async def test_s1_played_by_the_gp_alone_through_efact(mesh: Mesh) -> None:
    gp_b = mesh.people["gp_b"]
    patient = mesh.members["p100"].niss
    token = await mesh.login(gp_b)
    await mesh.dmg.NotifyDmg(
        notify_request(patient, "s1-notify", TODAY - dt.timedelta(days=1)), metadata=bearer(token), timeout=5
    )
    move_to(mesh, dt.date(2026, 1, 20))
    token = await mesh.login(gp_b)
    answer = await invoicing(mesh).PostInvoiceBatch(
        inv.PostInvoiceBatchRequest(
            requester_reference="invoice-2026-001", lines=[line(1, patient, gp_b, dt.date(2026, 1, 12))]
        ),
        metadata=bearer(token),
        timeout=10,
    )
    assert answer.technical_ack.result == dmg_pb2.TECHNICAL_ACK_RESULT_SUCCESS
    assert answer.technical_ack.reference.startswith("EFACT-")
    assert list(answer.insurer_codes) == ["100"]
    [reply] = await wait_for(mesh, token, dmg_pb2.MESSAGE_KIND_INVOICE_ANSWER, 1)
    assert reply.invoice_answer.result == dmg_pb2.INVOICE_LINE_RESULT_ACCEPTED
    assert reply.invoice_answer.hub_reference == answer.technical_ack.reference
    assert (reply.recipient_inami, reply.requester_reference) == (gp_b.inami, "invoice-2026-001")
    [extension] = await wait_for(mesh, token, dmg_pb2.MESSAGE_KIND_EXTENSION, 1)
    assert extension.extension.new_end_date == to_proto(dt.date(2028, 12, 31))
    assert extension.extension.contact_date == to_proto(dt.date(2026, 1, 12))
    [prolongation] = await fee_of(mesh, "100", patient, "ACCELERATED_PROLONGATION")
    assert (prolongation.year, prolongation.beneficiary) == (2026, gp_b.inami)

    # the same batch again: the same acknowledgement, no second line, no second answer or fee
    again = await invoicing(mesh).PostInvoiceBatch(
        inv.PostInvoiceBatchRequest(
            requester_reference="invoice-2026-001", lines=[line(1, patient, gp_b, dt.date(2026, 1, 12))]
        ),
        metadata=bearer(token),
        timeout=10,
    )
    assert again.technical_ack.reference == answer.technical_ack.reference
    await asyncio.sleep(0.5)
    assert len(await messages(mesh, token, dmg_pb2.MESSAGE_KIND_INVOICE_ANSWER)) == 1
    assert len(await fee_of(mesh, "100", patient, "ACCELERATED_PROLONGATION")) == 1
    async with mesh.oas["100"].sessions() as session:
        stored = await session.execute(select(func.count()).select_from(m.InvoiceLineRow))
        assert stored.scalar_one() == 1
    # the same reference for another batch: 158, nothing stored
    error = await rejected(
        invoicing(mesh).PostInvoiceBatch(
            inv.PostInvoiceBatchRequest(
                requester_reference="invoice-2026-001", lines=[line(1, patient, gp_b, dt.date(2026, 1, 13))]
            ),
            metadata=bearer(token),
            timeout=10,
        )
    )
    assert error.code == McnCode.IDENTIFICATION_INCONSISTENT


async def test_s1_played_by_the_gp_alone_through_eattest(mesh: Mesh) -> None:
    gp_b = mesh.people["gp_b"]
    patient = mesh.members["p200"].niss
    token = await mesh.login(gp_b)
    await mesh.dmg.NotifyDmg(
        notify_request(patient, "s1-att-notify", TODAY - dt.timedelta(days=1)),
        metadata=bearer(token),
        timeout=5,
    )
    move_to(mesh, dt.date(2026, 1, 20))
    token = await mesh.login(gp_b)
    attest = inv.SendAttestRequest(
        requester_reference="attest-1",
        patient_niss=patient,
        provider_inami=gp_b.inami,
        contact_date=to_proto(dt.date(2026, 1, 12)),
        nomenclature_code="101010",
        amount=EUR,
    )
    answer = await invoicing(mesh).SendAttest(attest, metadata=bearer(token), timeout=10)
    assert (answer.insurer_code, answer.replayed, answer.acknowledgement.complete) == ("200", False, True)
    assert len(answer.message_ids) == 1
    [extension] = await wait_for(mesh, token, dmg_pb2.MESSAGE_KIND_EXTENSION, 1)
    assert extension.message_id == answer.message_ids[0]
    assert extension.extension.new_end_date == to_proto(dt.date(2028, 12, 31))
    again = await invoicing(mesh).SendAttest(attest, metadata=bearer(token), timeout=10)
    assert (again.replayed, list(again.message_ids)) == (True, list(answer.message_ids))
    assert len(await fee_of(mesh, "200", patient, "ACCELERATED_PROLONGATION")) == 1
    # the same contact under another reference: a duplicate contact (165), nothing changes
    attest.requester_reference = "attest-2"
    error = await rejected(invoicing(mesh).SendAttest(attest, metadata=bearer(token), timeout=10))
    assert error.code == McnCode.DUPLICATE_CONTACT


async def test_a_batch_spans_insurers_and_a_bad_line_is_rejected_alone(mesh: Mesh) -> None:
    gp_a = mesh.people["gp_a"]
    token = await mesh.login(gp_a)
    p100, p200, mover = (mesh.members[k].niss for k in ("p100", "p200", "mover"))
    day = TODAY - dt.timedelta(days=2)
    lines = [
        line(1, p100, gp_a, day),
        line(2, p200, gp_a, day),
        line(3, p100, gp_a, day, code="999999"),  # not a contact code: rejected by the insurer's rules
        line(4, mover, gp_a, dt.date(2024, 6, 1)),  # the mover was at 100 in 2024: routed there
    ]
    answer = await invoicing(mesh).PostInvoiceBatch(
        inv.PostInvoiceBatchRequest(requester_reference="mixed", lines=lines),
        metadata=bearer(token),
        timeout=10,
    )
    assert list(answer.insurer_codes) == ["100", "200"]
    replies = await wait_for(mesh, token, dmg_pb2.MESSAGE_KIND_INVOICE_ANSWER, 4)
    by_line = {r.invoice_answer.line_number: r for r in replies}
    assert {n: r.insurer_code for n, r in by_line.items()} == {1: "100", 2: "200", 3: "100", 4: "100"}
    results = {n: r.invoice_answer.result for n, r in by_line.items()}
    assert results == {
        1: dmg_pb2.INVOICE_LINE_RESULT_ACCEPTED,
        2: dmg_pb2.INVOICE_LINE_RESULT_ACCEPTED,
        3: dmg_pb2.INVOICE_LINE_RESULT_REJECTED,
        4: dmg_pb2.INVOICE_LINE_RESULT_ACCEPTED,
    }
    assert by_line[3].invoice_answer.error_code == McnCode.VALUE_NOT_ALLOWED
    async with mesh.oas["100"].sessions() as session:
        contacts = (await session.execute(select(m.ContactRow))).scalars().all()
    assert sorted((c.niss, c.contact_date) for c in contacts) == sorted(
        [(p100, day), (mover, dt.date(2024, 6, 1))]
    )
    # the batch posted again with its second line (insurer 200's first) changed: 158, on that line
    lines[1] = line(2, p200, gp_a, day - dt.timedelta(days=1))
    error = await rejected(
        invoicing(mesh).PostInvoiceBatch(
            inv.PostInvoiceBatchRequest(requester_reference="mixed", lines=lines),
            metadata=bearer(token),
            timeout=10,
        )
    )
    assert error.code == McnCode.IDENTIFICATION_INCONSISTENT
    assert [v.field for v in error.violations] == ["lines[1]"]


async def test_bad_input_changes_nothing_and_wrong_callers_are_refused(mesh: Mesh) -> None:
    gp_a, specialist, dentist = (mesh.people[k] for k in ("gp_a", "specialist", "dentist"))
    p100 = mesh.members["p100"].niss
    token = await mesh.login(gp_a)
    bad = [
        line(1, "12345678901", gp_a, TODAY),  # bad check digit
        line(1, p100, gp_a, TODAY + dt.timedelta(days=1)),  # repeated number, in the future
        line(3, p100, mesh.people["gp_b"], TODAY),  # another physician's contact
    ]
    error = await rejected(
        invoicing(mesh).PostInvoiceBatch(
            inv.PostInvoiceBatchRequest(requester_reference="bad", lines=bad),
            metadata=bearer(token),
            timeout=5,
        )
    )
    assert error.status is grpc.StatusCode.INVALID_ARGUMENT
    paths = {v.field for v in error.violations}
    assert {"lines[0].patient_niss", "lines[1].line_number", "lines[1].contact_date"} <= paths
    assert "lines[2].provider_inami" in paths
    too_many = [line(i + 1, p100, gp_a, TODAY) for i in range(501)]
    error = await rejected(
        invoicing(mesh).PostInvoiceBatch(
            inv.PostInvoiceBatchRequest(requester_reference="huge", lines=too_many),
            metadata=bearer(token),
            timeout=10,
        )
    )
    assert error.status is grpc.StatusCode.INVALID_ARGUMENT
    for code in ("100", "200"):
        async with mesh.oas[code].sessions() as session:
            count = await session.execute(select(func.count()).select_from(m.InvoiceLineRow))
            assert count.scalar_one() == 0
    # a dentist bills no medical contact; no session at all; the OA's own service refuses provider software
    error = await rejected(
        invoicing(mesh).PostInvoiceBatch(
            inv.PostInvoiceBatchRequest(requester_reference="d", lines=[line(1, p100, dentist, TODAY)]),
            metadata=bearer(await mesh.login(dentist)),
            timeout=5,
        )
    )
    assert error.status is grpc.StatusCode.PERMISSION_DENIED
    error = await rejected(
        invoicing(mesh).SendAttest(inv.SendAttestRequest(requester_reference="x"), timeout=5)
    )
    assert error.status is grpc.StatusCode.UNAUTHENTICATED
    direct = oainv_grpc.OaInvoicingServiceStub(mesh.channel(mesh.oa_ports["100"]))
    error = await rejected(direct.AcceptInvoiceLines(oainv.AcceptInvoiceLinesRequest(), timeout=5))
    assert error.status is grpc.StatusCode.PERMISSION_DENIED
    # a specialist bills his own contact (accepted by the hub, answered by the insurer)
    spec_token = await mesh.login(specialist)
    answer = await invoicing(mesh).PostInvoiceBatch(
        inv.PostInvoiceBatchRequest(
            requester_reference="spec-1", lines=[line(1, p100, specialist, TODAY, code="102011")]
        ),
        metadata=bearer(spec_token),
        timeout=10,
    )
    assert answer.technical_ack.result == dmg_pb2.TECHNICAL_ACK_RESULT_SUCCESS


async def test_the_check_after_payment_recovers_a_fee_whose_contact_never_comes(mesh: Mesh) -> None:
    gp_a, gp_b = mesh.people["gp_a"], mesh.people["gp_b"]
    billed, unbilled = mesh.members["p100"].niss, mesh.members["mover"].niss
    token_a, token_b = await mesh.login(gp_a), await mesh.login(gp_b)
    contact = TODAY - dt.timedelta(days=1)
    await mesh.dmg.NotifyDmg(notify_request(billed, "chk-a", contact), metadata=bearer(token_a), timeout=5)
    await mesh.dmg.NotifyDmg(notify_request(unbilled, "chk-b", contact), metadata=bearer(token_b), timeout=5)
    await invoicing(mesh).PostInvoiceBatch(
        inv.PostInvoiceBatchRequest(requester_reference="chk-inv", lines=[line(1, billed, gp_a, contact)]),
        metadata=bearer(token_a),
        timeout=10,
    )
    await wait_for(mesh, token_a, dmg_pb2.MESSAGE_KIND_INVOICE_ANSWER, 1)
    checks = {code: mesh.oas[code].fee_checks for code in ("100", "200")}
    assert [await c.run_once() for c in checks.values()] == [0, 0]  # not due yet
    deadline = dt.date(2027, 3, 31)  # the contact of 03.03.2025: 24 months after the end of its month
    move_to(mesh, deadline)
    assert [await c.run_once() for c in checks.values()] == [0, 0]
    move_to(mesh, deadline + dt.timedelta(days=1))
    assert [await c.run_once() for c in checks.values()] == [0, 1]  # only B's, at 200 (the mover's insurer)
    assert [await c.run_once() for c in checks.values()] == [0, 0]  # once
    [fee_b] = await fee_of(mesh, "200", unbilled, "NOTIFICATION")
    assert (fee_b.recovered, fee_b.recovered_on) == (True, deadline + dt.timedelta(days=1))
    [fee_a] = await fee_of(mesh, "100", billed, "NOTIFICATION")
    assert not fee_a.recovered
    token_b = await mesh.login(gp_b)
    [message] = await wait_for(mesh, token_b, dmg_pb2.MESSAGE_KIND_FEE_RECOVERY, 1)
    recovery = message.fee_recovery
    assert (message.insurer_code, message.recipient_inami) == ("200", gp_b.inami)
    assert (recovery.patient.niss, recovery.notification_reference) == (unbilled, "chk-b")
    assert recovery.payment.recovered
    assert recovery.contact_date == to_proto(contact)
    assert await messages(mesh, await mesh.login(gp_a), dmg_pb2.MESSAGE_KIND_FEE_RECOVERY) == []


async def test_a_third_party_mandated_for_invoicing_posts_for_the_physician(mesh: Mesh) -> None:
    gp_a = mesh.people["gp_a"]
    p100 = mesh.members["p100"].niss
    office = Person("office", "", make_niss(dt.date(1986, 6, 6), 611))
    other = Person("other", "", make_niss(dt.date(1987, 7, 7), 613))
    for person, services in (
        (office, [mandate_pb2.MANDATED_SERVICE_INVOICING]),
        (other, [mandate_pb2.MANDATED_SERVICE_DMG_CONSULT]),
    ):
        await mesh.register_person(person)
        await mesh.mandate(gp_a, person.niss, services)

    async def session(person: Person) -> str:
        return await mesh.login(
            person, kind=auth_pb2.SUBJECT_KIND_PERSON, subject_id=person.niss, principal=gp_a.inami
        )

    batch = inv.PostInvoiceBatchRequest(requester_reference="office-1", lines=[line(1, p100, gp_a, TODAY)])
    answer = await invoicing(mesh).PostInvoiceBatch(batch, metadata=bearer(await session(office)), timeout=10)
    assert answer.technical_ack.result == dmg_pb2.TECHNICAL_ACK_RESULT_SUCCESS
    [reply] = await wait_for(mesh, await mesh.login(gp_a), dmg_pb2.MESSAGE_KIND_INVOICE_ANSWER, 1)
    assert reply.invoice_answer.result == dmg_pb2.INVOICE_LINE_RESULT_ACCEPTED  # in the principal's mailbox
    error = await rejected(
        invoicing(mesh).PostInvoiceBatch(batch, metadata=bearer(await session(other)), timeout=10)
    )
    assert (error.reason, error.code) == ("MANDATE_NOT_COVERING", McnCode.PROVIDER_NOT_ENTITLED)


async def test_no_acknowledgement_while_an_insurer_of_the_batch_is_down_then_a_repost_completes(
    mesh: Mesh,
) -> None:
    """An invoice counts as received only once acknowledged (seed 001 annex 4): with insurer 200 down the
    batch gets no acknowledgement (UNAVAILABLE), though insurer 100 stored its line; posted again once 200 is
    back, it is acknowledged, and 100's line is neither stored nor answered twice."""
    gp_a = mesh.people["gp_a"]
    token = await mesh.login(gp_a)
    day = TODAY - dt.timedelta(days=1)
    batch = inv.PostInvoiceBatchRequest(
        requester_reference="while-down",
        lines=[line(1, mesh.members["p100"].niss, gp_a, day), line(2, mesh.members["p200"].niss, gp_a, day)],
    )
    await mesh.stop_oa("200")
    error = await rejected(invoicing(mesh).PostInvoiceBatch(batch, metadata=bearer(token), timeout=10))
    assert error.status is grpc.StatusCode.UNAVAILABLE
    await mesh.start_oa("200")
    deadline = time.monotonic() + 15
    while True:  # as provider software does: post again after the retry delay until acknowledged
        try:
            answer = await invoicing(mesh).PostInvoiceBatch(batch, metadata=bearer(token), timeout=10)
            break
        except grpc.aio.AioRpcError as failed:
            if failed.code() is not grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
    assert answer.technical_ack.result == dmg_pb2.TECHNICAL_ACK_RESULT_SUCCESS
    replies = await wait_for(mesh, token, dmg_pb2.MESSAGE_KIND_INVOICE_ANSWER, 2)
    assert sorted((r.insurer_code, r.invoice_answer.line_number) for r in replies) == [("100", 1), ("200", 2)]
    await asyncio.sleep(0.5)
    assert len(await messages(mesh, token, dmg_pb2.MESSAGE_KIND_INVOICE_ANSWER)) == 2
    for code in ("100", "200"):
        async with mesh.oas[code].sessions() as session:
            stored = await session.execute(select(func.count()).select_from(m.InvoiceLineRow))
            assert stored.scalar_one() == 1
