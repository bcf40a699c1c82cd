"""eHealth's audit trail (seed 001 art. 3): every login (with its outcome), every write, every refusal — who
(certificate, executor, requester of record), on whose behalf (the subject the call was about), when
(eHealth's clock), which method, and the outcome with its reason.

The trust interceptor hands every call it saw to :meth:`AuditLog.observe` (refusals included, before any
handler ran); the handlers add what only they know with :func:`note` (who logged in, whose relation or
mandate it was). Rows are queued and written in batches (one multi-row INSERT, SQLAlchemy Core) off the
request path by :meth:`AuditLog.run`, a background job of the process; :meth:`AuditLog.close` (a closer of
the process, after the server and the jobs stopped) writes what is left, so a clean stop loses nothing. A
process killed outright loses what was queued since the last batch (at most ``interval`` seconds of
calls). Writes that do not come through an RPC (the DMG moves read from the insurers' feeds) add their row
in their own transaction (:func:`audit_row`).
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
from mycarenet_core.clock import Clock
from mycarenet_core.trust import CallRecord

log = logging.getLogger(__name__)

PACKAGE = "/mycarenet.ehealth.v1."
# Methods audited whatever their outcome: the login and every write. Any other call is audited when refused
# or failed (successful reads are not: the hub audits the requests that caused them).
ALWAYS = frozenset(
    f"{PACKAGE}{name}"
    for name in (
        "AuthService/CreateSession",
        "AuthService/Logout",
        "AuthService/RegisterCredential",
        "AuthService/RevokeCredential",
        "AuthService/RotateSigningKey",
        "CadastreService/UpsertProvider",
        "CadastreService/UpsertOrganisation",
        "TherapeuticRelationService/RegisterRelation",
        "TherapeuticRelationService/RevokeRelation",
        "TherapeuticRelationService/TransferDmgRelation",
        "MandateService/CreateMandate",
        "MandateService/RevokeMandate",
    )
)
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
    """Queues audit rows from the trust interceptor's records and writes them in batches."""

    def __init__(self, db: Database, clock: Clock, *, interval: float = 0.2, batch: int = 500) -> None:
        self._db = db
        self._clock = clock
        self.interval = interval
        self.batch = batch
        self._queue: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()

    @staticmethod
    def wanted(record: CallRecord) -> bool:
        return record.outcome != "OK" or record.method in ALWAYS

    def observe(self, record: CallRecord) -> None:
        """The trust interceptor's hook: queue the row of a call worth auditing."""
        if not self.wanted(record):
            return
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
        self._queue.append(
            audit_row(
                self._clock.now(),
                record.method.removeprefix(PACKAGE),
                record.peer.name,
                record.outcome,
                reason=record.reason,
                **fields,
            )
        )
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def flush(self) -> int:
        """Write every queued row in one transaction (one multi-row INSERT); how many. On failure they stay
        queued. One flush at a time: a flush returns once every row queued before it is written."""
        async with self._flushing:
            if not self._queue:
                return 0
            batch, self._queue = self._queue, []
            try:
                async with self._db.engine.begin() as conn:
                    await conn.execute(_INSERT, batch)
            except BaseException:
                self._queue[:0] = batch  # kept for the next attempt
                raise
            return len(batch)

    async def run(self) -> None:
        """The background job: write queued rows in batches, every ``interval`` seconds while calls come.
        A flush in progress is never cut by the job's cancellation (the final :meth:`close` waits for it)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if len(self._queue) < self.batch:
                await asyncio.sleep(self.interval)
            try:
                await asyncio.shield(self.flush())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("audit flush failed; the rows stay queued")
                self._wake.set()
                await asyncio.sleep(self.interval)

    async def close(self) -> None:
        """Write what is left (a clean stop loses no row): after the server and the background job stopped."""
        try:
            await self.flush()
        except Exception:
            log.exception("audit: %d rows could not be written at stop", len(self._queue))


__all__ = ["ALWAYS", "FIELDS", "AuditLog", "audit_row", "note"]
