"""The core's audit writer (issue 17): a write returns only once its row is committed, concurrent writes
share batches (group commit), a cancelled caller's row is still written, a failed batch is kept and its
callers wait for the retry; how a call ended is named with its real status."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from mycarenet_core.audit import AuditWriter, outcome_of
from mycarenet_core.db import create_engine
from mycarenet_core.errors import MeshError, permission_denied

ROWS = Table("audit_rows", MetaData(), Column("id", Integer, primary_key=True), Column("call", String(20)))


@pytest_asyncio.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(ROWS.metadata.create_all)
    try:
        yield engine
    finally:
        await engine.dispose()


async def count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(ROWS))).scalar_one())


async def test_a_write_returns_once_committed_and_writes_share_batches(engine: AsyncEngine) -> None:
    writer = AuditWriter(engine, insert(ROWS), name="test")
    job = asyncio.ensure_future(writer.run())
    try:
        await asyncio.sleep(0)

        async def call(n: int) -> int:
            await writer.write({"call": f"c{n}"})
            return await count(engine)  # seen from another connection: committed

        seen = await asyncio.gather(*(call(n) for n in range(200)))
        assert min(seen) >= 1
        assert await count(engine) == 200
        assert writer.batches < 50  # group commit: far fewer commits than calls
        assert writer.queued == 0
    finally:
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)


async def test_a_cancelled_caller_row_is_written_and_a_failed_batch_is_retried(engine: AsyncEngine) -> None:
    failures = [OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))]

    async def flaky(batch: list[dict[str, object]]) -> None:
        if failures:
            raise failures.pop()
        async with engine.begin() as conn:
            await conn.execute(insert(ROWS), batch)

    writer = AuditWriter(engine, insert(ROWS), name="test", insert=flaky)
    job = asyncio.ensure_future(writer.run())
    try:
        await asyncio.sleep(0)
        cancelled = asyncio.ensure_future(writer.write({"call": "gone"}))
        waiting = asyncio.ensure_future(writer.write({"call": "waits"}))
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.wait_for(waiting, 10)  # answered after the retry, not before
        assert failures == []
        assert await count(engine) == 2
        with pytest.raises(asyncio.CancelledError):
            await cancelled
    finally:
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)


async def test_without_its_job_a_write_writes_itself(engine: AsyncEngine) -> None:
    writer = AuditWriter(engine, insert(ROWS), name="test")
    writer.add({"call": "queued"})
    await writer.write({"call": "now"})
    assert await count(engine) == 2


def test_outcomes_are_named_with_their_real_status() -> None:
    locked = OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
    denied: MeshError = permission_denied("PROVIDER_NOT_ENTITLED", "no", code=140)
    assert outcome_of(None) == ("OK", "", ())
    assert outcome_of(denied) == ("PERMISSION_DENIED", "PROVIDER_NOT_ENTITLED", (140,))
    assert outcome_of(asyncio.CancelledError()) == ("CANCELLED", "CANCELLED", ())
    assert outcome_of(GeneratorExit()) == ("CANCELLED", "CANCELLED", ())
    assert outcome_of(TimeoutError()) == ("DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED", ())
    assert outcome_of(locked)[:2] == (grpc.StatusCode.UNAVAILABLE.name, "DATABASE_BUSY")
    assert outcome_of(KeyError("bug")) == ("INTERNAL", "KeyError", ())


async def test_on_sqlite_a_batch_waits_in_a_thread_when_another_writer_holds_the_lock(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(ROWS.metadata.create_all)
        writer = AuditWriter(engine, insert(ROWS), name="test")
        job = asyncio.ensure_future(writer.run())
        try:
            await writer.write({"call": "on the loop"})  # the lock is free: written on the loop's thread
            other = sqlite3.connect(str(tmp_path / "audit.db"))
            other.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock
            waiting = asyncio.ensure_future(writer.write({"call": "in a thread"}))
            await asyncio.sleep(0.2)
            assert not waiting.done()  # the loop is free meanwhile: its batch waits in a worker thread
            other.rollback()
            other.close()
            await asyncio.wait_for(waiting, 5)
            assert await count(engine) == 2
        finally:
            job.cancel()
            await asyncio.gather(job, return_exceptions=True)
            await writer.close()
    finally:
        await engine.dispose()
