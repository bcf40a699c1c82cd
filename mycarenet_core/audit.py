"""The one writer of the services' audit trails (seed 001 art. 3), by group commit: nothing acknowledged to a
caller is missing from its audit (issue 17).

A call's row is handed to :meth:`AuditWriter.write`, which returns once the row's batch is committed: the
call answers only then. One writer task (:meth:`AuditWriter.run`, a background job of the process) writes
as soon as it is free, in one transaction, every row that arrived meanwhile (one batched INSERT): under
load the rows of many calls share a commit (the cost stays bulk), alone a call waits about one commit.
A process killed outright loses only rows whose calls had not been answered yet.

A cancelled call (its client gone, its deadline passed) answers nobody: its row is queued
(:meth:`AuditWriter.add`) and written with the next batch without anyone waiting. A batch that fails (the
database busy or down) stays queued and is tried again after a backoff; its callers keep waiting (a call's
deadline bounds the wait). A clean stop writes what is left (:meth:`AuditWriter.close`).

:func:`outcome_of` names how a call ended with its real status: a MeshError's status and reason,
UNAVAILABLE DATABASE_BUSY, DEADLINE_EXCEEDED, CANCELLED; INTERNAL only for a bug.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy import Insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from mycarenet_core.db import is_sqlite, to_the_end, write_gate
from mycarenet_core.errors import MeshError
from mycarenet_core.lifecycle import Backoff
from mycarenet_core.reads import Query

log = logging.getLogger(__name__)

Row = dict[str, Any]
Insert_ = Callable[[list[Row]], Awaitable[None]]
MAX_QUEUED = 100_000
"""Rows kept in memory while the database cannot take them; beyond, the oldest unawaited are dropped."""
WRITE_BUSY_TIMEOUT = 5.0
"""Seconds the writer's thread waits for SQLite's write lock (the event loop does not wait)."""


def outcome_of(error: BaseException | None) -> tuple[str, str, tuple[int, ...]]:
    """(status name, reason, MyCareNet codes) of a call that ended with ``error`` (None: OK)."""
    if error is None:
        return "OK", "", ()
    if isinstance(error, MeshError):
        return error.status.name, error.reason, tuple(error.codes)
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):  # the client went away
        return "CANCELLED", "CANCELLED", ()
    if isinstance(error, TimeoutError):
        return "DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED", ()
    from mycarenet_core.server import database_busy  # the server imports the core's modules

    busy = database_busy(error)
    if busy is not None:
        return busy.status.name, busy.reason, tuple(busy.codes)
    return "INTERNAL", type(error).__name__, ()


class AuditWriter:
    """Audit rows of one service, written by group commit (module docstring). ``insert`` writes one batch
    in one transaction; by default one INSERT of ``statement`` behind the engine's write gate: on a SQLite
    file by the writer's own ``sqlite3`` connection in a worker thread (:class:`SqliteBatches`, one hop
    per batch), else by a Core ``executemany`` on a pooled connection."""

    def __init__(
        self,
        engine: AsyncEngine,
        statement: Insert,
        *,
        name: str,
        insert: Insert_ | None = None,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self._engine = engine
        self._statement = statement
        self._insert = insert or self._insert_rows
        self.name = name
        self.max_queued = max_queued
        self._rows: list[Row] = []
        self._waiters: list[asyncio.Future[None] | None] = []
        self._wake = asyncio.Event()
        # One batch at a time: a flush returns once every row queued before it is written.
        self._flushing = asyncio.Lock()
        self._running = False
        self.dropped = 0
        self.batches = 0
        on_file = is_sqlite(engine) and engine.url.database not in (None, "", ":memory:")
        self._sqlite = SqliteBatches(engine, statement) if on_file and insert is None else None

    # --- handing rows over ---------------------------------------------------------------------------------

    def add(self, row: Row, *, awaited: bool = False) -> asyncio.Future[None] | None:
        """Queue ``row``; with ``awaited``, a future done once its batch is committed."""
        waiter = asyncio.get_running_loop().create_future() if awaited else None
        self._rows.append(row)
        self._waiters.append(waiter)
        if len(self._rows) > self.max_queued:
            self._drop_oldest()
        self._wake.set()
        return waiter

    async def write(self, row: Row) -> None:
        """Queue ``row`` and return once it is committed. Cancelled meanwhile, the row is still written."""
        waiter = self.add(row, awaited=True)
        assert waiter is not None
        if not self._running:  # no writer job (a service used without its background): write it here
            await to_the_end(self.flush())
        await waiter  # cancelled meanwhile, the row stays queued and is written all the same

    def _drop_oldest(self) -> None:
        # Never a row someone waits for: those calls have not answered yet.
        excess = len(self._rows) - self.max_queued
        keep = [i for i, w in enumerate(self._waiters) if w is not None or i >= excess]
        dropped = len(self._rows) - len(keep)
        if dropped:
            self._rows = [self._rows[i] for i in keep]
            self._waiters = [self._waiters[i] for i in keep]
            self.dropped += dropped
            log.error("%s audit queue full: %d rows dropped (%d in all)", self.name, dropped, self.dropped)

    @property
    def queued(self) -> int:
        return len(self._rows)

    # --- writing -------------------------------------------------------------------------------------------

    def _write_now(self, batch: list[Row]) -> bool:
        """On a SQLite file, with no writer of the process in the write gate: the batch written at once on
        the loop's thread if the lock is free (no await, so nothing can cut it). False when not written."""
        sqlite = self._sqlite
        if sqlite is None or write_gate(self._engine).locked():  # type: ignore[attr-defined]
            return False
        return sqlite.insert_now(batch)

    async def _checkpoint(self) -> None:
        sqlite = self._sqlite
        if sqlite is not None and sqlite.checkpoint_due:
            async with write_gate(self._engine):
                await asyncio.to_thread(sqlite.checkpoint)

    async def _insert_rows(self, batch: list[Row]) -> None:
        sqlite = self._sqlite
        if sqlite is not None:
            async with write_gate(self._engine):
                if not sqlite.insert_now(batch):
                    await asyncio.to_thread(sqlite.insert, batch)
            return
        async with write_gate(self._engine), self._engine.begin() as conn:
            await conn.execute(self._statement, batch)

    async def flush(self) -> int:
        """Write every queued row in one transaction (one batched INSERT) and wake its waiters; how many.
        On failure the rows stay queued (first) and their waiters keep waiting. Never cut half-way."""
        async with self._flushing:
            if not self._rows:
                return 0
            batch, waiters = self._rows, self._waiters
            self._rows, self._waiters = [], []
            try:
                if not self._write_now(batch):
                    await to_the_end(self._insert(batch))
            except BaseException:
                self._rows[:0], self._waiters[:0] = batch, waiters
                raise
            finally:
                if not self._running and self._sqlite is not None:
                    # No writer job (stopped, or never started): the connection is not kept open.
                    await asyncio.to_thread(self._sqlite.close)
            self.batches += 1
            for waiter in waiters:
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            if self._sqlite is not None and self._sqlite.checkpoint_due:  # after the waiters are on their way
                await to_the_end(self._checkpoint())
            return len(batch)

    async def run(self) -> None:
        """The writer job: write as soon as rows wait and the last batch is committed; a failed batch is
        tried again after a backoff, with the rows queued meanwhile."""
        backoff = Backoff(0.05, 5.0)
        self._running = True
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                try:
                    await self.flush()
                    backoff.reset()
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # the database is down or busy: the rows wait in the queue
                    log.warning("%s audit: %d rows not written yet: %s", self.name, self.queued, error)
                    self._wake.set()
                    await backoff.sleep()
        finally:
            self._running = False

    async def close(self) -> None:
        """Write what is left (a clean stop loses no row): after the server and the writer job stopped."""
        try:
            await self.flush()
        except Exception:
            log.exception("%s audit: %d rows could not be written at stop", self.name, self.queued)
        if self._sqlite is not None:
            await asyncio.to_thread(self._sqlite.close)


