"""Issue 17: cancelled writes under contention leave nothing behind. Storms of mailbox deliveries whose
deadlines pass while they wait for the write gate, write or commit, then a write that must go through at
once; and the same with the core's transactions cancelled at random moments. On SQLite and PostgreSQL.

Before the fix, the hub's SQLite stayed write-locked (an aiosqlite thread stopped without closing its
connection, whose transaction held the WAL write lock) and every later write waited 30 s and failed
DATABASE_BUSY."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator

import grpc
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.app import HubApp
from hub.audit import AUDIT
from mycarenet_core.channels import open_channel
from mycarenet_core.clock import FixedClock
from mycarenet_core.db import create_engine, session_factory, transaction
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from mycarenet_core.gen.mycarenet.hub.v1 import mailbox_intake_service_pb2 as intake
from mycarenet_core.gen.mycarenet.hub.v1 import mailbox_intake_service_pb2_grpc
from mycarenet_core.identifiers import Profession, make_inami, make_niss
from tests.hub.mesh import FAST, GENEROUS, NOW

pytestmark = pytest.mark.asyncio

RECIPIENT = make_inami(Profession.PHYSICIAN, 10001, "004")
STORM = 150  # concurrent calls a round
ROUNDS = 3


def closure(message_id: str) -> dmg_pb2.MailboxMessage:
    return dmg_pb2.MailboxMessage(
        message_id=message_id,
        kind=dmg_pb2.MESSAGE_KIND_CLOSURE,
        recipient_inami=RECIPIENT,
        insurer_code="100",
        closure=dmg_pb2.ClosureMessage(patient=common_pb2.Patient(niss=make_niss(dt.date(1980, 1, 1), 1))),
    )


async def assert_nothing_left_behind(engine: AsyncEngine) -> None:
    """No connection checked out, no transaction open, the write lock free (outside the process too)."""
    deadline = time.monotonic() + 5
    while engine.pool.checkedout():  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, f"connections left checked out: {engine.pool.status()}"
        await asyncio.sleep(0.05)
    if engine.dialect.name == "sqlite":
        outsider = sqlite3.connect(str(make_url(str(engine.url)).database), timeout=0.5)
        try:
            outsider.execute("BEGIN IMMEDIATE")  # fails "database is locked" while a writer holds the lock
            outsider.execute("ROLLBACK")
        finally:
            outsider.close()
    else:
        async with engine.connect() as conn:
            stuck = await conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state LIKE 'idle in transaction%'"
                )
            )
            assert stuck.scalar_one() == 0


@contextlib.asynccontextmanager
async def hub_alone(database_url: str) -> AsyncIterator[tuple[HubApp, grpc.aio.Channel]]:
    """The hub on its own (no eHealth, no insurer: its followers retry quietly), called as ``oa-100``."""
    hub = await HubApp.create(
        database_url=database_url,
        clock=FixedClock(NOW),
        ehealth_target="127.0.0.1:9",
        oa_targets={"100": "127.0.0.1:9"},
        throttle=GENEROUS,
        tuning=FAST,
    )
    port = await hub.start("127.0.0.1:0")
    channel = open_channel(f"127.0.0.1:{port}", identity="oa-100")
    try:
        yield hub, channel
    finally:
        await channel.close(None)
        await hub.stop(0)


async def test_cancelled_deliveries_never_leave_the_hub_write_locked(database_url: str) -> None:
    async with hub_alone(database_url) as (hub, channel):
        intake_stub = mailbox_intake_service_pb2_grpc.MailboxIntakeServiceStub(channel)
        rng = random.Random(17)

        async def deliver(ids: list[str], deadline: float) -> str:
            try:
                await intake_stub.DeliverMessages(
                    intake.DeliverMessagesRequest(insurer_code="100", messages=[closure(i) for i in ids]),
                    timeout=deadline,
                )
            except grpc.aio.AioRpcError as error:
                return error.code().name
            return "OK"

        answered = Counter[str]()
        for n in range(ROUNDS):
            outcomes = Counter(
                await asyncio.gather(
                    *(
                        deliver([f"storm-{n}-{i}-{k}" for k in range(20)], rng.uniform(0.005, 0.3))
                        for i in range(STORM)
                    )
                )
            )
            assert outcomes["DEADLINE_EXCEEDED"] > STORM // 2, outcomes  # the storm did cut writes
            # The next write goes through at once (before the fix: 30 s, then DATABASE_BUSY, for minutes).
            assert await deliver([f"after-{n}"], 5.0) == "OK"
            await assert_nothing_left_behind(hub.engine)
            answered += outcomes
            answered["OK"] += 1
        await hub.core.audit.flush()  # the cancelled calls' rows (nobody waited for them)
        async with hub.engine.connect() as conn:
            audited = Counter(
                dict(
                    (
                        await conn.execute(
                            select(AUDIT.c.outcome, func.count())
                            .where(AUDIT.c.rpc == "DeliverMessages")
                            .group_by(AUDIT.c.outcome)
                        )
                    ).all()
                )
            )
        # Every answered call has its row (the warm-up-free count: OK answers are OK rows, at least), and
        # a cut call is recorded as what it was, never INTERNAL.
        assert audited["OK"] >= answered["OK"]
        assert audited["INTERNAL"] == 0
        assert audited["CANCELLED"] > 0


async def test_transactions_cancelled_anywhere_leave_nothing_behind(database_url: str) -> None:
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (n INTEGER PRIMARY KEY)"))
        rng = random.Random(17)

        async def write(n: int) -> None:
            async with transaction(sessions) as session:
                await session.execute(text("SELECT count(*) FROM t"))
                await session.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
                await session.flush()

        async def cancel_later(task: asyncio.Task[None], delay: float, times: int) -> None:
            await asyncio.sleep(delay)
            for _ in range(times):  # cancelled again while it cleans up
                task.cancel()
                await asyncio.sleep(0)

        tasks = [asyncio.ensure_future(write(n)) for n in range(200)]
        cancellers = [
            asyncio.ensure_future(cancel_later(task, rng.uniform(0, 0.2), rng.choice((1, 2, 3))))
            for task in tasks
        ]
        await asyncio.gather(*cancellers)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        committed = sum(1 for r in results if r is None)
        assert sum(1 for r in results if isinstance(r, asyncio.CancelledError)) > 0
        assert [r for r in results if r is not None and not isinstance(r, asyncio.CancelledError)] == []
        await assert_nothing_left_behind(engine)
        async with asyncio.timeout(5):
            await write(10_000)
        async with engine.connect() as conn:  # what committed is there, what was cancelled is not half there
            assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() >= committed + 1
    finally:
        await engine.dispose()
