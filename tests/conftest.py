"""Shared fixtures: database URLs for the two back ends every storage test runs on."""

from __future__ import annotations

import concurrent.futures
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

PG_ADMIN_URL = os.environ.get("MCN_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_available() -> bool:
    import asyncio

    import asyncpg

    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(PG_ADMIN_URL, timeout=3)
        except (OSError, asyncpg.PostgresError):
            return False
        await conn.close()
        return True

    # Run in a thread: the fixture may be requested from inside a running event loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, probe()).result()


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """The PostgreSQL server; its absence fails the run (CI must exercise PostgreSQL, never skip it)."""
    if not _pg_available():
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL} (see README: start it, or set MCN_TEST_PG_URL)"
        )
    return PG_ADMIN_URL


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database URL (SQLAlchemy async form), once on SQLite and once on a fresh PostgreSQL db."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    import asyncpg

    admin = request.getfixturevalue("pg_admin_url")
    name = f"mcn_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
