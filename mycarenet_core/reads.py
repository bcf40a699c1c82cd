"""The reads of the hot path, the same way in every service: SQLAlchemy Core statements compiled once per
dialect and run by the driver itself, never in a write transaction, on SQLite and PostgreSQL alike.

* :class:`Query` is a Core statement compiled ONCE per dialect (:class:`Plan`): its SQL, its positional
  parameters (taken by name from the call's values; a literal of the statement such as a LIMIT keeps its own
  value), and the type conversions of SQLAlchemy's own column types both ways (a date to and from SQLite's
  ISO text...). Rows are named tuples of the statement's column labels. SQLAlchemy's per-execution
  machinery (execution context, cache key, result object) costs more than an indexed read itself.
* :class:`HotReads` runs them:

  - SQLite: ONE connection of the standard ``sqlite3`` driver, read-only (``PRAGMA query_only``), in
    autocommit, on the event loop's own thread. An indexed read takes tens of microseconds, whereas handing
    it to aiosqlite's worker thread and back costs several times that in CPU. In WAL mode a reader never
    waits for a writer; a read that still finds the database locked past a short busy timeout answers
    UNAVAILABLE DATABASE_BUSY, never blocks the loop for long.
  - PostgreSQL (asyncpg): a few connections held open in AUTOCOMMIT and handed out by a queue: one round
    trip per statement (the driver keeps it prepared), no BEGIN and no ROLLBACK around it, no pool checkout
    (whose liveness ping is a round trip of its own). A connection that fails, or is cancelled during a
    statement (the caller's deadline), is dropped and replaced at the next read.

  When the process is traced, the same statements go through SQLAlchemy instead (its events give the
  database spans). Every read sees the last committed state (each statement is its own read transaction).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
from sqlalchemy import Connection, Engine, Executable, create_engine, event
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mycarenet_core.errors import MeshError

Processor = Callable[[Any], Any] | None
READ_BUSY_TIMEOUT = 1.0
"""Seconds a SQLite read on the event loop waits for a lock (WAL readers almost never wait at all)."""
HOT_CONNECTIONS = 4
"""PostgreSQL connections held open for the hot reads (more reads in flight wait for one)."""
# What the drivers raise when the connection or the database failed (not the statement): the connection is
# dropped and the caller is told to retry, as for any transient database failure. asyncpg answers
# InternalClientError ("another operation is in progress") on a connection the server ended mid-protocol.
TRANSIENT = (
    OSError,
    sqlite3.OperationalError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


def database_unavailable() -> MeshError:
    return MeshError(
        grpc.StatusCode.UNAVAILABLE,
        "DATABASE_BUSY",
        "the database is unavailable or busy; nothing was changed, retry shortly",
        retry_after_seconds=1.0,
    )


@dataclass(frozen=True)
class Plan:
    """A statement compiled for one dialect: its SQL, its positional parameters (name, the statement's own
    value, type conversion) and the type conversion of each column of a row."""

    sql: str
    binds: Sequence[tuple[str, Any, Processor]]
    results: Sequence[Processor]
    row_type: Callable[..., Any]

    def arguments(self, values: Mapping[str, Any]) -> list[Any]:
        out = []
        for name, default, process in self.binds:
            value = values.get(name, default)
            out.append(value if process is None or value is None else process(value))
        return out

    def insert_many(self, connection: sqlite3.Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run the statement (an INSERT) once per row, in one transaction of a ``sqlite3`` connection."""
        with connection:  # commits, or rolls back on an error
            connection.executemany(self.sql, [self.arguments(row) for row in rows])

    def row(self, raw: Sequence[Any]) -> Any:
        """A named tuple of the statement's column labels, each value converted by its column's type."""
        return self.row_type(
            *[value if p is None else p(value) for value, p in zip(raw, self.results, strict=True)]
        )


class Query:
    """A Core SELECT compiled once per dialect, run by the driver itself (:class:`HotReads`); or an INSERT
    of the values of ``column_keys``, run by :meth:`Plan.insert_many`."""

    def __init__(self, statement: Any, *, column_keys: Sequence[str] | None = None) -> None:
        self.statement = statement
        self.column_keys = column_keys
        self._plans: dict[str, Plan] = {}

    def plan(self, dialect: Dialect) -> Plan:
        plan = self._plans.get(dialect.name)
        if plan is None:
            compiled = self.statement.compile(dialect=dialect, column_keys=self.column_keys)
            if compiled.positiontup is None:
                raise TypeError(f"{dialect.name}: a driver with positional parameters is expected")
            binds = []
            for name in compiled.positiontup:
                bind = compiled.binds[name]
                if bind.expanding:
                    raise ValueError(f"{name}: an expanding (IN) parameter cannot be compiled once")
                binds.append((name, bind.value, bind.type.dialect_impl(dialect).bind_processor(dialect)))
            columns = list(getattr(self.statement, "selected_columns", ()))
            results = [
                column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
            ]
            row_type = collections.namedtuple("QueryRow", [column.key for column in columns])  # type: ignore[misc]
            plan = self._plans[dialect.name] = Plan(str(compiled), binds, results, row_type)
        return plan