class SqliteBatches:
    """The audit writer's own connections of the standard ``sqlite3`` driver (a SQLite file): the INSERT is
    compiled once (a :class:`~mycarenet_core.reads.Query`) and a batch is one ``executemany`` in one
    transaction, where aiosqlite makes a thread hop per step (connect, begin, execute, commit, close), each
    with SQLAlchemy's machinery around it.

    A small batch is first tried on the event loop's own thread (:meth:`insert_now`), on a connection that
    never waits for the lock (busy timeout 0) and never checkpoints: an insert and its commit (no fsync in
    WAL with ``synchronous=NORMAL``) take ~50 us of CPU, a hop to a worker thread several times that. The
    write gate is held, so no writer of the process holds the lock; when another one does all the same, the
    batch goes to a worker thread (:meth:`insert`), whose connection waits for the lock there and also runs
    the WAL checkpoints (:meth:`checkpoint`, every :data:`CHECKPOINT_EVERY` batches written on the loop).
    """

    NOW_AT_MOST = 64
    """Rows of a batch tried on the loop's thread (more go to a worker thread)."""
    CHECKPOINT_EVERY = 200

    def __init__(self, engine: AsyncEngine, statement: Insert) -> None:
        self._file = str(engine.url.database)
        self._dialect = engine.dialect
        self._statement = statement
        self._connection: sqlite3.Connection | None = None
        self._now: sqlite3.Connection | None = None
        self._inserts: dict[tuple[str, ...], Query] = {}
        self._since_checkpoint = 0

    def _plan(self, batch: list[Row]) -> Any:
        keys = tuple(batch[0])
        query = self._inserts.get(keys)
        if query is None:
            query = self._inserts[keys] = Query(self._statement, column_keys=keys)
        return query.plan(self._dialect)

    def _open(self, timeout: float) -> sqlite3.Connection:
        connection = sqlite3.connect(self._file, timeout=timeout, check_same_thread=False)
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection

    def insert_now(self, batch: list[Row]) -> bool:
        """Write ``batch`` at once if the lock is free and the batch small; False when it was not written."""
        if len(batch) > self.NOW_AT_MOST:
            return False
        plan = self._plan(batch)
        if self._now is None:
            self._now = self._open(0)
            self._now.execute("PRAGMA wal_autocheckpoint=0")  # the worker thread checkpoints
        try:
            plan.insert_many(self._now, batch)
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                return False  # rolled back: the worker thread's connection waits for the lock
            self._close_now()
            raise DBAPIError.instance(plan.sql, None, error, sqlite3.Error) from error
        except sqlite3.Error as error:
            self._close_now()
            raise DBAPIError.instance(plan.sql, None, error, sqlite3.Error) from error
        self._since_checkpoint += 1
        return True

    @property
    def checkpoint_due(self) -> bool:
        return self._since_checkpoint >= self.CHECKPOINT_EVERY

    def checkpoint(self) -> None:
        """A passive WAL checkpoint (in a worker thread: it may take a while)."""
        self._since_checkpoint = 0
        if self._connection is None:
            self._connection = self._open(WRITE_BUSY_TIMEOUT)
        self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def insert(self, batch: list[Row]) -> None:
        """Write ``batch`` in a worker thread, waiting for the lock up to :data:`WRITE_BUSY_TIMEOUT`."""
        plan = self._plan(batch)
        if self._connection is None:
            self._connection = self._open(WRITE_BUSY_TIMEOUT)
        try:
            plan.insert_many(self._connection, batch)
        except sqlite3.Error as error:
            self.close()  # a fresh connection for the next attempt
            raise DBAPIError.instance(plan.sql, None, error, sqlite3.Error) from error

    def _close_now(self) -> None:
        connection, self._now = self._now, None
        if connection is not None:
            connection.close()

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
        self._close_now()


def joined(codes: Sequence[int]) -> str:
    return ",".join(str(c) for c in codes)


def answers(error: BaseException | None) -> bool:
    """Whether a call that ended with ``error`` answers its caller (so waits for its audit row): not when
    it was cancelled or its stream closed."""
    return not isinstance(error, (asyncio.CancelledError, GeneratorExit))


__all__ = ["AuditWriter", "answers", "joined", "outcome_of"]
