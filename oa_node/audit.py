"""The audit trail (seed 001 art. 3): one row per request, with who is responsible (the requester of
record), who executed it (executor, mandate, session), when, and how it ended (status, MyCareNet codes,
incidents met while processing).

How durable a row is depends on what the request did:

* a request that changed something (notify, intake, enrolment, member and reference upserts) writes
  its row in the SAME transaction as the change (:meth:`AuditTrail.transaction`): the row is exactly as
  durable as the change;
* every other row (reads such as a consult, rejections, replays answered from the record, refusals of
  the trust model) is written by group commit (:class:`~mycarenet_core.audit.AuditWriter`): the request
  answers once its row's batch is committed, and the rows of concurrent requests share one batched Core
  INSERT. A cancelled request (nobody is answered) has its row written with the next batch without
  waiting. A crash of the process (SIGKILL, power loss) loses no row of an answered request (issue 17).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from mycarenet_core.audit import AuditWriter, answers, joined, outcome_of
from mycarenet_core.clock import Clock
from mycarenet_core.db import is_sqlite, transaction, write_gate
from mycarenet_core.errors import MeshError
from mycarenet_core.gen.mycarenet.oa.v1 import context_pb2
from mycarenet_core.reads import Query
from mycarenet_core.trust import CallRecord, current_peer
from oa_node import models as m

log = logging.getLogger(__name__)

AUDIT = m.table_of(m.AuditRecord)
INSERT_AUDIT = insert(AUDIT)
# Refusals of the trust model itself (the handler never ran, so no operation audited the call).
TRUST_REFUSALS = frozenset({"CERTIFICATE_NOT_ALLOWED", "METHOD_NOT_IN_TRUST_TABLE"})
WRITE_BUSY_TIMEOUT = 5.0
"""Seconds the audit writer's thread waits for SQLite's write lock (the event loop does not wait)."""


@dataclass
class AuditEntry:
    """What a request's audit row will say; the work may fill ``patient_niss``, ``outcome`` and
    ``incidents`` as it learns them."""

    rpc: str
    fields: dict[str, Any] = field(default_factory=dict)
    patient_niss: str = ""
    outcome: str = "OK"
    incidents: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    stored: bool = False
    """True once the row was written in the transaction of the request's change."""

    def row(self, *, at: dt.datetime, status: str, codes: str) -> dict[str, Any]:
        return {
            "at": at,
            "rpc": self.rpc,
            "requester_inami": "",
            "requester_role": 0,
            "executor_id": "",
            "executor_kind": "",
            "mandate_id": "",
            "session_id": "",
            "organisation_inami": "",
            "requester_reference": "",
            "peer": "",
            **self.fields,
            "patient_niss": self.patient_niss,
            "outcome": self.outcome,
            "status_code": status,
            "mycarenet_codes": codes,
            "incidents": "; ".join(self.incidents)[:2000],
            "duration_ms": int((time.monotonic() - self.started) * 1000),
        }


def peer_of(context: Any) -> str:
    """Who called, for the audit: the certificate kind the trust model admitted, and the address."""
    return f"{current_peer().name}@{context.peer()}"


def context_fields(context: context_pb2.RequestContext | None, peer: str) -> dict[str, Any]:
    """The audit columns taken from a RequestContext (the hub's view of the eHealth session)."""
    if context is None:
        return {"peer": peer}
    return {
        "requester_inami": context.requester_inami[:32],
        "requester_role": int(context.requester_role),
        "executor_id": context.executor_id[:64],
        "executor_kind": context.executor_kind[:64],
        "mandate_id": context.mandate_id[:64],
        "session_id": context.session_id[:64],
        "organisation_inami": context.organisation_inami[:32],
        "requester_reference": context.requester_reference[:200],
        "peer": peer,
    }