class HotReads:
    """Runs :class:`Query` reads on one database (module docstring); :meth:`close` when the service stops."""

    def __init__(self, engine: AsyncEngine, *, connections: int = HOT_CONNECTIONS) -> None:
        self.dialect = engine.dialect
        self._async = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._hot: asyncio.Queue[AsyncConnection] = asyncio.Queue()
        self._opened = 0
        self._max = connections
        self._file: str | None = None
        self._loop_reader: sqlite3.Connection | None = None
        self._sync: Engine | None = None
        self._traced_conn: Connection | None = None
        self.traced = False
        """Set when :attr:`sync_engine` (SQLite) or the engine (PostgreSQL) is instrumented: the reads then
        go through SQLAlchemy, whose events give the database spans."""
        url = engine.url
        if url.get_backend_name() == "sqlite":
            if url.database in (None, "", ":memory:"):
                raise ValueError("hot reads need a SQLite file (they read on a connection of their own)")
            self._file = url.database
            self._sync = create_engine(
                make_url(url).set(drivername="sqlite"),
                connect_args={"timeout": READ_BUSY_TIMEOUT, "check_same_thread": False},
            )
            event.listen(self._sync, "connect", _read_only)

    @property
    def sync_engine(self) -> Engine | None:
        """SQLite: the synchronous engine of the traced reads (for telemetry's database spans)."""
        return self._sync

    async def all(self, query: Query, values: Mapping[str, Any]) -> list[Any]:
        """Every row of ``query`` with ``values``.

        A failure of the connection or the database answers UNAVAILABLE DATABASE_BUSY (retry); the
        connection is never used again."""
        if self.traced:
            return await self._traced(query, values)
        plan = query.plan(self.dialect)
        arguments = plan.arguments(values)
        if self._file is not None:
            raw = self._read_on_loop(plan.sql, arguments)
        else:
            raw = await self._read_on_pool(plan.sql, arguments)
        return [plan.row(r) for r in raw]

    async def first(self, query: Query, values: Mapping[str, Any]) -> Any | None:
        """The first row of ``query`` with ``values``; None when there is none."""
        rows = await self.all(query, values)
        return rows[0] if rows else None

    def _read_on_loop(self, sql: str, arguments: list[Any]) -> list[Any]:
        if self._loop_reader is None:
            conn = sqlite3.connect(
                self._file or "", timeout=READ_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA query_only=1")
            self._loop_reader = conn
        try:
            return self._loop_reader.execute(sql, arguments).fetchall()
        except Exception as error:
            self._close_loop_reader()  # a fresh connection next time
            if isinstance(error, TRANSIENT):
                raise database_unavailable() from error
            raise

    async def _read_on_pool(self, sql: str, arguments: list[Any]) -> list[Any]:
        conn = await self._acquire()
        try:
            driver: Any = (await conn.get_raw_connection()).driver_connection
            found: list[Any] = await driver.fetch(sql, *arguments)
        except BaseException as error:
            # Failed, or cancelled half-way (the caller's deadline): this connection may still be busy with
            # the statement, so it is never used again.
            await asyncio.shield(self._discard(conn, error if isinstance(error, Exception) else None))
            if isinstance(error, TRANSIENT):
                # The database went away (a restart?): the other held connections are as dead as this one.
                while not self._hot.empty():
                    await asyncio.shield(self._discard(self._hot.get_nowait(), None))
                raise database_unavailable() from error
            raise
        self._hot.put_nowait(conn)
        return found

    async def _traced(self, query: Query, values: Mapping[str, Any]) -> list[Any]:
        statement: Executable = query.statement
        if self._sync is not None:
            if self._traced_conn is None:
                self._traced_conn = self._sync.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                return list(self._traced_conn.execute(statement, values).all())
            except Exception:
                conn, self._traced_conn = self._traced_conn, None
                conn.close()
                raise
        async with self._async.connect() as pooled:
            return list((await pooled.execute(statement, values)).all())

    async def _acquire(self) -> AsyncConnection:
        if self._hot.empty() and self._opened < self._max:
            self._opened += 1
            try:
                return await self._async.connect()
            except BaseException:
                self._opened -= 1
                raise
        return await self._hot.get()

    async def _discard(self, conn: AsyncConnection, error: Exception | None) -> None:
        self._opened -= 1
        with contextlib.suppress(Exception):  # the connection is gone either way
            await conn.invalidate(error)
            await conn.close()

    def _close_loop_reader(self) -> None:
        conn, self._loop_reader = self._loop_reader, None
        if conn is not None:
            conn.close()

    async def close(self) -> None:
        self._close_loop_reader()
        if self._traced_conn is not None:
            self._traced_conn.close()
            self._traced_conn = None
        while not self._hot.empty():
            await self._hot.get_nowait().close()
            self._opened -= 1
        if self._sync is not None:
            self._sync.dispose()


def _read_only(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA query_only=1")
    cursor.close()


__all__ = ["HOT_CONNECTIONS", "HotReads", "Plan", "Query", "database_unavailable"]
