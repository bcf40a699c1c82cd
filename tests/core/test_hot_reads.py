"""The hot reads of every service: a statement compiled once and run by the SQLite driver answers exactly
what SQLAlchemy answers for it (types converted by SQLAlchemy's own processors), and a locked database
answers UNAVAILABLE DATABASE_BUSY, the connection replaced."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import grpc
import pytest
from sqlalchemy import (
    Boolean,
    Column,
    Date,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    create_engine,
    exists,
    select,
)
from sqlalchemy.ext.asyncio import create_async_engine

from mycarenet_core.errors import MeshError
from mycarenet_core.reads import HotReads, Query

metadata = MetaData()
thing = Table(
    "thing",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String),
    Column("day", Date),
    Column("flag", Boolean),
)
STATEMENT = Query(
    select(
        thing.c.id,
        thing.c.name,
        thing.c.day.label("on_day"),
        thing.c.flag,
        exists().where(thing.c.day > bindparam("day")).label("later"),
    )
    .where(
        thing.c.day <= bindparam("day"),
        thing.c.name.is_distinct_from("hidden"),
        thing.c.id >= bindparam("min_id"),
    )
    .order_by(thing.c.id)
    .limit(10)
)
ROWS = [
    {"id": 1, "name": "a", "day": dt.date(2012, 7, 1), "flag": True},
    {"id": 2, "name": None, "day": dt.date(2012, 9, 1), "flag": False},
    {"id": 3, "name": "hidden", "day": dt.date(2012, 1, 1), "flag": None},
    {"id": 4, "name": "d", "day": dt.date(2015, 5, 23), "flag": True},
]


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'reads.db'}"
    engine = create_engine(url)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(thing.insert(), ROWS)
    engine.dispose()
    return url


@pytest.mark.parametrize("day", [dt.date(2011, 1, 1), dt.date(2012, 9, 1), dt.date(2020, 1, 1)])
async def test_a_prepared_read_answers_what_sqlalchemy_answers(database: str, day: dt.date) -> None:
    engine = create_async_engine(database.replace("sqlite://", "sqlite+aiosqlite://"))
    reads = HotReads(engine)
    try:
        params = {"day": day, "min_id": 1}
        lean = await reads.all(STATEMENT, params)
        reads.traced = True  # the same read through SQLAlchemy (what a traced process does)
        expected = await reads.all(STATEMENT, params)
        assert [tuple(r) for r in lean] == [tuple(r) for r in expected]
        assert [r._fields for r in lean[:1]] == [("id", "name", "on_day", "flag", "later")][: len(lean)]
        assert all(isinstance(r.on_day, dt.date) for r in lean)
        if day == dt.date(2012, 9, 1):
            assert [(r.id, r.on_day, r.flag, r.later) for r in lean] == [
                (1, dt.date(2012, 7, 1), True, True),
                (2, dt.date(2012, 9, 1), False, True),
            ]
    finally:
        await reads.close()
        await engine.dispose()


def test_an_expanding_parameter_is_refused_at_preparation() -> None:
    statement = select(thing.c.id).where(thing.c.id.in_(bindparam("ids", expanding=True)))
    with pytest.raises(ValueError, match="expanding"):
        Query(statement).plan(create_engine("sqlite://").dialect)


async def test_a_locked_database_answers_unavailable_and_the_connection_is_replaced(database: str) -> None:
    engine = create_async_engine(database.replace("sqlite://", "sqlite+aiosqlite://"))
    reads = HotReads(engine)
    path = database.removeprefix("sqlite:///")
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        await reads.all(STATEMENT, {"day": dt.date(2012, 9, 1), "min_id": 1})  # connection opened
        locker.execute("PRAGMA journal_mode=DELETE")
        locker.execute("BEGIN EXCLUSIVE")  # no reader may read a rollback-journal database now
        with pytest.raises(MeshError) as failed:
            await reads.all(STATEMENT, {"day": dt.date(2012, 9, 1), "min_id": 1})
        assert (failed.value.status, failed.value.reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_BUSY")
        assert "locked" in str(failed.value.__cause__)
        locker.execute("ROLLBACK")
        assert len(await reads.all(STATEMENT, {"day": dt.date(2012, 9, 1), "min_id": 1})) == 2  # reconnected
    finally:
        locker.close()
        await reads.close()
        await engine.dispose()
