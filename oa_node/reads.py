"""Where the reads of the hot path run: the same SQLAlchemy Core statements on SQLite and PostgreSQL, each
executed the cheapest way its driver allows, and never in a write transaction.

* PostgreSQL (asyncpg): a few connections held open in AUTOCOMMIT and handed out by a queue: the statement
  is one round trip (prepared once per connection by the driver), with no BEGIN and no ROLLBACK around it,
  and no pool checkout (whose liveness ping is a round trip of its own). A connection that fails is closed
  and replaced at the next read.
* SQLite: one connection of the standard ``sqlite3`` driver, opened read-only (``PRAGMA query_only``) in
  autocommit, and used on the event loop's own thread. An indexed read from SQLite takes tens of
  microseconds, whereas handing it to aiosqlite's worker thread and back costs several times that in CPU
  (a thread hop for the cursor, the execution, the fetch, the close and the pool's rollback). In WAL mode a
  reader never waits for a writer; the busy timeout is short, and a read that still finds the database
  locked answers UNAVAILABLE DATABASE_BUSY (the core error mapping), never blocks the loop for long.

Every statement sees the last committed state (each is its own implicit read transaction).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Executable, Row, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

READ_BUSY_TIMEOUT = 1.0
"""Seconds a SQLite read waits for a lock (WAL readers almost never wait at all)."""
READ_CONNECTIONS = 4
"""PostgreSQL connections held for reads (more reads in flight wait for one)."""


class Reads:
    """Executes read-only statements; :meth:`close` when the node stops."""

    def __init__(self, engine: AsyncEngine, *, connections: int = READ_CONNECTIONS) -> None:
        self._async = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._idle: asyncio.Queue[AsyncConnection] = asyncio.Queue()
        self._opened = 0
        self._max = connections
        self._sync: Engine | None = None
        self._conn: Connection | None = None
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
        """Every row of ``statement`` with ``params``."""
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
        try:
            return self._conn.execute(statement, params).all()
        except Exception:
            self._close_connection()  # a fresh connection next time
            raise

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
        conn, self._conn = self._conn, None
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


def _read_only(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA query_only=1")
    cursor.close()


__all__ = ["Reads"]
