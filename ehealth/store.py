"""eHealth's database, as its domain uses it: writes in one transaction each, reads that never open a write
transaction.

A write is an ORM session inside one transaction (:meth:`Database.transaction`; the ones that append to a
followed log go through :meth:`ehealth.logs.Logs.transaction`). A read — the hot CheckRelation above all —
runs on :attr:`Database.reader`: on PostgreSQL a connection in autocommit (one round trip per statement,
no BEGIN, no read-write transaction held while Python works), on SQLite the plain connection (the driver
opens a transaction only before a write, so a SELECT never takes the write lock). Same statements, same
code path on both; the difference is one execution option chosen here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from mycarenet_core.db import is_sqlite, session_factory, transaction


class Database:
    """One engine, its write sessions and its read path."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions = session_factory(engine)
        self.reader = engine if is_sqlite(engine) else engine.execution_options(isolation_level="AUTOCOMMIT")
        self._read_sessions = async_sessionmaker(self.reader, expire_on_commit=False)

    def transaction(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on any exception."""
        return transaction(self.sessions)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reads only (never flushed, never committed)."""
        async with self._read_sessions() as session:
            yield session

    def connect(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A Core connection for reads only (the hot path: one pre-built statement, no ORM)."""
        return self.reader.connect()

    async def dispose(self) -> None:
        await self.engine.dispose()


__all__ = ["Database"]
