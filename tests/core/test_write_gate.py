"""The write gate of a SQLite database: the write transactions of a process enter one at a time, in their
order of arrival; a cancelled waiter leaves nothing behind; PostgreSQL has no gate."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from sqlalchemy import text

from mycarenet_core.db import create_engine, session_factory, transaction, write_gate


async def test_writers_enter_one_at_a_time_in_their_order_of_arrival(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'gate.db'}")
    sessions = session_factory(engine)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (n INTEGER)"))
    inside = 0
    most = 0
    order: list[int] = []

    async def writer(n: int) -> None:
        nonlocal inside, most
        async with transaction(sessions) as session:
            inside += 1
            most = max(most, inside)
            order.append(n)
            await session.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
            await asyncio.sleep(0.01)
            inside -= 1

    tasks = []
    for n in range(8):
        tasks.append(asyncio.ensure_future(writer(n)))
        await asyncio.sleep(0)  # arrive in this order
    await asyncio.gather(*tasks)
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar() == 8
    await engine.dispose()
    assert most == 1
    assert order == list(range(8))


async def test_a_cancelled_writer_leaves_the_gate_open(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'gate.db'}")
    sessions = session_factory(engine)
    started = asyncio.Event()

    async def stuck() -> None:
        async with transaction(sessions) as session:
            await session.execute(text("CREATE TABLE IF NOT EXISTS t (n INTEGER)"))
            started.set()
            await asyncio.sleep(60)

    holder = asyncio.ensure_future(stuck())
    await started.wait()
    waiter = asyncio.ensure_future(write_gate(engine).__aenter__())
    await asyncio.sleep(0.01)
    assert not waiter.done()  # behind the holder
    waiter.cancel()
    holder.cancel()
    for task in (waiter, holder):
        with contextlib.suppress(asyncio.CancelledError):
            await task
    async with asyncio.timeout(5), transaction(sessions) as session:  # neither left the gate closed
        await session.execute(text("INSERT INTO t VALUES (1)"))
    await engine.dispose()


@pytest.mark.parametrize("url", ["postgresql://postgres@127.0.0.1:5432/none"])
def test_postgresql_has_no_gate(url: str) -> None:
    engine = create_engine(url)
    assert isinstance(write_gate(engine), contextlib.nullcontext)
