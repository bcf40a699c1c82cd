"""eHealth's database, as its domain uses it: writes in one transaction each, reads that never open a write
transaction, and the hot read on the driver itself.

A write is an ORM session inside one transaction (:meth:`Database.transaction`; the ones that append to a
followed log go through :meth:`ehealth.logs.Logs.transaction`). A read runs on :attr:`Database.reader`, a
pool of its own: on PostgreSQL its connections are in autocommit from the moment they are opened (one round
trip per statement, the pool's liveness ping included: no BEGIN, no ROLLBACK, no read-write transaction held
while Python works); on SQLite the driver opens a transaction only before a write, so a SELECT never takes
the write lock, and a connection given back needs no reset.

The hottest read (CheckRelation, the hub's fallback) is a :class:`Query`: a SQLAlchemy Core statement
compiled ONCE per dialect and run by the driver itself, with the columns' types converting the values both
ways (:meth:`Database.first`). On PostgreSQL it is sent to one of a few ``asyncpg`` connections held open in
autocommit (which keep it prepared): one round trip, no pool checkout (whose liveness ping is a round trip of
its own), none of SQLAlchemy's execution layer; a connection that fails or is cancelled mid-statement is
dropped and replaced at the next read. On SQLite it runs
on ONE read-only connection of the standard ``sqlite3`` driver in autocommit, on the event loop's own thread
(as the insurer nodes read): an indexed read takes tens of microseconds, whereas handing it to aiosqlite's
worker thread and back costs several times that in CPU; in WAL mode a reader never waits for a writer, and a
read that still finds the database locked past a short busy timeout answers UNAVAILABLE DATABASE_BUSY.
Every such read sees the last committed state. Same statement on both databases; how the driver is called
is the one difference, and it is here.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
from sqlalchemy import Select
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from mycarenet_core.db import create_engine, is_sqlite, session_factory, transaction
from mycarenet_core.errors import MeshError

Processor = Callable[[Any], Any] | None
READ_BUSY_TIMEOUT = 1.0
"""Seconds a SQLite read on the event loop waits for a lock (WAL readers almost never wait at all)."""
HOT_CONNECTIONS = 4
"""PostgreSQL connections held open for the hot read (more reads in flight wait for one)."""
# What the drivers raise when the connection or the database failed (not the statement): the connection is
# dropped and the caller is told to retry, as for any transient database failure. asyncpg answers
# InternalClientError ("another operation is in progress") on a connection the server ended mid-protocol.
_TRANSIENT = (
    OSError,
    sqlite3.OperationalError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


def _unavailable() -> MeshError:
    return MeshError(
        grpc.StatusCode.UNAVAILABLE,
        "DATABASE_BUSY",
        "the database is unavailable; nothing was changed, retry shortly",
        retry_after_seconds=1.0,
    )


@dataclass(frozen=True)
class _Plan:
    """A statement compiled for one dialect: its SQL, its positional parameters (name, default value, type
    conversion) and the type conversion of each column of a row."""

    sql: str
    binds: Sequence[tuple[str, Any, Processor]]
    results: Sequence[Processor]

    def arguments(self, values: Mapping[str, Any]) -> list[Any]:
        out = []
        for name, default, process in self.binds:
            value = values.get(name, default)
            out.append(value if process is None else process(value))
        return out

    def row(self, raw: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(value if p is None else p(value) for value, p in zip(raw, self.results, strict=True))


class Query:
    """A Core SELECT compiled once per dialect, run by the driver itself (:meth:`Database.first`).

    Positional parameters are taken by name from the call's values (a literal of the statement, such as
    its LIMIT, keeps its own value)."""

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        self._plans: dict[str, _Plan] = {}

    def plan(self, dialect: Dialect) -> _Plan:
        plan = self._plans.get(dialect.name)
        if plan is None:
            compiled = self.statement.compile(dialect=dialect)
            if compiled.positiontup is None:
                raise TypeError(f"{dialect.name}: a driver with positional parameters is expected")
            binds = []
            for name in compiled.positiontup:
                bind = compiled.binds[name]
                binds.append((name, bind.value, bind.type.dialect_impl(dialect).bind_processor(dialect)))
            results = [
                column.type.dialect_impl(dialect).result_processor(dialect, None)
                for column in self.statement.selected_columns
            ]
            plan = self._plans[dialect.name] = _Plan(str(compiled), binds, results)
        return plan


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
        self._read_sessions = async_sessionmaker(self.reader, expire_on_commit=False)
        self._loop_reader: sqlite3.Connection | None = None
        self._hot: asyncio.Queue[AsyncConnection] = asyncio.Queue()
        self._hot_open = 0

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

    async def first(self, query: Query, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row of ``query`` with ``values``, converted by the columns' types; None when none.

        A connection that failed (or, on PostgreSQL, was cancelled during the statement) is never used
        again; a failure of the connection or the database answers UNAVAILABLE DATABASE_BUSY (retry)."""
        plan = query.plan(self.reader.dialect)
        arguments = plan.arguments(values)
        if self.sqlite:
            raw = self._read_on_loop(plan.sql, arguments)
        else:
            raw = await self._read_on_pool(plan.sql, arguments)
        return None if raw is None else plan.row(raw)

    def _read_on_loop(self, sql: str, arguments: list[Any]) -> Sequence[Any] | None:
        if self._loop_reader is None:
            conn = sqlite3.connect(
                self._file or "", timeout=READ_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA query_only=1")
            self._loop_reader = conn
        try:
            found: Sequence[Any] | None = self._loop_reader.execute(sql, arguments).fetchone()
        except Exception as error:
            self._close_loop_reader()  # a fresh connection next time
            if isinstance(error, _TRANSIENT):
                raise _unavailable() from error
            raise
        return found

    async def _read_on_pool(self, sql: str, arguments: list[Any]) -> Sequence[Any] | None:
        conn = await self._acquire()
        try:
            driver: Any = (await conn.get_raw_connection()).driver_connection
            found: Sequence[Any] | None = await driver.fetchrow(sql, *arguments)
        except BaseException as error:
            # Failed, or cancelled half-way (the caller's deadline): this connection may still be busy with
            # the statement, so it is never used again.
            await asyncio.shield(self._discard(conn, error if isinstance(error, Exception) else None))
            if isinstance(error, _TRANSIENT):
                # The database went away (a restart?): the other held connections are as dead as this one.
                while not self._hot.empty():
                    await asyncio.shield(self._discard(self._hot.get_nowait(), None))
                raise _unavailable() from error
            raise
        self._hot.put_nowait(conn)
        return found

    async def _acquire(self) -> AsyncConnection:
        if self._hot.empty() and self._hot_open < HOT_CONNECTIONS:
            self._hot_open += 1
            try:
                return await self.reader.connect()
            except BaseException:
                self._hot_open -= 1
                raise
        return await self._hot.get()

    async def _discard(self, conn: AsyncConnection, error: Exception | None) -> None:
        self._hot_open -= 1
        with contextlib.suppress(Exception):  # the connection is gone either way
            await conn.invalidate(error)
            await conn.close()

    def _close_loop_reader(self) -> None:
        conn, self._loop_reader = self._loop_reader, None
        if conn is not None:
            conn.close()

    async def dispose(self) -> None:
        self._close_loop_reader()
        while not self._hot.empty():
            await self._hot.get_nowait().close()
            self._hot_open -= 1
        for engine in self.engines:
            await engine.dispose()


__all__ = ["Database", "Query"]
