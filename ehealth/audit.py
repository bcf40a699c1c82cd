"""eHealth's audit trail (seed 001 art. 3): every login (with its outcome), every write, every refusal — who
(certificate, executor, requester of record), on whose behalf (the subject the call was about), when
(eHealth's clock), which method, and the outcome with its reason.

The trust interceptor hands every call it saw to :meth:`AuditLog.observe` (refusals included, before any
handler ran); the handlers add what only they know with :func:`note` (who logged in, whose relation or
mandate it was). Rows are queued and written in batches off the request path by :meth:`AuditLog.run`;
:meth:`AuditLog.close` writes what is left, so a clean stop loses nothing. A process killed outright loses
what was queued since the last batch (at most ``interval`` seconds of calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ehealth.models import AuditRow
from mycarenet_core.clock import Clock
from mycarenet_core.db import transaction
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


def _cut(value: str, size: int) -> str:
    return value[:size]


class AuditLog:
    """Queues audit rows from the trust interceptor's records and writes them in batches."""

    def __init__(
        self,
        factory: async_sessionmaker[AsyncSession],
        clock: Clock,
        *,
        interval: float = 0.2,
        batch: int = 500,
    ) -> None:
        self._factory = factory
        self._clock = clock
        self.interval = interval
        self.batch = batch
        self._queue: list[AuditRow] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._stopping = asyncio.Event()
        self._flushing = asyncio.Lock()

    @staticmethod
    def wanted(record: CallRecord) -> bool:
        return record.outcome != "OK" or record.method in ALWAYS

    def observe(self, record: CallRecord) -> None:
        """The trust interceptor's hook: queue the row of a call worth auditing."""
        if not self.wanted(record):
            return
        fields: dict[str, Any] = {}
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
            AuditRow(
                time=self._clock.now(),
                method=_cut(record.method.removeprefix(PACKAGE), 80),
                certificate=_cut(record.peer.name, 64),
                executor_kind=_cut(fields.get("executor_kind", ""), 32),
                executor_id=_cut(fields.get("executor_id", ""), 32),
                requester_inami=_cut(fields.get("requester_inami", ""), 11),
                mandate_id=_cut(fields.get("mandate_id", ""), 64),
                session_id=_cut(fields.get("session_id", ""), 64),
                subject=_cut(fields.get("subject", ""), 64),
                outcome=_cut(record.outcome, 32),
                reason=_cut(record.reason, 80),
            )
        )
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def flush(self) -> int:
        """Write every queued row in one transaction; how many. On failure they stay queued."""
        async with self._flushing:
            if not self._queue:
                return 0
            batch, self._queue = self._queue, []
            try:
                async with transaction(self._factory) as session:
                    session.add_all(batch)
            except BaseException:
                self._queue[:0] = batch  # kept for the next attempt
                raise
            return len(batch)

    async def run(self) -> None:
        """Write queued rows in batches (every ``interval`` seconds while calls come) until closed."""
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            if len(self._queue) < self.batch:
                await self._pause()
            try:
                await self.flush()
            except Exception:
                log.exception("audit flush failed; the rows stay queued")
                await self._pause()
                self._wake.set()

    async def _pause(self) -> None:
        """Wait ``interval`` seconds, or less when the log is being closed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self.interval)

    def start(self) -> None:
        if self._task is None:
            self._closing = False
            self._stopping = asyncio.Event()
            self._task = asyncio.create_task(self.run(), name="ehealth audit")

    async def close(self, wait: float = 5.0) -> None:
        """Stop the writer and write what is left (a clean stop loses no row). The writer is let finish
        the batch it is writing rather than cancelled in the middle of a commit."""
        task, self._task = self._task, None
        self._closing = True
        self._stopping.set()
        self._wake.set()
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), wait)
            except TimeoutError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        try:
            await self.flush()
        except Exception:
            log.exception("audit: %d rows could not be written at stop", len(self._queue))


__all__ = ["ALWAYS", "FIELDS", "AuditLog", "note"]
