"""The audit trail (seed 001 art. 3): one row per request, with who is responsible (the requester of
record), who executed it (executor, mandate, session), when, and how it ended (status, MyCareNet codes,
incidents met while processing).

Which requests have a row is the trust table's word (``mycarenet_core/trust.toml``): an RPC declares its
``audit`` (every call, its failures, none), and its row is named after it (:mod:`oa_node.servicers` opens
each call's :meth:`AuditTrail.call` from its method's declaration); the node's own jobs (the eFact lines,
the year ends, the checks) audit under their own names, every run. How durable a row is depends on what the
request did:

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
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from mycarenet_core.audit import AuditWriter, answers, joined, outcome_of
from mycarenet_core.clock import Clock
from mycarenet_core.db import transaction
from mycarenet_core.errors import MeshError
from mycarenet_core.gen.mycarenet.oa.v1 import context_pb2
from mycarenet_core.trust import Auditing, CallRecord, current_peer
from oa_node import models as m

log = logging.getLogger(__name__)

AUDIT = m.table_of(m.AuditRecord)
INSERT_AUDIT = insert(AUDIT)
# Refusals of the trust model itself (the handler never ran, so no operation audited the call).
TRUST_REFUSALS = frozenset({"CERTIFICATE_NOT_ALLOWED", "METHOD_NOT_IN_TRUST_TABLE"})


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
    audit: Auditing = Auditing.CALL
    """Which outcomes have a row: every one (``call``), a failure only, none."""

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
    # A pharmacy's session is recorded against the pharmacist who opened it (seed 003 §8.2.2.3).
    user = context.session_user_inami
    return {
        "requester_inami": context.requester_inami[:32],
        "requester_role": int(context.requester_role),
        "executor_id": (user or context.executor_id)[:64],
        "executor_kind": "SUBJECT_KIND_PROVIDER" if user else context.executor_kind[:64],
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
        self._sessions = sessions
        self._clock = clock
        self.writer = AuditWriter(engine, INSERT_AUDIT, name="oa")

    @property
    def clock(self) -> Clock:
        """The node's clock (the time of what a request writes with its audit row)."""
        return self._clock

    async def close(self) -> None:
        """Write what is left and close the writer's own connection."""
        await self.writer.close()

    # --- recording ----------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def call(
        self, rpc: str, fields: dict[str, Any], audit: Auditing = Auditing.CALL
    ) -> AsyncIterator[AuditEntry]:
        """Audit the enclosed request as ``audit`` says: its row is written with its outcome (OK, unless
        ``audit`` is ``failures``; REJECTED with the status and codes of a MeshError; CANCELLED; ERROR with
        UNAVAILABLE DATABASE_BUSY, DEADLINE_EXCEEDED or, for a bug, INTERNAL), unless the request's own
        transaction already wrote it; with ``none``, never. The request answers once the row is
        committed; a cancelled one does not wait."""
        entry = AuditEntry(rpc, fields, audit=audit)
        try:
            yield entry
        except BaseException as error:
            if audit is Auditing.NONE:
                raise
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
            if audit is Auditing.CALL and not entry.stored:
                await self.writer.write(self._row(entry, "OK", ""))

    @contextlib.asynccontextmanager
    async def transaction(self, entry: AuditEntry) -> AsyncIterator[AsyncSession]:
        """A session in ONE transaction whose audit row (OK) is written in it, last, when the work
        succeeds and the entry's RPC audits every call; on failure everything rolls back and :meth:`call`
        writes the rejection instead."""
        entry.stored = False
        async with transaction(self._sessions) as session:
            yield session
            if entry.audit is Auditing.CALL:
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

    async def run(self) -> None:
        """The writer job (:meth:`~mycarenet_core.audit.AuditWriter.run`)."""
        await self.writer.run()


__all__ = ["AuditEntry", "AuditTrail", "context_fields", "peer_of"]
