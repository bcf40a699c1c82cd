"""eHealth's database, as its domain uses it: writes in one transaction each, reads that never open a write
transaction, and the hot read on the driver itself.

A write is an ORM session inside one transaction (:meth:`Database.transaction`; the ones that append to a
followed log go through :meth:`ehealth.logs.Logs.transaction`). A read runs on :attr:`Database.reader`, a
pool of its own: on PostgreSQL its connections are in autocommit from the moment they are opened (one round
trip per statement, the pool's liveness ping included: no BEGIN, no ROLLBACK, no read-write transaction held
while Python works); on SQLite the driver opens a transaction only before a write, so a SELECT never takes
the write lock, and a connection given back needs no reset.

The hottest read (CheckRelation, the hub's fallback) is a :class:`~mycarenet_core.reads.Query` run by
:attr:`Database.hot` (:class:`~mycarenet_core.reads.HotReads`, the same hot read path as the insurer
nodes'): compiled once per dialect and run by the driver itself, on ONE read-only ``sqlite3`` connection on
the event loop's thread, or on a few ``asyncpg`` connections held open in autocommit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from mycarenet_core.db import create_engine, is_sqlite, session_factory, transaction
from mycarenet_core.reads import HotReads, Query


class Database:
    """One database: its write engine and sessions, and its read path."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        self.sessions = session_factory(self.engine)
        self.sqlite = is_sqlite(self.engine)
        self._file = make_url(self.engine.url).database if self.sqlite else None
        if self.sqlite and self._file in (None, "", ":memory:"):
            raise ValueError("eHealth needs a SQLite file (its reads and writes use several connections)")
        self.reader: AsyncEngine = (
            create_engine(url, pool_reset_on_return=None)
            if self.sqlite
            else create_engine(url, isolation_level="AUTOCOMMIT")
        )
        self._read_sessions = session_factory(self.reader)  # a cancelled read never leaves its transaction
        self.hot = HotReads(self.reader)

    @property
    def engines(self) -> list[AsyncEngine]:
        """The engines to instrument and dispose."""
        return [self.engine, self.reader]

    def transaction(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on any exception."""
        return transaction(self.sessions)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reads only (never flushed, never committed)."""
        async with self._read_sessions() as session:
            yield session

    def connect(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A Core connection for reads only."""
        return self.reader.connect()

    async def first(self, query: Query, values: Mapping[str, Any]) -> Any | None:
        """The first row of ``query`` with ``values`` (:class:`~mycarenet_core.reads.HotReads`); None when
        none. A failure of the connection or the database answers UNAVAILABLE DATABASE_BUSY (retry)."""
        return await self.hot.first(query, values)

    async def dispose(self) -> None:
        await self.hot.close()
        for engine in self.engines:
            await engine.dispose()


__all__ = ["Database", "Query"]