class AuditTrail:
    """Rows written by group commit, or in the transaction of a change (module docstring)."""

    def __init__(
        self,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        *,
        gather: float = 0.0,
    ) -> None:
        # ``gather`` is kept for the callers' sake: the writer writes as soon as it is free.
        self._engine = engine
        self._sessions = sessions
        self._clock = clock
        on_file = is_sqlite(engine) and engine.url.database not in (None, "", ":memory:")
        self._sqlite = _SqliteWriter(engine) if on_file else None
        self.writer = AuditWriter(
            engine, INSERT_AUDIT, name="oa", insert=self._insert if self._sqlite is not None else None
        )

    async def close(self) -> None:
        """Close the writer's own connection (after the last flush)."""
        if self._sqlite is not None:
            await asyncio.to_thread(self._sqlite.close)

    # --- recording ----------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def call(self, rpc: str, fields: dict[str, Any]) -> AsyncIterator[AuditEntry]:
        """Audit the enclosed request: its row is written with its outcome (OK; REJECTED with the status
        and codes of a MeshError; CANCELLED; ERROR with UNAVAILABLE DATABASE_BUSY, DEADLINE_EXCEEDED or,
        for a bug, INTERNAL), unless the request's own transaction already wrote it. The request answers
        once the row is committed; a cancelled one does not wait."""
        entry = AuditEntry(rpc, fields)
        try:
            yield entry
        except BaseException as error:
            status, _reason, codes = outcome_of(error)
            if isinstance(error, MeshError):
                entry.outcome = "REJECTED"
                entry.incidents.append(error.message)
            elif not answers(error):
                entry.outcome = "CANCELLED"
            else:
                entry.outcome = "ERROR"
                entry.incidents.append(f"{type(error).__name__}: {error}")
            row = self._row(entry, status, joined(codes))
            if answers(error):
                await self.writer.write(row)
            else:
                self.writer.add(row)
            raise
        else:
            if not entry.stored:
                await self.writer.write(self._row(entry, "OK", ""))

    @contextlib.asynccontextmanager
    async def transaction(self, entry: AuditEntry) -> AsyncIterator[AsyncSession]:
        """A session in ONE transaction whose audit row (OK) is written in it, last, when the work
        succeeds; on failure everything rolls back and :meth:`call` writes the rejection instead."""
        entry.stored = False
        async with transaction(self._sessions) as session:
            yield session
            await session.execute(INSERT_AUDIT, [self._row(entry, "OK", "")])
        entry.stored = True

    def queue(self, entry: AuditEntry, status: str, codes: str) -> None:
        """Queue the row of ``entry`` for the writer, nobody waiting for it."""
        self.writer.add(self._row(entry, status, codes))

    def observe(self, record: CallRecord) -> asyncio.Future[None] | None:
        """The trust interceptor's observer: audit the calls it refused (who, which RPC, why); the future
        is done once the row is committed (the interceptor waits for it before answering)."""
        if record.outcome == "OK" or record.reason not in TRUST_REFUSALS:
            return None
        entry = AuditEntry(record.method.rsplit("/", 1)[-1], {"peer": record.peer.name or "anonymous"})
        entry.outcome = "REFUSED"
        entry.incidents.append(f"{record.reason}: {record.method}")
        return self.writer.add(self._row(entry, record.outcome, ""), awaited=True)

    def _row(self, entry: AuditEntry, status: str, codes: str) -> dict[str, Any]:
        return entry.row(at=self._clock.now(), status=status, codes=codes)

    # --- writing ------------------------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return self.writer.queued

    @property
    def dropped(self) -> int:
        return self.writer.dropped

    async def flush(self) -> None:
        """Write every queued row (one transaction, one batched INSERT); on failure keep them."""
        await self.writer.flush()

    async def _insert(self, batch: list[dict[str, Any]]) -> None:
        assert self._sqlite is not None
        async with write_gate(self._engine):
            await asyncio.to_thread(self._sqlite.insert, batch)

    async def run(self) -> None:
        """The writer job (:meth:`~mycarenet_core.audit.AuditWriter.run`)."""
        await self.writer.run()


class _SqliteWriter:
    """The background writer's own connection of the standard ``sqlite3`` driver (SQLite only), used from a
    worker thread, one batch at a time: the INSERT is compiled once (a :class:`~mycarenet_core.reads.Query`)
    and the batch is one ``executemany`` in one transaction. One hop to a thread per batch, where aiosqlite
    made one per step (connect, begin, execute, commit, close), each with SQLAlchemy's machinery around it.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._file = str(engine.url.database)
        self._dialect = engine.dialect
        self._connection: sqlite3.Connection | None = None
        self._inserts: dict[tuple[str, ...], Query] = {}

    def insert(self, batch: list[dict[str, Any]]) -> None:
        keys = tuple(batch[0])
        query = self._inserts.get(keys)
        if query is None:
            query = self._inserts[keys] = Query(INSERT_AUDIT, column_keys=keys)
        plan = query.plan(self._dialect)
        if self._connection is None:
            self._connection = sqlite3.connect(
                self._file, timeout=WRITE_BUSY_TIMEOUT, check_same_thread=False
            )
            self._connection.execute("PRAGMA synchronous=NORMAL")
        try:
            plan.insert_many(self._connection, batch)
        except sqlite3.Error as error:
            self.close()  # a fresh connection for the next attempt
            raise DBAPIError.instance(plan.sql, None, error, sqlite3.Error) from error

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


__all__ = ["AuditEntry", "AuditTrail", "context_fields", "peer_of"]
