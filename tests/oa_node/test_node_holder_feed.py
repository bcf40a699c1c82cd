"""HoldingFeedService against a real node (SQLite and PostgreSQL): every committed change of a patient's DMG
holder is in the log, written in the transaction of the change (a rejected or replayed notification writes
nothing), eHealth reads it a page at a time and watches it live, woken by the commit (no polling)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import grpc
import pytest
from node_support import (
    GP_A,
    GP_B,
    GP_NOT_ENROLLED,
    INSURER,
    PATIENT,
    PATIENT_2,
    TODAY,
    Node,
    d,
    node,
    rpc_error,
)

from mycarenet_core.channels import open_channel
from mycarenet_core.dates import from_proto
from mycarenet_core.gen.mycarenet.oa.v1 import holding_feed_service_pb2 as hf_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import holding_feed_service_pb2_grpc as hf_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import intake_service_pb2 as intake_pb2
from oa_node.feeds import SAFETY_TIMEOUT
from oa_node.holdings import source_reference

__all__ = ["node"]


@pytest.fixture
async def feed(node: Node) -> AsyncIterator[hf_grpc.HoldingFeedServiceStub]:
    """The feed as eHealth calls it (the trust table grants it the holder changes)."""
    async with open_channel(f"127.0.0.1:{node.app.port}", identity="ehealth") as channel:
        yield hf_grpc.HoldingFeedServiceStub(channel)


async def changes(stub: hf_grpc.HoldingFeedServiceStub, after: int = 0) -> hf_pb2.ListHolderChangesResponse:
    return await stub.ListHolderChanges(hf_pb2.ListHolderChangesRequest(after_sequence=after), timeout=10)


def summary(change: hf_pb2.HolderChange) -> tuple[int, str, str, str, dt.date, str]:
    return (
        change.sequence,
        change.patient_niss,
        change.holder_inami,
        change.previous_holder_inami,
        from_proto(change.start_date, "start_date"),
        change.source_reference,
    )


async def test_a_notification_writes_one_change_and_a_takeover_names_the_previous_holder(
    node: Node, feed: hf_grpc.HoldingFeedServiceStub
) -> None:
    assert (await changes(feed)).head_sequence == 0
    await node.notify(GP_A, contact=dt.date(2024, 3, 10), reference="a-1")
    first = await changes(feed)
    assert [summary(c) for c in first.changes] == [
        (1, PATIENT, GP_A, "", dt.date(2024, 3, 10), f"{INSURER}:notify:{GP_A}:a-1")
    ]
    assert first.head_sequence == 1
    assert first.changes[0].change_time.ToDatetime(dt.UTC) == node.clock.now()

    await node.notify(GP_B, contact=dt.date(2024, 3, 14), reference="b-1")
    second = await changes(feed, after=1)
    assert [summary(c) for c in second.changes] == [
        (2, PATIENT, GP_B, GP_A, dt.date(2024, 3, 14), f"{INSURER}:notify:{GP_B}:b-1")
    ]
    assert second.head_sequence == 2


async def test_a_rejected_or_replayed_notification_writes_no_change(
    node: Node, feed: hf_grpc.HoldingFeedServiceStub
) -> None:
    await node.notify(GP_A, reference="once")
    again = await node.notify(GP_A, reference="once")  # the same request: the stored answer
    assert again.replayed
    refused = await rpc_error(node.notify(GP_A, reference="other"))  # already holder: 161
    assert refused.codes == (161,)
    not_enrolled = await rpc_error(node.notify(GP_NOT_ENROLLED, PATIENT_2, reference="n-1"))
    assert not_enrolled.codes == (163,)
    listed = await changes(feed)
    assert [(c.sequence, c.holder_inami) for c in listed.changes] == [(1, GP_A)]
    assert listed.head_sequence == 1


async def test_a_paper_takeover_through_the_intake_is_a_change_too(
    node: Node, feed: hf_grpc.HoldingFeedServiceStub
) -> None:
    last_year = dt.date(2023, 6, 1)  # A holds the DMG since last year; nobody was paid for this one yet
    await node.notify(GP_A, contact=last_year, reference="a-1", today=last_year)
    reply = await node.intake.RegisterPaperAttestation(
        intake_pb2.RegisterPaperAttestationRequest(
            intake_reference="paper-1",
            patient_niss=PATIENT,
            provider_inami=GP_NOT_ENROLLED,
            attestation_date=d(dt.date(2024, 3, 12)),
            submission_date=d(TODAY),
        ),
        timeout=10,
    )
    assert [h.holder.inami for h in reply.effects.holdings] == [GP_A, GP_NOT_ENROLLED]
    listed = await changes(feed, after=1)
    assert [summary(c) for c in listed.changes] == [
        (2, PATIENT, GP_NOT_ENROLLED, GP_A, dt.date(2024, 3, 12), f"{INSURER}:attestation:paper-1")
    ]


async def test_pages_follow_the_sequence_and_bad_positions_are_refused(
    node: Node, feed: hf_grpc.HoldingFeedServiceStub
) -> None:
    for index, niss in enumerate((PATIENT, PATIENT_2)):
        await node.notify(GP_A, niss, reference=f"p-{index}")
    page = await feed.ListHolderChanges(hf_pb2.ListHolderChangesRequest(page_size=1), timeout=10)
    assert [(c.sequence, c.patient_niss) for c in page.changes] == [(1, PATIENT)]
    assert page.head_sequence == 2
    rest = await feed.ListHolderChanges(hf_pb2.ListHolderChangesRequest(after_sequence=1), timeout=10)
    assert [(c.sequence, c.patient_niss) for c in rest.changes] == [(2, PATIENT_2)]
    error = await rpc_error(
        feed.ListHolderChanges(hf_pb2.ListHolderChangesRequest(after_sequence=-1, page_size=-5), timeout=10)
    )
    assert error.status == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.code) for v in error.violations] == [("after_sequence", 130), ("page_size", 130)]


async def test_the_watch_replays_then_delivers_each_change_as_it_is_committed(
    node: Node, feed: hf_grpc.HoldingFeedServiceStub
) -> None:
    await node.notify(GP_A, contact=dt.date(2024, 3, 10), reference="a-1")
    call = feed.WatchHolderChanges(hf_pb2.WatchHolderChangesRequest(after_sequence=0))
    try:
        replayed = await asyncio.wait_for(call.read(), 10)
        assert (replayed.change.sequence, replayed.change.holder_inami) == (1, GP_A)
        for step, (gp, day) in enumerate(((GP_B, 12), (GP_A, 14))):
            started = asyncio.get_running_loop().time()
            await node.notify(gp, contact=dt.date(2024, 3, day), reference=f"live-{step}")
            live = await asyncio.wait_for(call.read(), 10)
            # Woken by the commit: well before the safety timeout that would otherwise end the wait.
            assert asyncio.get_running_loop().time() - started < SAFETY_TIMEOUT / 3
            assert (live.change.sequence, live.change.holder_inami) == (2 + step, gp)
            assert live.change.previous_holder_inami == (GP_A if gp == GP_B else GP_B)
    finally:
        call.cancel()


async def test_the_watch_ends_when_the_node_stops(pg_admin_url: str, database_url: str) -> None:
    from node_support import seed, start_node

    started = await start_node(database_url)
    try:
        await seed(started)
        async with open_channel(f"127.0.0.1:{started.app.port}", identity="ehealth") as channel:
            call = hf_grpc.HoldingFeedServiceStub(channel).WatchHolderChanges(
                hf_pb2.WatchHolderChangesRequest(after_sequence=0)
            )
            reader = asyncio.ensure_future(call.read())
            await asyncio.sleep(0.2)
            assert not reader.done()
            began = asyncio.get_running_loop().time()
            await started.channel.close()
            await started.office.close()
            await started.app.stop(grace=5)
            assert await asyncio.wait_for(reader, 5) is grpc.aio.EOF  # ended, not cut off
            assert asyncio.get_running_loop().time() - began < 3  # did not hold the grace period
    finally:
        await started.app.stop()


def test_source_references_are_deterministic_and_fit_in_100_characters() -> None:
    assert source_reference("100", "notify:11000194003:ref-1") == "100:notify:11000194003:ref-1"
    assert source_reference("100", "attestation:x", 1) == "100:attestation:x#2"
    long = "notify:11000194003:" + "r" * 200
    assert source_reference("100", long) == source_reference("100", long)
    assert len(source_reference("100", long, 3)) <= 100
    assert source_reference("100", long) != source_reference("100", long + "s")
