"""The audit trail (seed 001 art. 3): one row per request, with who is responsible (the requester of
record), who executed it (executor, mandate, session), when, and how it ended (status, MyCareNet codes,
incidents met while processing).

:meth:`Auditor.run` runs a unit of work in ONE transaction and adds the audit row to that same
transaction when it succeeds; when it is rejected, the work is rolled back (nothing changed) and the
audit row alone is written in a transaction of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mycarenet_core.clock import Clock
from mycarenet_core.db import transaction
from mycarenet_core.errors import MeshError
from mycarenet_core.gen.mycarenet.oa.v1 import context_pb2
from mycarenet_core.trust import CallRecord
from oa_node import models as m
from oa_node.repositories import AuditRepository

log = logging.getLogger(__name__)

T = TypeVar("T")

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

    def row(self, *, at: Any, status: str, codes: str, duration_ms: int) -> m.AuditRecord:
        return m.AuditRecord(
            at=at,
            rpc=self.rpc,
            patient_niss=self.patient_niss,
            outcome=self.outcome,
            status_code=status,
            mycarenet_codes=codes,
            incidents="; ".join(self.incidents)[:2000],
            duration_ms=duration_ms,
            **self.fields,
        )


def context_fields(context: context_pb2.RequestContext | None, peer: str) -> dict[str, Any]:
    """The audit columns taken from a RequestContext (the hub's view of the eHealth session)."""
    if context is None:
        return {"peer": peer}
    return {
        "requester_inami": context.requester_inami,
        "requester_role": int(context.requester_role),
        "executor_id": context.executor_id,
        "executor_kind": context.executor_kind,
        "mandate_id": context.mandate_id,
        "session_id": context.session_id,
        "organisation_inami": context.organisation_inami,
        "requester_reference": context.requester_reference,
        "peer": peer,
    }


class Auditor:
    """Runs units of work with their audit row."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock
        self._pending: set[asyncio.Task[None]] = set()

    def observe(self, record: CallRecord) -> None:
        """The trust interceptor's observer: audit the calls it refused (who, which RPC, why)."""
        if record.outcome == "OK" or record.reason not in TRUST_REFUSALS:
            return
        entry = AuditEntry(record.method.rsplit("/", 1)[-1], {"peer": record.peer.name or "anonymous"})
        entry.outcome = "REFUSED"
        entry.incidents.append(f"{record.reason}: {record.method}")
        task = asyncio.ensure_future(self._write_alone(entry, time.monotonic(), record.outcome, ""))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for the refusal records still being written (before the engine is disposed)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def run(self, entry: AuditEntry, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        started = time.monotonic()
        try:
            async with transaction(self._sessions) as session:
                result = await work(session)
                await AuditRepository(session).add(self._row(entry, started, "OK", ""))
            return result
        except MeshError as error:
            entry.outcome = "REJECTED"
            entry.incidents.append(error.message)
            codes = ",".join(str(c) for c in error.codes)
            await self._write_alone(entry, started, error.status.name, codes)
            raise
        except Exception as error:
            entry.outcome = "ERROR"
            entry.incidents.append(f"{type(error).__name__}: {error}")
            await self._write_alone(entry, started, grpc.StatusCode.INTERNAL.name, "")
            raise

    async def record(self, entry: AuditEntry, status: str = "OK") -> None:
        """Write an audit row for a request that changed nothing (reads, replays)."""
        await self._write_alone(entry, time.monotonic(), status, "")

    def _row(self, entry: AuditEntry, started: float, status: str, codes: str) -> m.AuditRecord:
        elapsed = int((time.monotonic() - started) * 1000)
        return entry.row(at=self._clock.now(), status=status, codes=codes, duration_ms=elapsed)

    async def _write_alone(self, entry: AuditEntry, started: float, status: str, codes: str) -> None:
        try:
            async with transaction(self._sessions) as session:
                await AuditRepository(session).add(self._row(entry, started, status, codes))
        except Exception:  # the audit must not hide the request's own outcome
            log.exception("could not write the audit record of %s", entry.rpc)
