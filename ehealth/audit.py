"""eHealth's audit trail (seed 001 art. 3): every login (with its outcome), every write, every refusal — who
(certificate, executor, requester of record), on whose behalf (the subject the call was about), when
(eHealth's clock), which method, and the outcome with its reason.

The trust interceptor hands every call it saw to :meth:`AuditLog.observe` (refusals included, before any
handler ran), which keeps every call of a method the trust table (``mycarenet_core/trust.toml``) declares
``audit = "call"`` (the login and every write) and every call that fails, whatever its method declares
(successful reads are not audited: the hub audits the requests that caused them); the handlers add what only
they know with :func:`note` (who logged in, whose relation or mandate it was). Rows are written by group
commit (:class:`~mycarenet_core.audit.AuditWriter`, one multi-row INSERT per batch, SQLAlchemy Core): the
interceptor waits for the commit of a call's row before the call answers, so nothing acknowledged is missing
from the audit (issue 17), even when the process is killed outright; :meth:`AuditLog.run` is the writer, a
background job of the process, and :meth:`AuditLog.close` (a closer of the process) writes what is left.
Writes that do not come through an RPC (the DMG moves read from the insurers' feeds) add their row in their
own transaction (:func:`audit_row`).
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import logging
from typing import Any

from sqlalchemy import insert

from ehealth.models import AUDIT
from ehealth.store import Database
from mycarenet_core.audit import AuditWriter
from mycarenet_core.clock import Clock
from mycarenet_core.trust import TABLE, CallRecord, Throttling, TrustTable

log = logging.getLogger(__name__)

PACKAGE = "/mycarenet.ehealth.v1."
FIELDS = ("executor_kind", "executor_id", "requester_inami", "mandate_id", "session_id", "subject")

_notes: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("ehealth_audit", default=None)


def note(**fields: str) -> None:
    """Add what the running call is about to its audit row (names of :data:`FIELDS`); later notes win."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"not audit fields: {sorted(unknown)}")
    # A new dict each time: a call's notes never reach another call, even one started from this context.
    _notes.set({**(_notes.get() or {}), **{k: v for k, v in fields.items() if v}})


_INSERT = insert(AUDIT)
_SIZES = {  # the columns' sizes: a value is cut to them
    "method": 80,
    "certificate": 64,
    "outcome": 32,
    "reason": 80,
    "executor_kind": 32,
    "executor_id": 32,
    "requester_inami": 11,
    "mandate_id": 64,
    "session_id": 64,
    "subject": 64,
}


def audit_row(
    time: dt.datetime, method: str, certificate: str, outcome: str, **fields: str
) -> dict[str, Any]:
    """One audit row (values cut to their columns): ``fields`` among :data:`FIELDS` and ``reason``."""
    row: dict[str, Any] = {name: "" for name in _SIZES}
    row.update(time=time, method=method, certificate=certificate, outcome=outcome, **fields)
    for name, size in _SIZES.items():
        row[name] = row[name][:size]
    return row


class AuditLog:
    """Audit rows from the trust interceptor's records, written by group commit."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        interval: float = 0.0,
        batch: int = 500,
        table: TrustTable = TABLE,
    ) -> None:
        # ``interval`` and ``batch`` are kept for the callers' sake: the writer writes as soon as it is free.
        self._clock = clock
        self.writer = AuditWriter(db.engine, _INSERT, name="ehealth")
        for policy in table.for_service(PACKAGE[1:]):
            if policy.throttle not in (None, Throttling.NONE):
                raise ValueError(f"{policy.method}: eHealth throttles nothing (the hub does)")
        self.audits = {m: p.audit for m, p in table.policies.items()}
        """Each method's declared audit (``call``, ``failures``, ``none``), read once."""

    def wanted(self, record: CallRecord) -> bool:
        return record.audited(self.audits.get(record.method))

    def observe(self, record: CallRecord) -> asyncio.Future[None] | None:
        """The trust interceptor's hook: queue the row of a call worth auditing; the future is done once
        it is committed (the interceptor waits for it before the call answers)."""
        if not self.wanted(record):
            return None
        fields: dict[str, str] = {}
        session = record.session
        if session is not None:
            fields = {
                "executor_kind": session.executor_kind,
                "executor_id": session.executor_id,
                "requester_inami": session.requester_inami,
                "mandate_id": session.mandate_id,
                "session_id": session.session_id,
            }
        fields.update(_notes.get() or {})
        row = audit_row(
            self._clock.now(),
            record.method.removeprefix(PACKAGE),
            record.peer.name,
            record.outcome,
            reason=record.reason,
            **fields,
        )
        return self.writer.add(row, awaited=record.outcome != "CANCELLED")

    @property
    def pending(self) -> int:
        return self.writer.queued

    async def flush(self) -> int:
        """Write every queued row in one transaction (one multi-row INSERT); how many. On failure they stay
        queued. One flush at a time: a flush returns once every row queued before it is written."""
        return await self.writer.flush()

    async def run(self) -> None:
        """The writer job (:meth:`~mycarenet_core.audit.AuditWriter.run`)."""
        await self.writer.run()

    async def close(self) -> None:
        """Write what is left (a clean stop loses no row): after the server and the background job stopped."""
        await self.writer.close()


__all__ = ["FIELDS", "AuditLog", "audit_row", "note"]
