"""Database plumbing shared by the services: one async engine per service instance, sessions, schema.

Each service declares its tables on its own SQLModel base made by :func:`declarative_base` so that its
metadata holds only its own tables (several services run in one test process). The same code runs on SQLite
(embedded default, ``sqlite+aiosqlite:///path.db``) and PostgreSQL (``postgresql+asyncpg://...``).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, MetaData, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import registry
from sqlmodel import SQLModel

T = TypeVar("T")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def declarative_base() -> type[SQLModel]:
    """A SQLModel base class with a registry (and metadata) of its own."""

    class Base(SQLModel, registry=registry(metadata=MetaData(naming_convention=NAMING))):
        pass

    return Base


def normalise_url(url: str) -> str:
    """Accept plain ``postgresql://`` and ``sqlite:///`` URLs and pick the async drivers."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed.render_as_string(hide_password=False)


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine; SQLite gets WAL, foreign keys and a busy timeout, its folder is created."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


async def to_the_end(work: Awaitable[T]) -> T:
    """Await ``work`` in a task of its own that a cancellation of the caller never interrupts: a cancelled
    caller waits until the work has ended, then raises its CancelledError (once, however often it was
    cancelled meanwhile).

    A database call cut half-way by a cancellation is what left the hub's SQLite write-locked for minutes
    (issue 17): the CancelledError thrown into SQLAlchemy's greenlet made it invalidate the connection, and
    the driver's close and stop, raced by a second cancellation, stopped the aiosqlite thread without
    closing its sqlite3 connection, whose open write transaction then held the lock until the garbage
    collector found it. Run to its end, every call leaves its connection in a known state and the
    transaction ends by an explicit rollback or commit (see :class:`SafeSession`).
    """
    task = asyncio.ensure_future(work)
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError as error:
            if not task.done():
                cancelled = cancelled or error
                continue
            if cancelled is None:
                raise  # the work itself was cancelled
            break
        except BaseException:
            if cancelled is None:
                raise
            break
        else:
            if cancelled is None:
                return result
            break
    if not task.cancelled():
        task.exception()  # retrieved: the caller's cancellation is what it sees
    raise cancelled


class SafeSession(AsyncSession):
    """An :class:`AsyncSession` whose database calls run to their end even when the calling task is
    cancelled (:func:`to_the_end`); the cancellation reaches the caller between two calls, where the
    :func:`transaction` rolls back and returns the connection cleanly. SQLite and PostgreSQL alike."""

    async def execute(self, *args: Any, **kw: Any) -> Any:
        return await to_the_end(super().execute(*args, **kw))

    async def scalar(self, *args: Any, **kw: Any) -> Any:
        return await to_the_end(super().scalar(*args, **kw))

    async def scalars(self, *args: Any, **kw: Any) -> Any:
        return await to_the_end(super().scalars(*args, **kw))

    async def get(self, *args: Any, **kw: Any) -> Any:
        return await to_the_end(super().get(*args, **kw))

    async def get_one(self, *args: Any, **kw: Any) -> Any:
        return await to_the_end(super().get_one(*args, **kw))

    async def merge(self, *args: Any, **kw: Any) -> Any:
        return await to_the_end(super().merge(*args, **kw))

    async def delete(self, *args: Any, **kw: Any) -> None:
        await to_the_end(super().delete(*args, **kw))

    async def refresh(self, *args: Any, **kw: Any) -> None:
        await to_the_end(super().refresh(*args, **kw))

    async def flush(self, *args: Any, **kw: Any) -> None:
        await to_the_end(super().flush(*args, **kw))

    async def run_sync(self, *args: Any, **kw: Any) -> Any:
        return await to_the_end(super().run_sync(*args, **kw))

    async def commit(self) -> None:
        await to_the_end(super().commit())

    async def rollback(self) -> None:
        await to_the_end(super().rollback())

    async def close(self) -> None:
        await to_the_end(super().close())


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose database calls a cancellation never cuts (:class:`SafeSession`)."""
    return async_sessionmaker(engine, expire_on_commit=False, class_=SafeSession)


async def create_schema(engine: AsyncEngine, metadata: MetaData) -> None:
    """Create the tables that do not exist yet (the schema of a service)."""
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


_write_gates: weakref.WeakKeyDictionary[Engine, asyncio.Lock] = weakref.WeakKeyDictionary()


def write_gate(engine: AsyncEngine | Engine) -> AbstractAsyncContextManager[Any]:
    """Where the write transactions of one process on one SQLite database queue, in their order of arrival.

    SQLite has one writer at a time. Without the gate, the writers of a busy process would meet at SQLite's
    lock and poll it from its busy handler, which retries at growing intervals: unfair (a late writer may
    pass a waiting one) and slow to notice a free lock, so the tail of a busy insurer's notifications
    reached a second. Behind the gate they wait in a FIFO (an :class:`asyncio.Lock`) and enter SQLite's
    lock free. The gate also makes each transaction's reads and writes one unit in the process (the
    driver starts SQLite's transaction only at the first write). PostgreSQL has no gate (its writers do
    not exclude one another).
    """
    sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    if sync.dialect.name != "sqlite":
        return contextlib.nullcontext()
    gate = _write_gates.get(sync)
    if gate is None:
        gate = _write_gates[sync] = asyncio.Lock()
    return gate


@asynccontextmanager
async def transaction(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session inside one transaction (behind the :func:`write_gate` of its engine): committed on
    success, rolled back on any exception, a cancellation included; the connection is back in its pool
    before the gate opens for the next writer. The commit, the rollback and the close run to their end
    (:func:`to_the_end`) whatever happens to the calling task: a cancelled call leaves no transaction, no
    lock and no connection behind (issue 17)."""
    bind = factory.kw.get("bind")
    gate = write_gate(bind) if bind is not None else contextlib.nullcontext()
    async with gate:
        session = factory()  # it begins at its first statement
        try:
            yield session
            await to_the_end(AsyncSession.commit(session))
        except BaseException:
            await to_the_end(AsyncSession.rollback(session))
            raise
        finally:
            await to_the_end(AsyncSession.close(session))
