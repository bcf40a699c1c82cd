"""The hub's own storage: mailbox (store once, pending, confirm), patient-list requests, audit — on SQLite
and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlmodel import select

from hub.audit import AuditLog
from hub.auth import Caller
from hub.mailbox import MailboxRepository, content_hash
from hub.models import AuditRecord, HubBase
from mycarenet_core.clock import FixedClock
from mycarenet_core.db import create_engine, create_schema, session_factory, transaction
from mycarenet_core.errors import permission_denied
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from mycarenet_core.trust import CallRecord, Peer

GP1, GP2 = "10000101004", "10000202004"
NOW = dt.datetime(2025, 3, 4, 10, 0, tzinfo=dt.UTC)


def closure(message_id: str, recipient: str, niss: str = "80051703367") -> dmg_pb2.MailboxMessage:
    return dmg_pb2.MailboxMessage(
        message_id=message_id,
        kind=dmg_pb2.MESSAGE_KIND_CLOSURE,
        insurer_code="100",
        recipient_inami=recipient,
        closure=dmg_pb2.ClosureMessage(patient=common_pb2.Patient(niss=niss)),
    )


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await create_schema(engine, HubBase.metadata)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


async def test_a_message_delivered_twice_is_stored_once(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with transaction(sessions) as session:
        first = await MailboxRepository(session).store([closure("m1", GP1), closure("m2", GP2)], NOW)
    async with transaction(sessions) as session:
        again = await MailboxRepository(session).store([closure("m1", GP1), closure("m3", GP1)], NOW)
    assert first.stored == ["m1", "m2"]
    assert again.stored == ["m3"]
    assert again.duplicates == ["m1"]
    async with sessions() as session:
        pending = await MailboxRepository(session).pending(GP1, [])
    assert [m.message_id for _, m in pending] == ["m1", "m3"]
    assert pending[0][1].content_hash == content_hash(closure("m1", GP1))


async def test_pending_is_per_recipient_oldest_first_and_paged(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as session:
        await MailboxRepository(session).store(
            [closure(f"m{i}", GP1 if i % 2 else GP2) for i in range(10)], NOW
        )
    async with sessions() as session:
        repo = MailboxRepository(session)
        page1 = await repo.pending(GP1, [], limit=3)
        page2 = await repo.pending(GP1, [], after_id=page1[-1][0], limit=3)
        assert [m.message_id for _, m in page1 + page2] == ["m1", "m3", "m5", "m7", "m9"]
        assert await repo.pending(GP1, [dmg_pb2.MESSAGE_KIND_EXTENSION]) == []


async def test_confirm_by_id_and_hash_twice_and_foreign(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with transaction(sessions) as session:
        await MailboxRepository(session).store(
            [closure("a", GP1, "80051703367"), closure("b", GP1, "75010201290"), closure("c", GP2)], NOW
        )
    hash_b = content_hash(closure("b", GP1, "75010201290"))
    async with transaction(sessions) as session:
        result = await MailboxRepository(session).confirm(GP1, ["a", "c", "zzz"], [hash_b], NOW)
    assert (result.confirmed, result.already, result.unknown) == (2, 0, ["c", "zzz"])
    async with transaction(sessions) as session:
        again = await MailboxRepository(session).confirm(GP1, ["a"], [hash_b], NOW)
    assert (again.confirmed, again.already, again.unknown) == (0, 2, [])
    async with sessions() as session:
        assert await MailboxRepository(session).pending(GP1, []) == []
        assert [m.message_id for _, m in await MailboxRepository(session).pending(GP2, [])] == ["c"]


async def test_message_ids_are_scoped_by_insurer(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Issue 17: one insurer cannot shadow another's message by reusing its id."""
    theirs = closure("same-id", GP1)
    theirs.insurer_code = "200"
    async with transaction(sessions) as session:
        first = await MailboxRepository(session).store([closure("same-id", GP1)], NOW)
    async with transaction(sessions) as session:
        second = await MailboxRepository(session).store([theirs, closure("same-id", GP1)], NOW)
    assert (first.stored, second.stored, second.duplicates) == (["same-id"], ["same-id"], ["same-id"])
    async with sessions() as session:
        pending = await MailboxRepository(session).pending(GP1, [])
    assert sorted(m.insurer_code for _, m in pending if m.message_id == "same-id") == ["100", "200"]


