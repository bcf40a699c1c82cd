"""``python -m oa_node.dead_letters``: the outbox messages an insurer node set aside (dead letters).

The outbox relay sets a message aside when it cannot be delivered because of itself (bigger than a
delivery may be, or refused by the hub for good); the messages behind it go on. This lists them with their
error, and re-queues the ones whose cause was fixed (the relay takes them at its next wake-up: restart the
node, or let it deliver its next message)::

    python -m oa_node.dead_letters [--database-url URL] list [--limit N]
    python -m oa_node.dead_letters [--database-url URL] requeue ROW_ID...

The database is the node's (``--database-url``, or ``MCN_OA_DATABASE_URL``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from mycarenet_core.db import create_engine, session_factory, transaction
from oa_node.repositories import OutboxRepository
from oa_node.repositories.records import DeadLetter


async def list_dead(url: str, limit: int = 100) -> list[DeadLetter]:
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            return await OutboxRepository(session).dead(limit)
    finally:
        await engine.dispose()


async def requeue(url: str, row_ids: Sequence[int]) -> int:
    engine = create_engine(url)
    try:
        async with transaction(session_factory(engine)) as session:
            return await OutboxRepository(session).requeue(row_ids)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    summary = (__doc__ or "").split("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m oa_node.dead_letters", description=summary)
    parser.add_argument("--database-url", default=os.environ.get("MCN_OA_DATABASE_URL", ""))
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="the set-aside messages, oldest first")
    listing.add_argument("--limit", type=int, default=100)
    again = commands.add_parser("requeue", help="put set-aside messages back in the queue")
    again.add_argument("row_ids", type=int, nargs="+")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("give --database-url (or set MCN_OA_DATABASE_URL)")
    if args.command == "requeue":
        count = asyncio.run(requeue(args.database_url, args.row_ids))
        print(f"{count} message(s) re-queued")
        return 0
    letters = asyncio.run(list_dead(args.database_url, args.limit))
    for d in letters:
        print(
            f"{d.id}\t{d.message_id}\tto {d.recipient_inami}\tkind {d.kind}\t{d.size} bytes\t"
            f"set aside {d.dead_at.isoformat()}\t{d.error}"
        )
    print(f"{len(letters)} dead letter(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
