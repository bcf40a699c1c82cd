"""Schema migrations (Alembic): one migration history per service, applied by each service at start.

Each service keeps its history inside its own package (``ehealth/migrations``, ``hub/migrations``,
``oa_node/migrations``: an ``env.py`` that calls :func:`run_env` with the service's metadata, and
``versions/``), so that a wheel or a container image carries it. No ``alembic.ini``: the configuration is
built here. Each history records its revision in a version table of its own (``alembic_version_<service>``),
so that two services pointed at one database by mistake do not read each other's revision.

The apps call :func:`upgrade` (``upgrade head``) instead of creating tables. Developers use the command::

    python -m mycarenet_core.migrations SERVICE revision --autogenerate -m "add a column" [--url URL]
    python -m mycarenet_core.migrations SERVICE upgrade|downgrade|current [REVISION] [--url URL]

with SERVICE one of ``ehealth``, ``hub``, ``oa_node``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.types import TypeDecorator

from mycarenet_core.db import create_engine, normalise_url


@dataclass(frozen=True)
class History:
    """Where a service's migration history is and which version table it records its revision in."""

    script_location: str
    version_table: str


HISTORIES = {
    "ehealth": History("ehealth:migrations", "alembic_version_ehealth"),
    "hub": History("hub:migrations", "alembic_version_hub"),
    "oa_node": History("oa_node:migrations", "alembic_version_oa"),
}


def config(script_location: str, url: str | None = None, connection: Connection | None = None) -> Config:
    """An Alembic configuration for one history (a ``package:folder`` or a path), without any file."""
    cfg = Config()
    cfg.set_main_option("script_location", script_location)
    # Revision files named v<rev>_<slug>.py: valid module names for mypy and ruff.
    cfg.set_main_option("file_template", "v%%(rev)s_%%(slug)s")
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


# Alembic's ``context`` and ``op`` are process-wide proxies, and ``run_sync`` lets the event loop run other
# tasks at every database round trip: two services migrating at once in one process (the in-process test
# meshes) would send each other's operations to the wrong database. Migrations in one loop take turns.
_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _turn() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _turns.get(loop)
    if lock is None:
        lock = _turns[loop] = asyncio.Lock()
    return lock


async def _run(engine_or_url: AsyncEngine | str, action: Callable[[Connection], None]) -> None:
    engine = create_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    try:
        async with _turn(), engine.begin() as conn:
            await conn.run_sync(action)
    finally:
        if isinstance(engine_or_url, str):
            await engine.dispose()


async def upgrade(engine_or_url: AsyncEngine | str, script_location: str, revision: str = "head") -> None:
    """``alembic upgrade head`` (or ``revision``) on the engine's database, in one transaction."""

    def action(conn: Connection) -> None:
        command.upgrade(config(script_location, connection=conn), revision)

    await _run(engine_or_url, action)


async def downgrade(engine_or_url: AsyncEngine | str, script_location: str, revision: str = "base") -> None:
    """``alembic downgrade base`` (or ``revision``)."""

    def action(conn: Connection) -> None:
        command.downgrade(config(script_location, connection=conn), revision)

    await _run(engine_or_url, action)


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render the services' column types (SQLModel's ``AutoString``, eHealth's ``UtcDateTime``...) as the
    plain SQLAlchemy type they store, so that migrations never import application code."""
    if type_ == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl_instance!r}"
    return False


def context_options(metadata: MetaData, version_table: str) -> dict[str, Any]:
    """The options every history configures its migration context with (also for ``compare_metadata``)."""
    return {
        "target_metadata": metadata,
        "version_table": version_table,
        "render_as_batch": True,  # SQLite alters tables by copying them; PostgreSQL alters in place
        "compare_type": True,
        "render_item": _render_item,
    }


def run_env(metadata: MetaData, version_table: str) -> None:
    """The body of every service's ``env.py``: offline (SQL script), on a given connection (the apps and
    the tests), or on an async engine made from ``sqlalchemy.url`` (the command line)."""
    from alembic import context  # the proxy of the environment that runs this env.py

    options = context_options(metadata, version_table)
    cfg = context.config

    def on(connection: Connection) -> None:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()

    if context.is_offline_mode():
        context.configure(url=cfg.get_main_option("sqlalchemy.url"), literal_binds=True, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = cfg.attributes.get("connection")
    if connection is not None:
        on(connection)
        return
    url = cfg.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection and no sqlalchemy.url: pass --url")
    asyncio.run(_run(url, on))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mycarenet_core.migrations", description=__doc__)
    parser.add_argument("service", choices=sorted(HISTORIES))
    parser.add_argument("action", choices=["upgrade", "downgrade", "current", "history", "revision"])
    parser.add_argument("revision", nargs="?", help="target revision (upgrade: head, downgrade: -1)")
    parser.add_argument("--url", help="database URL (default for revision: a scratch SQLite at head)")
    parser.add_argument("-m", "--message", default="change")
    parser.add_argument("--autogenerate", action="store_true")
    parser.add_argument("--rev-id", help="revision id of a new revision (default: next number)")
    args = parser.parse_args(argv)
    history = HISTORIES[args.service]
    with tempfile.TemporaryDirectory() as scratch:
        url = args.url or f"sqlite+aiosqlite:///{Path(scratch) / 'scratch.db'}"
        cfg = config(history.script_location, url)
        if args.action == "upgrade":
            command.upgrade(cfg, args.revision or "head")
        elif args.action == "downgrade":
            command.downgrade(cfg, args.revision or "-1")
        elif args.action == "current":
            command.current(cfg, verbose=True)
        elif args.action == "history":
            command.history(cfg)
        else:
            if not args.url:
                command.upgrade(cfg, "head")  # autogenerate compares the models with the schema at head
            count = len(list(ScriptDirectory.from_config(cfg).walk_revisions()))
            command.revision(
                cfg,
                message=args.message,
                autogenerate=args.autogenerate,
                rev_id=args.rev_id or f"{count + 1:04d}",
            )


if __name__ == "__main__":
    main()