async def test_concurrent_confirms_count_each_message_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Issue 17: confirms of the same messages racing each other (on PostgreSQL, really at once): each
    message is counted confirmed by exactly one of them, already confirmed by all the others."""
    ids = [f"race-{i}" for i in range(5)]
    async with transaction(sessions) as session:
        await MailboxRepository(session).store([closure(i, GP1) for i in ids], NOW)

    async def confirm() -> tuple[int, int]:
        async with transaction(sessions) as session:
            result = await MailboxRepository(session).confirm(GP1, ids, [], NOW)
        return result.confirmed, result.already

    results = await asyncio.gather(*(confirm() for _ in range(8)))
    assert sum(confirmed for confirmed, _ in results) == len(ids)
    assert all(confirmed + already == len(ids) for confirmed, already in results)


async def test_audit_rows_are_written(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    audit = AuditLog(engine, FixedClock(NOW))
    async with audit.record("ConsultDmg") as entry:
        entry.requester_reference = "r1"
        entry.insurer_codes = ["100"]
    with pytest.raises(Exception, match="nope"):
        async with audit.record("NotifyDmg"):
            raise permission_denied("PROVIDER_NOT_ENTITLED", "nope", code=140)
    await audit.flush()
    async with sessions() as session:
        rows = (await session.execute(select(AuditRecord).order_by(AuditRecord.id))).scalars().all()  # type: ignore[arg-type]
    assert [(r.rpc, r.outcome, r.reason, r.codes, r.insurer_code) for r in rows] == [
        ("ConsultDmg", "OK", "", "", "100"),
        ("NotifyDmg", "PERMISSION_DENIED", "PROVIDER_NOT_ENTITLED", "140", ""),
    ]


async def test_refusals_of_the_trust_interceptor_are_written_and_a_handled_call_only_once(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    audit = AuditLog(engine, FixedClock(NOW))
    pharmacist = Caller(
        executor_id="10000707000",
        executor_kind="SUBJECT_KIND_PROVIDER",
        session_id="s-ph",
        inami="10000707000",
        principal="",
        mandate_id="",
        mandate_services=frozenset(),
        organisation="",
        expires=NOW,
    )
    audit.observe(
        CallRecord(
            "/mycarenet.dmg.v1.DmgService/ConsultDmg",
            Peer.from_name("client"),
            pharmacist,
            "PERMISSION_DENIED",
            "PROVIDER_NOT_ENTITLED",
            (140,),
        )
    )
    audit.observe(
        CallRecord(
            "/mycarenet.hub.v1.MailboxIntakeService/DeliverMessages",
            Peer.from_name("backoffice"),
            None,
            "PERMISSION_DENIED",
            "CERTIFICATE_NOT_ALLOWED",
        )
    )

    async def handled() -> None:  # a call of its own (its own context), audited by its handler
        async with audit.record("GetMessages"):
            pass
        audit.observe(
            CallRecord("/mycarenet.dmg.v1.MailboxService/GetMessages", Peer.from_name("client"), None, "OK")
        )

    await asyncio.create_task(handled())
    await audit.flush()
    async with sessions() as session:
        rows = (await session.execute(select(AuditRecord).order_by(AuditRecord.id))).scalars().all()  # type: ignore[arg-type]
    assert [(r.rpc, r.peer, r.requester_inami, r.session_id, r.outcome, r.reason, r.codes) for r in rows] == [
        ("ConsultDmg", "client", "10000707000", "s-ph", "PERMISSION_DENIED", "PROVIDER_NOT_ENTITLED", "140"),
        ("DeliverMessages", "backoffice", "", "", "PERMISSION_DENIED", "CERTIFICATE_NOT_ALLOWED", ""),
        ("GetMessages", "", "", "", "OK", "", ""),
    ]
