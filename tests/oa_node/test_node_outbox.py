"""The outbox relay against a small test mailbox that stores each message id once and counts deliveries:
at-least-once delivery with duplicates suppressed by id, back-off while the hub fails, and a node stopped
abruptly mid-delivery then restarted on the same database delivers every message exactly once."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from node_support import GP_A, GP_B, PATIENT, PATIENT_2, TODAY, Node, seed, start_node, stop_node
from sqlalchemy import select

from mycarenet_core.db import transaction
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from mycarenet_core.gen.mycarenet.hub.v1 import mailbox_intake_service_pb2 as mi_pb2
from mycarenet_core.gen.mycarenet.hub.v1 import mailbox_intake_service_pb2_grpc as mi_grpc
from oa_node import models as m
from oa_node.relay import MAX_BATCH_BYTES
from oa_node.repositories import OutboxRepository


class TestMailbox(mi_grpc.MailboxIntakeServiceServicer):
    """Stores each message id once. Modes: "ok"; "fail" (UNAVAILABLE); "store_and_hang" (stores, then
    never answers, so the acknowledgement is lost)."""

    __test__ = False

    def __init__(self) -> None:
        self.mode = "ok"
        self.stored: dict[str, dmg_pb2.MailboxMessage] = {}
        self.deliveries: Counter[str] = Counter()
        self.calls = 0
        self.hung = asyncio.Event()
        self.peers: set[str] = set()  # the certificate kinds the callers declared (x-mcn-peer)
        self.sizes: list[int] = []  # bytes of each delivery received

    async def DeliverMessages(
        self, request: mi_pb2.DeliverMessagesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> mi_pb2.DeliverMessagesResponse:
        self.calls += 1
        self.sizes.append(request.ByteSize())
        self.peers |= {str(v) for k, v in context.invocation_metadata() or () if k == "x-mcn-peer"}
        if self.mode == "fail":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "mailbox down")
        if any(m.message_id.startswith("pre-") for m in request.messages):
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not now, not ever")
        reply = mi_pb2.DeliverMessagesResponse()
        for message in request.messages:
            self.deliveries[message.message_id] += 1
            if message.message_id in self.stored:
                reply.duplicate_ids.append(message.message_id)
            else:
                self.stored[message.message_id] = message
                reply.stored_ids.append(message.message_id)
        if self.mode == "store_and_hang":
            self.hung.set()
            await asyncio.Event().wait()
        return reply


@pytest.fixture
async def mailbox(request: pytest.FixtureRequest) -> AsyncIterator[tuple[TestMailbox, str]]:
    """The test mailbox; ``@pytest.mark.parametrize("mailbox", [N], indirect=True)``: receiving at most N
    bytes a call (gRPC's limit, 4 MiB by default)."""
    box = TestMailbox()
    limit = getattr(request, "param", None)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit)] if limit else None)
    mi_grpc.add_MailboxIntakeServiceServicer_to_server(box, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield box, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def make_messages(node: Node) -> None:
    """Two patients, each taken over twice: four GMD-CLOSURE messages (to A, then to B)."""
    for index, niss in enumerate((PATIENT, PATIENT_2)):
        for step, (gp, days) in enumerate(((GP_A, 6), (GP_B, 4), (GP_A, 2))):
            await node.notify(
                gp, niss, contact=TODAY - dt.timedelta(days=days), reference=f"m-{index}-{step}"
            )


async def outbox(node: Node) -> list[m.OutboxMessage]:
    async with node.app.sessions() as session:
        return list((await session.execute(select(m.OutboxMessage).order_by(m.OutboxMessage.id))).scalars())  # type: ignore[arg-type]


async def until(condition: Any) -> None:
    """Poll ``condition`` (a coroutine function) for up to 10 s."""
    for _ in range(500):
        if await condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{condition.__name__} still false after 10 s")


async def test_relay_delivers_the_outbox_and_marks_it_delivered(
    pg_admin_url: str, database_url: str, mailbox: tuple[TestMailbox, str]
) -> None:
    box, target = mailbox
    node = await start_node(database_url, hub=target)
    try:
        await seed(node)
        await make_messages(node)

        async def all_delivered() -> bool:
            rows = await outbox(node)
            return len(rows) == 4 and all(r.delivered for r in rows)

        await until(all_delivered)
        rows = await outbox(node)
        assert set(box.stored) == {r.message_id for r in rows}
        assert all(count == 1 for count in box.deliveries.values())
        first = box.stored[rows[0].message_id]
        assert first.kind == dmg_pb2.MESSAGE_KIND_CLOSURE
        assert first.recipient_inami == GP_A
        assert first.insurer_code == node.app.insurer_code
        assert box.peers == {"oa-100"}  # the relay stands for this insurer's certificate
    finally:
        await stop_node(node)


async def test_relay_backs_off_while_the_hub_fails_then_delivers(
    pg_admin_url: str, database_url: str, mailbox: tuple[TestMailbox, str]
) -> None:
    box, target = mailbox
    box.mode = "fail"
    node = await start_node(database_url, hub=target)
    try:
        await seed(node)
        await make_messages(node)
        relay = node.app.relay
        assert relay is not None

        async def failed_twice() -> bool:
            return relay.failures >= 2

        await until(failed_twice)
        assert box.stored == {}
        assert not any(r.delivered for r in await outbox(node))
        assert all(r.attempts >= 1 for r in (await outbox(node))[:1])
        box.mode = "ok"

        async def all_delivered() -> bool:
            return all(r.delivered for r in await outbox(node))

        await until(all_delivered)
        assert len(box.stored) == 4
    finally:
        await stop_node(node)


async def test_a_node_stopped_mid_delivery_and_restarted_delivers_each_message_exactly_once(
    pg_admin_url: str, database_url: str, mailbox: tuple[TestMailbox, str]
) -> None:
    box, target = mailbox
    box.mode = "store_and_hang"  # the hub stores the batch but its acknowledgement never arrives
    node = await start_node(database_url, hub=target)
    try:
        await seed(node)
        await make_messages(node)
        await asyncio.wait_for(box.hung.wait(), 10)
        ids = [r.message_id for r in await outbox(node)]
        assert len(ids) == 4
        assert not any(r.delivered for r in await outbox(node))
    finally:
        await stop_node(node)  # abrupt: the relay task is cancelled while its call hangs
    assert 1 <= len(box.stored) <= 4

    box.mode = "ok"
    restarted = await start_node(database_url, hub=target, clock=node.clock)
    try:

        async def all_delivered() -> bool:
            return all(r.delivered for r in await outbox(restarted))

        await until(all_delivered)
        assert sorted(box.stored) == sorted(ids)
        resent = [i for i in ids if box.deliveries[i] == 2]
        assert resent, "the batch whose acknowledgement was lost is delivered again"
        assert all(box.deliveries[i] in (1, 2) for i in ids)
        calls = box.calls
    finally:
        await stop_node(restarted)

    again = await start_node(database_url, hub=target, clock=node.clock)
    try:
        await asyncio.sleep(0.3)
        assert box.calls == calls  # nothing left to send
    finally:
        await stop_node(again)


def big_message(message_id: str, size: int) -> dict[str, Any]:
    """An outbox row of a closure to GP A carrying ``size`` characters of reference."""
    body = dmg_pb2.MailboxMessage(
        message_id=message_id,
        kind=dmg_pb2.MESSAGE_KIND_CLOSURE,
        recipient_inami=GP_A,
        requester_reference="r" * size,
    )
    return {
        "message_id": message_id,
        "recipient_inami": GP_A,
        "kind": int(body.kind),
        "payload": body.SerializeToString(),
        "created_at": dt.datetime(2025, 3, 4, tzinfo=dt.UTC),
    }


async def test_batches_are_bounded_in_bytes_and_an_oversized_message_goes_aside(
    pg_admin_url: str, database_url: str, mailbox: tuple[TestMailbox, str]
) -> None:
    """Issue 17: twelve messages of 900 KB (legal, but 10 MB together: over gRPC's 4 MiB limit in one
    delivery) go in deliveries of at most 2 MiB; one of 1.5 MiB is set aside and the ones behind it go on."""
    box, target = mailbox
    node = await start_node(database_url, hub=target)
    try:
        await seed(node)
        relay = node.app.relay
        assert relay is not None

        rows = [big_message(f"big-{i:02d}", 900_000) for i in range(12)]
        rows.insert(5, big_message("big-99", 1_500_000))  # over MAX_MESSAGE_BYTES (1 MiB)
        async with transaction(node.app.sessions) as session:
            await OutboxRepository(session).add(rows)
        relay.wake()

        async def all_delivered() -> bool:
            return len(box.stored) == 12

        await until(all_delivered)
        assert max(box.sizes) <= MAX_BATCH_BYTES + 1024
        assert "big-99" not in box.stored
        left = {r.message_id: r for r in await outbox(node)}
        assert left["big-99"].dead_at is not None
        assert left["big-99"].error.startswith("1500")
        assert not left["big-99"].delivered
        assert relay.set_aside == 1
    finally:
        await stop_node(node)


@pytest.mark.parametrize("mailbox", [800_000], indirect=True)
async def test_messages_the_hub_refuses_for_good_go_aside_and_the_others_are_delivered(
    pg_admin_url: str, database_url: str, mailbox: tuple[TestMailbox, str]
) -> None:
    """A hub whose message limit is lower than the relay's (800 KB): a batch over it is sent again one by
    one, the one message over it alone is set aside; a message the hub refuses with FAILED_PRECONDITION is
    set aside after ``poison_attempts`` failed deliveries (it may have been passing); the rest arrive."""
    box, target = mailbox
    node = await start_node(database_url, hub=target)
    try:
        await seed(node)
        relay = node.app.relay
        assert relay is not None
        relay._poison_attempts = 3  # fewer back-offs than the default 5
        rows = [big_message("m0", 500_000), big_message("m1", 500_000), big_message("m2", 900_000)]
        rows += [big_message("m3", 500_000), big_message("pre-4", 10), big_message("m5", 10)]
        async with transaction(node.app.sessions) as session:
            await OutboxRepository(session).add(rows)
        relay.wake()

        async def all_delivered() -> bool:
            return len(box.stored) == 4

        await until(all_delivered)
        assert sorted(box.stored) == ["m0", "m1", "m3", "m5"]
        left = {r.message_id: r for r in await outbox(node)}
        assert left["m2"].error.startswith("RESOURCE_EXHAUSTED")
        assert left["pre-4"].error == "FAILED_PRECONDITION: not now, not ever"
        assert left["pre-4"].attempts >= 3
        assert relay.set_aside == 2
    finally:
        await stop_node(node)
