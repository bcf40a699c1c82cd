"""Each service's migration history, on SQLite and PostgreSQL: ``upgrade head`` yields exactly the schema
of the models (autogenerate finds nothing to do), and ``downgrade base`` removes every table again."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, inspect
from sqlalchemy.engine import Connection

from ehealth.models import metadata as ehealth_metadata
from hub.models import HubBase
from mycarenet_core.db import create_engine
from mycarenet_core.migrations import HISTORIES, context_options, downgrade, upgrade
from oa_node.models import metadata as oa_metadata

METADATA: dict[str, MetaData] = {
    "ehealth": ehealth_metadata,
    "hub": HubBase.metadata,
    "oa_node": oa_metadata,
}


def _differences(conn: Connection, service: str) -> list[Any]:
    history = HISTORIES[service]
    context = MigrationContext.configure(conn, opts=context_options(METADATA[service], history.version_table))
    return list(compare_metadata(context, METADATA[service]))


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


@pytest.mark.parametrize("service", sorted(HISTORIES))
async def test_upgrade_head_matches_the_models_and_downgrade_base_empties(
    service: str, database_url: str
) -> None:
    history = HISTORIES[service]
    engine = create_engine(database_url)
    try:
        await upgrade(engine, history.script_location)
        async with engine.connect() as conn:
            assert await conn.run_sync(_differences, service) == []
            tables = await conn.run_sync(_tables)
        assert tables == set(METADATA[service].tables) | {history.version_table}

        await upgrade(engine, history.script_location)  # at head already: nothing to do, no error

        await downgrade(engine, history.script_location)
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) == {history.version_table}
    finally:
        await engine.dispose()


@pytest.mark.parametrize("service", sorted(HISTORIES))
def test_history_ships_inside_the_package_and_never_imports_the_app(service: str) -> None:
    package, folder = HISTORIES[service].script_location.split(":")
    location = files(package) / folder
    assert (location / "env.py").is_file()
    assert (location / "script.py.mako").is_file()
    revisions = [f for f in (location / "versions").iterdir() if f.name.endswith(".py")]
    assert revisions
    for revision in revisions:
        text = revision.read_text()
        # A revision is frozen history: it must not change when the models or app code change later.
        assert f"import {package}" not in text
        assert f"from {package}" not in text
        assert "sqlmodel" not in text


async def test_services_migrating_at_once_in_one_process_keep_to_their_own_database(tmp_path: Any) -> None:
    import asyncio

    engines = {
        service: create_engine(f"sqlite+aiosqlite:///{tmp_path / service}.db") for service in HISTORIES
    }
    try:
        await asyncio.gather(
            *(upgrade(engine, HISTORIES[service].script_location) for service, engine in engines.items())
        )
        for service, engine in engines.items():
            async with engine.connect() as conn:
                assert await conn.run_sync(_differences, service) == []
    finally:
        for engine in engines.values():
            await engine.dispose()
