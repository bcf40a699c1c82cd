"""The mailbox through the real mesh: closures delivered by a real OA relay, isolation between providers,
mandated access, confirm semantics (by id and by hash, twice harmless, foreign ids unknown), duplicates
stored once, pagination and the watch stream; an outbox message that cannot be delivered goes aside."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from mycarenet_core.db import transaction
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import mailbox_service_pb2 as mbx
from mycarenet_core.gen.mycarenet.ehealth.v1 import auth_pb2, mandate_pb2
from mycarenet_core.gen.mycarenet.hub.v1 import mailbox_intake_service_pb2 as intake
from mycarenet_core.identifiers import make_niss
from oa_node import dead_letters
from oa_node.relay import MAX_MESSAGE_BYTES
from oa_node.repositories import OutboxRepository
from tests.hub.helpers import notify_request, rejected
from tests.hub.mesh import NOW, TODAY, Mesh, Person, bearer, running_mesh

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    async with running_mesh(tmp_path_factory.mktemp("mailbox"), insurers=("100", "200")) as running:
        yield running


def closure(message_id: str, recipient: str) -> dmg_pb2.MailboxMessage:
    return dmg_pb2.MailboxMessage(
        message_id=message_id,
        kind=dmg_pb2.MESSAGE_KIND_CLOSURE,
        recipient_inami=recipient,
        closure=dmg_pb2.ClosureMessage(patient=common_pb2.Patient(niss=make_niss(dt.date(1980, 1, 1), 1))),
    )


async def pending(mesh: Mesh, token: str, **kw: object) -> list[dmg_pb2.MailboxMessage]:
    out: list[dmg_pb2.MailboxMessage] = []
    page = ""
    while True:
        answer = await mesh.mailbox.GetMessages(
            mbx.GetMessagesRequest(page_token=page, **kw),  # type: ignore[arg-type]
            metadata=bearer(token),
            timeout=5,
        )
        out += answer.messages
        page = answer.next_page_token
        if not page:
            return out


async def test_a_takeover_sends_a_closure_to_the_previous_holder_through_the_relay(mesh: Mesh) -> None:
    gp_a, gp_b = mesh.people["gp_a"], mesh.people["gp_b"]
    token_a, token_b = await mesh.login(gp_a), await mesh.login(gp_b)
    patient = mesh.members["p200"].niss
    await mesh.dmg.NotifyDmg(
        notify_request(patient, "open-a", TODAY - dt.timedelta(days=3)), metadata=bearer(token_a), timeout=5
    )
    await mesh.dmg.NotifyDmg(notify_request(patient, "take-b"), metadata=bearer(token_b), timeout=5)
    deadline = time.monotonic() + 10
    while not (closures := await pending(mesh, token_a, kinds=[dmg_pb2.MESSAGE_KIND_CLOSURE])):
        assert time.monotonic() < deadline, "no closure reached the mailbox"
        await asyncio.sleep(0.1)
    [message] = closures
    assert (message.insurer_code, message.recipient_inami) == ("200", gp_a.inami)
    assert message.closure.new_holder.inami == gp_b.inami
    assert await pending(mesh, token_b, kinds=[dmg_pb2.MESSAGE_KIND_CLOSURE]) == []  # not B's message
    confirmed = await mesh.mailbox.ConfirmMessages(
        mbx.ConfirmMessagesRequest(message_ids=[message.message_id]), metadata=bearer(token_a), timeout=5
    )
    assert confirmed.confirmed_count == 1


async def test_isolation_confirm_semantics_and_duplicates(mesh: Mesh) -> None:
    gp_a, gp_b = mesh.people["gp_a"], mesh.people["gp_b"]
    token_a, token_b = await mesh.login(gp_a), await mesh.login(gp_b)
    batch = [closure("iso-a1", gp_a.inami), closure("iso-a2", gp_a.inami), closure("iso-b1", gp_b.inami)]
    first = await mesh.intake_for("100").DeliverMessages(
        intake.DeliverMessagesRequest(insurer_code="100", messages=batch), timeout=5
    )
    again = await mesh.intake_for("100").DeliverMessages(
        intake.DeliverMessagesRequest(insurer_code="100", messages=batch[:2]), timeout=5
    )
    assert (list(first.stored_ids), list(first.duplicate_ids)) == (["iso-a1", "iso-a2", "iso-b1"], [])
    assert (list(again.stored_ids), list(again.duplicate_ids)) == ([], ["iso-a1", "iso-a2"])
    mine = [m.message_id for m in await pending(mesh, token_a) if m.message_id.startswith("iso-")]
    theirs = [m.message_id for m in await pending(mesh, token_b) if m.message_id.startswith("iso-")]
    assert (mine, theirs) == (["iso-a1", "iso-a2"], ["iso-b1"])
    a2 = next(m for m in await pending(mesh, token_a) if m.message_id == "iso-a2")
    answer = await mesh.mailbox.ConfirmMessages(
        mbx.ConfirmMessagesRequest(
            message_ids=["iso-a1", "iso-b1", "nope"], content_hashes=[a2.content_hash]
        ),
        metadata=bearer(token_a),
        timeout=5,
    )
    assert (answer.confirmed_count, answer.already_confirmed_count, list(answer.unknown)) == (
        2,
        0,
        ["iso-b1", "nope"],
    )
    twice = await mesh.mailbox.ConfirmMessages(
        mbx.ConfirmMessagesRequest(message_ids=["iso-a1", "iso-a2"]), metadata=bearer(token_a), timeout=5
    )
    assert (twice.confirmed_count, twice.already_confirmed_count) == (0, 2)
    assert [m.message_id for m in await pending(mesh, token_a) if m.message_id.startswith("iso-")] == []
    assert [m.message_id for m in await pending(mesh, token_b) if m.message_id.startswith("iso-")] == [
        "iso-b1"
    ]
    # a redelivery of a confirmed message does not bring it back
    await mesh.intake_for("100").DeliverMessages(
        intake.DeliverMessagesRequest(insurer_code="100", messages=batch), timeout=5
    )
    assert [m.message_id for m in await pending(mesh, token_a) if m.message_id.startswith("iso-")] == []
    # a delivery naming another insurer in a message is refused whole
    wrong = closure("iso-x", gp_a.inami)
    wrong.insurer_code = "300"
    error = await rejected(
        mesh.intake_for("100").DeliverMessages(
            intake.DeliverMessagesRequest(insurer_code="100", messages=[wrong]), timeout=5
        )
    )
    assert error.code == 155


async def test_pagination_oldest_first(mesh: Mesh) -> None:
    gp_b = mesh.people["gp_b"]
    token = await mesh.login(gp_b)
    ids = [f"page-{i:02d}" for i in range(7)]
    await mesh.intake_for("200").DeliverMessages(
        intake.DeliverMessagesRequest(insurer_code="200", messages=[closure(i, gp_b.inami) for i in ids]),
        timeout=5,
    )
    first = await mesh.mailbox.GetMessages(
        mbx.GetMessagesRequest(page_size=3), metadata=bearer(token), timeout=5
    )
    assert len(first.messages) == 3
    assert first.next_page_token
    got = [m.message_id for m in await pending(mesh, token, page_size=3) if m.message_id.startswith("page-")]
    assert got == ids
    error = await rejected(
        mesh.mailbox.GetMessages(
            mbx.GetMessagesRequest(page_token="garbage"), metadata=bearer(token), timeout=5
        )
    )
    assert (error.code, error.violations[0].field) == (111, "page_token")


async def test_a_mandated_secretary_reads_the_principals_mailbox_only_with_the_mailbox_service(
    mesh: Mesh,
) -> None:
    gp_a = mesh.people["gp_a"]
    await mesh.intake_for("100").DeliverMessages(
        intake.DeliverMessagesRequest(insurer_code="100", messages=[closure("mand-1", gp_a.inami)]), timeout=5
    )
    with_mailbox = Person("sec1", "", make_niss(dt.date(1986, 6, 6), 611))
    without = Person("sec2", "", make_niss(dt.date(1987, 7, 7), 613))
    for person, services in (
        (with_mailbox, [mandate_pb2.MANDATED_SERVICE_MAILBOX]),
        (without, [mandate_pb2.MANDATED_SERVICE_DMG_CONSULT]),
    ):
        await mesh.register_person(person)
        await mesh.mandate(gp_a, person.niss, services)
    token = await mesh.login(
        with_mailbox, kind=auth_pb2.SUBJECT_KIND_PERSON, subject_id=with_mailbox.niss, principal=gp_a.inami
    )
    assert "mand-1" in [m.message_id for m in await pending(mesh, token)]
    other = await mesh.login(
        without, kind=auth_pb2.SUBJECT_KIND_PERSON, subject_id=without.niss, principal=gp_a.inami
    )
    error = await rejected(
        mesh.mailbox.GetMessages(mbx.GetMessagesRequest(), metadata=bearer(other), timeout=5)
    )
    assert (error.reason, error.code) == ("MANDATE_NOT_COVERING", 140)


async def test_watch_sends_the_backlog_then_live_messages(mesh: Mesh) -> None:
    gp_c = mesh.people["gp_c"]
    token = await mesh.login(gp_c)
    await mesh.intake_for("100").DeliverMessages(
        intake.DeliverMessagesRequest(insurer_code="100", messages=[closure("watch-1", gp_c.inami)]),
        timeout=5,
    )
    stream = mesh.mailbox.WatchMessages(mbx.WatchMessagesRequest(), metadata=bearer(token))
    received: list[str] = []

    async def read() -> None:
        async for event in stream:
            received.append(event.message.message_id)
            if len(received) == 2:
                return

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.2)
    assert received == ["watch-1"]
    await mesh.intake_for("200").DeliverMessages(
        intake.DeliverMessagesRequest(
            insurer_code="200",
            messages=[closure("watch-2", gp_c.inami), closure("other", mesh.people["gp_b"].inami)],
        ),
        timeout=5,
    )
    await asyncio.wait_for(reader, 2)
    assert received == ["watch-1", "watch-2"]
    stream.cancel()


async def test_a_poisoned_outbox_message_goes_aside_and_the_ones_behind_it_are_delivered(mesh: Mesh) -> None:
    """Issue 17: a message bigger than a delivery may be, and one the hub refuses for good (a reference
    longer than the mailbox keeps), are set aside with their error; the insurer's later messages arrive."""
    gp_d = mesh.people["specialist"]
    token = await mesh.login(gp_d)
    node = mesh.oas["200"]
    assert node.relay is not None
    big = closure("poison-big", gp_d.inami)
    big.requester_reference = "x" * (MAX_MESSAGE_BYTES + 10)
    refused = closure("poison-refused", gp_d.inami)
    refused.requester_reference = "r" * 300  # the hub keeps 200 characters: INVALID_ARGUMENT
    batch = [
        closure("poison-before", gp_d.inami),
        big,
        refused,
        closure("poison-after-1", gp_d.inami),
        closure("poison-after-2", gp_d.inami),
    ]
    async with transaction(node.sessions) as session:
        await OutboxRepository(session).add(
            [
                {
                    "message_id": m.message_id,
                    "recipient_inami": m.recipient_inami,
                    "kind": int(m.kind),
                    "payload": m.SerializeToString(),
                    "created_at": NOW,
                }
                for m in batch
            ]
        )
    node.relay.wake()
    deadline = time.monotonic() + 10
    while (
        len(got := [m.message_id for m in await pending(mesh, token) if m.message_id.startswith("poison")])
        < 3
    ):
        assert time.monotonic() < deadline, f"only {got} reached the mailbox"
        await asyncio.sleep(0.1)
    assert got == ["poison-before", "poison-after-1", "poison-after-2"]
    async with node.sessions() as session:
        repo = OutboxRepository(session)
        dead = await repo.dead()
        assert await repo.backlog() == 0
    assert [(d.message_id, d.error.split(":")[0]) for d in dead] == [
        ("poison-big", f"{big.ByteSize()} bytes"),
        ("poison-refused", "INVALID_ARGUMENT"),
    ]
    assert node.relay.set_aside == 2
    # the operator lists them, and re-queues one (refused again: set aside again, nothing else blocked)
    listed = await dead_letters.list_dead(mesh.db("oa-200"))
    assert [d.message_id for d in listed] == ["poison-big", "poison-refused"]
    assert await dead_letters.requeue(mesh.db("oa-200"), [dead[1].id]) == 1
    node.relay.wake()
    while node.relay.set_aside < 3:
        assert time.monotonic() < deadline + 10, "the re-queued message was not tried again"
        await asyncio.sleep(0.1)
    async with node.sessions() as session:
        assert [d.message_id for d in await OutboxRepository(session).dead()] == [
            "poison-big",
            "poison-refused",
        ]
