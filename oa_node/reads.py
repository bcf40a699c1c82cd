"""Where the reads of the hot path run: the same SQLAlchemy Core statements on SQLite and PostgreSQL, each
executed the cheapest way its driver allows, and never in a write transaction.

* PostgreSQL (asyncpg): a few connections held open in AUTOCOMMIT and handed out by a queue: the statement
  is one round trip (prepared once per connection by the driver), with no BEGIN and no ROLLBACK around it,
  and no pool checkout (whose liveness ping is a round trip of its own). A connection that fails is closed
  and replaced at the next read.
* SQLite: one connection of the standard ``sqlite3`` driver, opened read-only (``PRAGMA query_only``) in
  autocommit, and used on the event loop's own thread. Each statement is compiled once (:class:`Prepared`:
  its SQL, the order of its parameters, SQLAlchemy's own bind and result processors of its column types)
  and then run on the driver's cursor, whose statement cache keeps it prepared: SQLAlchemy's per-execution
  machinery (execution context, cache key, result object) cost more than the read itself (when the process
  is traced, SQLAlchemy runs it, for the database spans its events give). An indexed read from SQLite takes
  tens of microseconds, whereas handing it to aiosqlite's worker thread and back costs several times that
  in CPU (a thread hop for the cursor, the execution, the fetch, the close and the pool's rollback). In WAL
  mode a reader never waits for a writer; the busy timeout is short, and a read that still finds the database
  locked answers UNAVAILABLE DATABASE_BUSY (the core error mapping), never blocks the loop for long.

Every statement sees the last committed state (each is its own implicit read transaction).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect, Engine, Executable, Row, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.compiler import SQLCompiler

log = logging.getLogger(__name__)

READ_BUSY_TIMEOUT = 1.0
"""Seconds a SQLite read waits for a lock (WAL readers almost never wait at all)."""
READ_CONNECTIONS = 4
"""PostgreSQL connections held for reads (more reads in flight wait for one)."""


@dataclass(frozen=True)
class Prepared:
    """A read statement compiled once for the SQLite driver: run with :meth:`run` on a DB-API cursor."""

    sql: str
    names: tuple[str, ...]
    """The parameter of each ``?``, in order (a name may repeat)."""
    fixed: Mapping[str, Any]
    """The values the statement itself binds (constants), by parameter name."""
    binds: Mapping[str, Callable[[Any], Any] | None]
    """SQLAlchemy's bind processor of each parameter's type (a date to its ISO text...)."""
    results: tuple[Callable[[Any], Any] | None, ...]
    """SQLAlchemy's result processor of each column's type (ISO text to a date...)."""
    row: Callable[..., Any]
    """The row type: a named tuple of the statement's column labels."""

    @classmethod
    def compile(
        cls, statement: Executable, dialect: Dialect, *, column_keys: Sequence[str] | None = None
    ) -> Prepared:
        """``statement`` compiled for ``dialect`` (an INSERT: for the values of ``column_keys``)."""
        compiled = statement.compile(dialect=dialect, column_keys=column_keys)  # type: ignore[attr-defined]
        assert isinstance(compiled, SQLCompiler)
        assert compiled.positiontup is not None
        if any(bind.expanding for bind in compiled.binds.values()):
            raise ValueError("an expanding (IN) parameter cannot be prepared once")
        names = tuple(compiled.positiontup)
        columns = compiled._result_columns
        return cls(
            sql=compiled.string,
            names=names,
            fixed={k: v for k, v in compiled.construct_params(_check=False).items() if v is not None},
            binds={name: compiled.binds[name].type._cached_bind_processor(dialect) for name in set(names)},
            results=tuple(column.type._cached_result_processor(dialect, None) for column in columns),
            row=collections.namedtuple("PreparedRow", [column.keyname for column in columns]),
        )

    def parameters(self, params: Mapping[str, Any]) -> list[Any]:
        values = []
        for name in self.names:
            value = params[name] if name in params else self.fixed[name]
            process = self.binds[name]
            values.append(value if process is None or value is None else process(value))
        return values

    def run_many(self, connection: Any, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute the statement (an INSERT) once per row, in one transaction of ``connection``."""
        with connection:  # commits, or rolls back on an error
            connection.executemany(self.sql, [self.parameters(row) for row in rows])

    def run(self, cursor: Any, params: Mapping[str, Any]) -> list[Any]:
        cursor.execute(self.sql, self.parameters(params))
        results, row = self.results, self.row
        return [
            row(
                *[
                    value if process is None else process(value)
                    for value, process in zip(raw, results, strict=True)
                ]
            )
            for raw in cursor.fetchall()
        ]


class Reads:
    """Executes read-only statements; :meth:`close` when the node stops."""

    def __init__(self, engine: AsyncEngine, *, connections: int = READ_CONNECTIONS) -> None:
        self._async = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._idle: asyncio.Queue[AsyncConnection] = asyncio.Queue()
        self._opened = 0
        self._max = connections
        self._sync: Engine | None = None
        self._conn: Connection | None = None
        self._cursor: Any = None
        self._prepared: dict[Executable, Prepared] = {}
        self.traced = False
        """Set when the synchronous engine is instrumented: reads then go through SQLAlchemy (spans)."""
        url = engine.url
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            self._sync = create_engine(
                make_url(url).set(drivername="sqlite"),
                connect_args={"timeout": READ_BUSY_TIMEOUT, "check_same_thread": False},
            )
            event.listen(self._sync, "connect", _read_only)

    @property
    def sync_engine(self) -> Engine | None:
        """The read-only synchronous SQLite engine, when there is one (for telemetry's database spans)."""
        return self._sync

    async def all(self, statement: Executable, params: Mapping[str, Any]) -> Sequence[Row[Any]]:
        """Every row of ``statement`` with ``params`` (rows with the statement's column labels as
        attributes)."""
        if self._sync is None:
            conn = await self._acquire()
            try:
                rows = (await conn.execute(statement, params)).all()
            except BaseException:
                await self._discard(conn)  # failed, or cancelled in the middle: never reused
                raise
            self._idle.put_nowait(conn)
            return rows
        if self._conn is None:
            self._conn = self._sync.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._cursor = self._conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        if self.traced:
            try:
                return self._conn.execute(statement, params).all()
            except Exception:
                self._close_connection()  # a fresh connection next time
                raise
        prepared = self._prepared.get(statement)
        if prepared is None:
            prepared = self._prepared[statement] = Prepared.compile(statement, self._sync.dialect)
        try:
            return prepared.run(self._cursor, params)
        except Exception as error:
            self._close_connection()
            raise _as_dbapi_error(error, prepared) from error

    async def _acquire(self) -> AsyncConnection:
        if self._idle.empty() and self._opened < self._max:
            self._opened += 1
            try:
                return await self._async.connect()
            except BaseException:
                self._opened -= 1
                raise
        return await self._idle.get()

    async def _discard(self, conn: AsyncConnection) -> None:
        self._opened -= 1
        try:
            await asyncio.shield(conn.invalidate())
            await asyncio.shield(conn.close())
        except Exception:
            log.exception("closing a failed read connection failed")

    def _close_connection(self) -> None:
        conn, self._conn, self._cursor = self._conn, None, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                log.exception("closing the read connection failed")

    async def close(self) -> None:
        while not self._idle.empty():
            await self._idle.get_nowait().close()
            self._opened -= 1
        self._close_connection()
        if self._sync is not None:
            self._sync.dispose()


def _as_dbapi_error(error: Exception, prepared: Prepared) -> Exception:
    """A driver error wrapped as SQLAlchemy wraps it (``DBAPIError``: what the error mapping reads, e.g. a
    locked database is UNAVAILABLE DATABASE_BUSY); any other error as it is."""
    import sqlite3

    from sqlalchemy.exc import DBAPIError

    if isinstance(error, sqlite3.Error):
        return DBAPIError.instance(prepared.sql, None, error, sqlite3.Error)
    return error


def _read_only(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA query_only=1")
    cursor.close()


__all__ = ["Prepared", "Reads"]
