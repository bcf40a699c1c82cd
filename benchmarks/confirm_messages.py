"""ConfirmMessages at its cap: one call confirming 1000 message ids and 1000 content hashes (issue 17: 20,000
ids took 46 s when each id was one query; the ids are now capped at ``hub.requests.MAX_CONFIRM`` and looked up
500 at a time).

Stores the messages in a fresh hub database (SQLite file, or a new PostgreSQL database with ``--postgres``),
then times the repository's confirm (the transaction of one call) and a second, identical call (all
already confirmed)::

    .venv/bin/python benchmarks/confirm_messages.py
    .venv/bin/python benchmarks/confirm_messages.py --postgres postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import text

from hub.mailbox import MailboxRepository, content_hash
from hub.models import HubBase
from hub.requests import MAX_CONFIRM
from mycarenet_core.db import create_engine, create_schema, session_factory, transaction
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2

GP = "10000101004"
NOW = dt.datetime(2025, 3, 4, 10, 0, tzinfo=dt.UTC)


def closure(index: int) -> dmg_pb2.MailboxMessage:
    return dmg_pb2.MailboxMessage(
        message_id=f"confirm-{index:05d}",
        kind=dmg_pb2.MESSAGE_KIND_CLOSURE,
        insurer_code="100",
        recipient_inami=GP,
        closure=dmg_pb2.ClosureMessage(patient=common_pb2.Patient(niss=f"{80051700000 + index:011d}")),
    )


async def run(url: str, count: int) -> dict[str, float]:
    engine = create_engine(url)
    try:
        await create_schema(engine, HubBase.metadata)
        sessions = session_factory(engine)
        messages = [closure(i) for i in range(2 * count)]
        async with transaction(sessions) as session:
            await MailboxRepository(session).store(messages, NOW)
        ids = [m.message_id for m in messages[:count]]
        hashes = [content_hash(m) for m in messages[count:]]
        figures: dict[str, float] = {}
        for label in ("first", "again"):
            started = time.perf_counter()
            async with transaction(sessions) as session:
                result = await MailboxRepository(session).confirm(GP, ids, hashes, NOW)
            figures[f"{label}_seconds"] = round(time.perf_counter() - started, 3)
            figures[f"{label}_confirmed"] = result.confirmed
            figures[f"{label}_already"] = result.already
        return figures
    finally:
        await engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--postgres", help="a PostgreSQL server URL (a scratch database is made and dropped)")
    parser.add_argument("--count", type=int, default=MAX_CONFIRM, help="ids (and as many hashes) per call")
    args = parser.parse_args()
    if args.postgres:
        name = f"bench_confirm_{uuid.uuid4().hex[:8]}"
        admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            figures = await run(args.postgres.rsplit("/", 1)[0] + f"/{name}", args.count)
        finally:
            async with admin.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            await admin.dispose()
        backend = "postgresql"
    else:
        with tempfile.TemporaryDirectory() as folder:
            figures = await run(f"sqlite+aiosqlite:///{Path(folder) / 'hub.db'}", args.count)
        backend = "sqlite"
    print({"backend": backend, "ids": args.count, "hashes": args.count, **figures})


if __name__ == "__main__":
    asyncio.run(main())
