"""The register's change log (issue 13: the hub keeps the answers of CheckRelation and follows the register
instead of asking per call): every change of the register — register, revoke, DMG move, end — appends the
relation as it is after the change, in the same transaction; the log is compacted (one entry per relation, at
its latest change), listed after a sequence with the head, watched (replay then live, woken without polling,
ended by the server's stop), read by the hub and the administrator only; a database from v0002 starts with
every relation in it."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from ehealth_support import (
    GP,
    GP2,
    MEDICAL_HOUSE,
    NOW,
    PATIENT,
    PATIENT2,
    Env,
    Stubs,
    from_pdate,
    pdate,
    rpc_error,
)

from ehealth.app import EhealthApp
from mycarenet_core.channels import open_channel
from mycarenet_core.clock import FixedClock
from mycarenet_core.db import create_engine
from mycarenet_core.gen.mycarenet.ehealth.v1 import therapeutic_relation_pb2 as tr
from mycarenet_core.migrations import HISTORIES, upgrade

D = dt.date


async def changes(stubs: Stubs, after: int = 0, size: int = 0) -> tr.ListRelationChangesResponse:
    reply: tr.ListRelationChangesResponse = await stubs.relations.ListRelationChanges(
        tr.ListRelationChangesRequest(after_sequence=after, page_size=size), timeout=10
    )
    return reply


def seen(listed: tr.ListRelationChangesResponse) -> list[tuple[str, str, D | None, D | None]]:
    return [
        (
            c.relation.provider_inami,
            tr.RelationProof.Name(c.relation.proof),
            from_pdate(c.relation.period.start),
            from_pdate(c.relation.period.end),
        )
        for c in listed.changes
    ]


async def register(env: Env, provider: str, start: D, patient: str = PATIENT) -> tr.TherapeuticRelation:
    reply = await env.relations.RegisterRelation(
        tr.RegisterRelationRequest(
            provider_inami=provider,
            patient_niss=patient,
            proof=tr.RELATION_PROOF_EID_READ,
            start_date=pdate(start),
        ),
        timeout=10,
    )
    relation: tr.TherapeuticRelation = reply.relation
    return relation


async def transfer(
    env: Env, new: str, previous: str, start: D, reference: str
) -> tr.TransferDmgRelationResponse:
    reply: tr.TransferDmgRelationResponse = await env.relations.TransferDmgRelation(
        tr.TransferDmgRelationRequest(
            patient_niss=PATIENT,
            new_holder_inami=new,
            previous_holder_inami=previous,
            start_date=pdate(start),
            source_reference=reference,
        ),
        timeout=10,
    )
    return reply


async def test_every_change_of_the_register_enters_the_log_as_it_is_after_it(env: Env) -> None:
    await env.provider(GP)
    await env.provider(GP2)
    assert (await changes(env.hub)).head_sequence == 0

    eid = await register(env, GP, D(2025, 1, 1))
    listed = await changes(env.hub)
    assert seen(listed) == [(GP, "RELATION_PROOF_EID_READ", D(2025, 1, 1), None)]
    first = listed.changes[0]
    assert first.sequence == listed.head_sequence > 0
    assert first.relation.relation_id == eid.relation_id
    assert first.relation.patient_niss == PATIENT
    assert first.change_time.ToDatetime(dt.UTC) == NOW

    # A registration that adds nothing (covered by the relation already there) is no change.
    assert (await register(env, GP, D(2025, 2, 1))).relation_id == eid.relation_id
    assert (await changes(env.hub)).head_sequence == first.sequence

    # A DMG move: the new holder's relation, then (a later move) the old one ended and the new one.
    await transfer(env, GP, "", D(2024, 6, 1), "100:a")
    moved = await transfer(env, GP2, GP, D(2025, 3, 1), "100:b")
    listed = await changes(env.hub, after=first.sequence)
    assert seen(listed) == [
        (GP, "RELATION_PROOF_DMG", D(2024, 6, 1), D(2025, 2, 28)),  # compacted: once, as it is now
        (GP2, "RELATION_PROOF_DMG", D(2025, 3, 1), None),
    ]
    assert listed.changes[1].relation.relation_id == moved.new_relation.relation_id
    head = listed.head_sequence
    assert head == listed.changes[-1].sequence

    # A replayed move changes nothing; a revocation moves the relation to the head of the log.
    assert (await transfer(env, GP2, GP, D(2025, 3, 1), "100:b")).replayed
    assert (await changes(env.hub)).head_sequence == head
    await env.relations.RevokeRelation(
        tr.RevokeRelationRequest(relation_id=eid.relation_id, end_date=pdate(D(2025, 3, 31))), timeout=10
    )
    listed = await changes(env.hub, after=head)
    assert seen(listed) == [(GP, "RELATION_PROOF_EID_READ", D(2025, 1, 1), D(2025, 3, 31))]
    # Revoking again with a later end never lengthens it: no change, nothing appended.
    await env.relations.RevokeRelation(
        tr.RevokeRelationRequest(relation_id=eid.relation_id, end_date=pdate(D(2025, 5, 1))), timeout=10
    )
    assert (await changes(env.hub)).head_sequence == listed.head_sequence

    everything = await changes(env.hub)
    assert len(everything.changes) == 3  # three relations, each once
    sequences = [c.sequence for c in everything.changes]
    assert sequences == sorted(sequences)


async def test_pages_sizes_and_bad_requests(env: Env) -> None:
    await env.provider(GP)
    patients = [PATIENT, PATIENT2]
    for patient in patients:
        await register(env, GP, D(2025, 1, 1), patient)
    one = await changes(env.hub, size=1)
    assert [c.relation.patient_niss for c in one.changes] == [PATIENT]
    assert one.head_sequence > one.changes[0].sequence
    rest = await changes(env.hub, after=one.changes[0].sequence, size=10_000_000)  # capped, not refused
    assert [c.relation.patient_niss for c in rest.changes] == [PATIENT2]
    assert list((await changes(env.hub, after=rest.head_sequence)).changes) == []

    negative = await rpc_error(changes(env.hub, after=-1, size=-1))
    assert negative.status == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.code) for v in negative.violations] == [("after_sequence", 130), ("page_size", 130)]
    stream = env.hub.relations.WatchRelationChanges(
        tr.WatchRelationChangesRequest(after_sequence=-5), timeout=10
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stream.read()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_only_the_hub_and_the_administrator_follow_the_register(env: Env) -> None:
    await env.provider(GP)
    await register(env, GP, D(2025, 1, 1))
    for caller in ("admin", "hub"):
        assert len((await changes(env.as_(caller))).changes) == 1
    for caller in ("client", "oa-300", "backoffice"):
        error = await rpc_error(changes(env.as_(caller)))
        assert (error.status, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "CERTIFICATE_NOT_ALLOWED")
    # The DMG relation moves through the insurers' feeds; the hub no longer moves it.
    error = await rpc_error(
        env.hub.relations.TransferDmgRelation(
            tr.TransferDmgRelationRequest(
                patient_niss=PATIENT,
                new_holder_inami=GP,
                start_date=pdate(D(2025, 1, 1)),
                source_reference="x",
            ),
            timeout=10,
        )
    )
    assert (error.status, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "CERTIFICATE_NOT_ALLOWED")


class StatementCounter:
    """Counts the statements an engine runs (to prove that an idle watch does not poll)."""

    def __init__(self, engines: list[Any]) -> None:
        self.count = 0
        self.engines = [e.sync_engine for e in engines]
        for engine in self.engines:
            sa.event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *args: Any) -> None:
        self.count += 1

    def close(self) -> None:
        for engine in self.engines:
            sa.event.remove(engine, "before_cursor_execute", self._seen)


async def test_watch_replays_then_follows_without_polling(env: Env) -> None:
    await env.provider(GP)
    await env.organisation(MEDICAL_HOUSE, [])
    first = await register(env, GP, D(2025, 1, 1))
    stream = env.hub.relations.WatchRelationChanges(
        tr.WatchRelationChangesRequest(after_sequence=0), timeout=30
    )
    replayed = (await asyncio.wait_for(stream.read(), timeout=5)).change
    assert replayed.relation.relation_id == first.relation_id

    live = asyncio.ensure_future(stream.read())
    await env.app.audit.flush()  # the registrations' audit rows: written now, not while we count
    counter = StatementCounter(env.app.db.engines)
    try:
        await asyncio.sleep(0.5)
        assert not live.done()  # nothing new: the watcher waits ...
        assert counter.count == 0  # ... without asking the database
    finally:
        counter.close()
    started = time.monotonic()
    second = await register(env, MEDICAL_HOUSE, D(2025, 2, 1), PATIENT2)
    change = (await asyncio.wait_for(live, timeout=5)).change
    assert time.monotonic() - started < 2  # woken by the commit
    assert (change.relation.relation_id, change.relation.provider_inami) == (
        second.relation_id,
        MEDICAL_HOUSE,
    )
    assert change.sequence > replayed.sequence
    stream.cancel()

    # A follower that resumes after its position gets only what it missed.
    resumed = env.hub.relations.WatchRelationChanges(
        tr.WatchRelationChangesRequest(after_sequence=replayed.sequence), timeout=30
    )
    assert (
        await asyncio.wait_for(resumed.read(), timeout=5)
    ).change.relation.relation_id == second.relation_id
    resumed.cancel()


async def test_a_stop_ends_the_watch_at_once(pg_admin_url: str, database_url: str) -> None:
    app = await EhealthApp.create(database_url=database_url, clock=FixedClock(NOW))
    try:
        port = await app.start()
        async with open_channel(f"127.0.0.1:{port}", identity="hub") as channel:
            stream = Stubs(channel).relations.WatchRelationChanges(
                tr.WatchRelationChangesRequest(), timeout=30
            )
            pending = asyncio.ensure_future(stream.read())
            await asyncio.sleep(0.3)
            started = time.monotonic()
            await app.stop(grace=10)
            assert time.monotonic() - started < 5  # the stream did not hold the grace period
            assert await asyncio.wait_for(pending, timeout=5) is grpc.aio.EOF
    finally:
        await app.stop(0)


@pytest.fixture
async def v0002_database(pg_admin_url: str, database_url: str) -> str:
    """A database as eHealth v0002 left it: three relations (one DMG, one ended) and one applied move."""
    engine = create_engine(database_url)
    try:
        await upgrade(engine, HISTORIES["ehealth"].script_location, "0002")
        relation = sa.table(
            "therapeutic_relation",
            *(
                sa.column(c)
                for c in (
                    "relation_id",
                    "provider_inami",
                    "patient_niss",
                    "proof",
                    "valid_from",
                    "valid_to",
                    "create_time",
                )
            ),
        )
        transfer = sa.table(
            "dmg_transfer",
            *(sa.column(c) for c in ("source_reference", "patient_niss", "new_relation_id", "apply_time")),
        )
        naive = NOW.replace(tzinfo=None)
        rows = [
            ("r-3", GP2, PATIENT2, "RELATION_PROOF_EID_READ", D(2024, 1, 1), None, naive),
            (
                "r-1",
                GP,
                PATIENT,
                "RELATION_PROOF_DMG",
                D(2020, 1, 1),
                D(2024, 12, 31),
                naive - dt.timedelta(days=2),
            ),
            ("r-2", GP2, PATIENT, "RELATION_PROOF_DMG", D(2025, 1, 1), None, naive - dt.timedelta(days=1)),
        ]
        async with engine.begin() as conn:
            names = [c.name for c in relation.columns]
            for row in rows:
                await conn.execute(relation.insert().values(dict(zip(names, row, strict=True))))
            await conn.execute(
                transfer.insert().values(
                    source_reference="100:old", patient_niss=PATIENT, new_relation_id="r-2", apply_time=naive
                )
            )
    finally:
        await engine.dispose()
    return database_url


async def test_a_database_from_v0002_starts_with_the_whole_register_in_the_log(v0002_database: str) -> None:
    app = await EhealthApp.create(database_url=v0002_database, clock=FixedClock(NOW))
    try:
        port = await app.start()
        async with open_channel(f"127.0.0.1:{port}", identity="hub") as channel:
            listed = await changes(Stubs(channel))
            assert [c.relation.relation_id for c in listed.changes] == ["r-1", "r-2", "r-3"]  # creation order
            assert listed.head_sequence == listed.changes[-1].sequence
            assert from_pdate(listed.changes[0].relation.period.end) == D(2024, 12, 31)
            assert listed.changes[1].relation.proof == tr.RELATION_PROOF_DMG
        async with open_channel(f"127.0.0.1:{port}", identity="admin") as channel:
            relations = Stubs(channel).relations
            # The move applied before the upgrade is still known: its replay changes nothing.
            replay = await relations.TransferDmgRelation(
                tr.TransferDmgRelationRequest(
                    patient_niss=PATIENT, new_holder_inami=GP2, start_date=pdate(D(2025, 1, 1)),
                    source_reference="100:old",
                ),
                timeout=10,
            )  # fmt: skip
            assert replay.replayed
            assert replay.new_relation.relation_id == "r-2"
    finally:
        await app.stop(0)
