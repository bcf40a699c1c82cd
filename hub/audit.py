"""The audit trail (seed 001 art. 3): one row per request — the certificate that called, requester of record,
executor, mandate, session, RPC, OA, outcome, codes, time. Rows are written by group commit
(:class:`~mycarenet_core.audit.AuditWriter`): a call answers once its row is committed, so nothing
acknowledged is missing from the audit, and the rows of concurrent calls share one batched INSERT.

A call that reaches its handler is recorded by the handler (:meth:`AuditLog.record`, as the RPC's ``audit``
in ``mycarenet_core/trust.toml`` says: every call, its failures only, or none; :mod:`hub.policy`), which
knows the requester reference, the insurers and the MyCareNet codes of the answer. A call refused before
its handler (wrong certificate, no or bad token, a role or mandate outside the trust table) is recorded from
the trust interceptor's :class:`~mycarenet_core.trust.CallRecord` (:meth:`AuditLog.observe`), whatever its
RPC's ``audit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.auth import Caller, request_reference
from hub.models import AuditRecord
from mycarenet_core.audit import AuditWriter, answers, joined, outcome_of
from mycarenet_core.clock import Clock
from mycarenet_core.trust import TABLE, Auditing, CallRecord, TrustTable, current_peer

log = logging.getLogger(__name__)

# Set when a handler audits the running call, so that the interceptor's record of it adds no second row.
# Every RPC runs in a task of its own, whose context starts without it.
_handled: contextvars.ContextVar[bool] = contextvars.ContextVar("hub_audit_handled", default=False)

AUDIT = cast(Table, AuditRecord.__table__)  # type: ignore[attr-defined]
# One statement, built once: a batch of rows is one executemany (SQLAlchemy Core, no ORM objects).
INSERT = insert(AUDIT)
Row = dict[str, Any]


def _peer_name() -> str:
    try:
        return current_peer().name
    except RuntimeError:  # no trust interceptor (a handler called directly)
        return ""


def _who(caller: Caller | None) -> Row:
    if caller is None:
        return {
            "requester_inami": "",
            "executor_id": "",
            "executor_kind": "",
            "mandate_id": "",
            "session_id": "",
        }
    # A pharmacy's session is recorded against the pharmacist who opened it (seed 003 §8.2.2.3).
    return {
        "requester_inami": caller.requester_inami,
        "executor_id": caller.user or caller.executor_id,
        "executor_kind": "SUBJECT_KIND_PROVIDER" if caller.user else caller.executor_kind,
        "mandate_id": caller.mandate_id,
        "session_id": caller.session_id,
    }


@dataclass
class AuditEntry:
    """Filled in by a handler while it runs."""

    rpc: str
    caller: Caller | None = None
    requester_reference: str = ""
    insurer_codes: list[str] = field(default_factory=list)


class AuditLog:
    """The hub's audit rows, written by group commit: :meth:`record` returns once the handler's row is
    committed (a cancelled call's row is written without waiting); :meth:`observe` hands the interceptor
    the commit of a refusal's row to wait for. :meth:`run` is the writer job, :meth:`flush` writes what is
    queued (also the last time, on a clean stop)."""

    def __init__(
        self, engine: AsyncEngine, clock: Clock, *, every: float = 0.0, table: TrustTable = TABLE
    ) -> None:
        # ``every`` is kept for the tuning's sake: the writer now writes as soon as it is free.
        self._clock = clock
        self.writer = AuditWriter(engine, INSERT, name="hub")
        self._audits = {m: p.audit for m, p in table.policies.items()}
        """Each method's declared audit, for the calls no policy wrapper handled (the sandbox's services)."""

    @contextlib.asynccontextmanager
    async def record(self, rpc: str, audit: Auditing = Auditing.CALL) -> AsyncIterator[AuditEntry]:
        """Audit the enclosed handler with its real outcome (OK, the MeshError's status, reason and codes,
        UNAVAILABLE DATABASE_BUSY, DEADLINE_EXCEEDED, CANCELLED; INTERNAL only for a bug); the call goes on
        (answers) once the row is committed. With ``audit`` FAILURES, only a failed call has a row; with
        NONE, no row (nor the interceptor's: the call was admitted)."""
        entry = AuditEntry(rpc)
        _handled.set(True)
        started = time.monotonic()
        failure: BaseException | None = None
        try:
            yield entry
        except BaseException as error:
            failure = error
            raise
        finally:
            if audit is Auditing.CALL or (audit is Auditing.FAILURES and failure is not None):
                outcome, reason, codes = outcome_of(failure)
                row = _who(entry.caller)
                row.update(
                    time=self._clock.now(),
                    rpc=rpc,
                    peer=_peer_name()[:20],
                    requester_reference=entry.requester_reference[:200],
                    insurer_code=",".join(entry.insurer_codes)[:30],
                    outcome=outcome[:30],
                    reason=reason[:60],
                    codes=joined(codes)[:60],
                    duration_ms=(time.monotonic() - started) * 1000,
                )
                if answers(failure):
                    await self.writer.write(row)
                else:
                    self.writer.add(row)  # nobody is answered: written with the next batch

    def observe(self, call: CallRecord) -> asyncio.Future[None] | None:
        """The trust interceptor's record of a call: a row when the handler did not write one (the call was
        refused before it), with who called, the session when it verified, the outcome and the reason. The
        future is done once the row is committed (the interceptor waits for it before answering)."""
        if _handled.get() or not call.audited(self._audits.get(call.method)):
            return None
        row = _who(call.session)
        row.update(
            time=self._clock.now(),
            rpc=call.method.rsplit("/", 1)[-1][:60],
            peer=call.peer.name[:20],
            requester_reference=request_reference.get()[:200],
            insurer_code="",
            outcome=call.outcome[:30],
            reason=call.reason[:60],
            codes=joined(call.codes)[:60],
            duration_ms=0.0,
        )
        return self.writer.add(row, awaited=call.outcome != "CANCELLED")

    @property
    def queued(self) -> int:
        return self.writer.queued

    async def flush(self) -> None:
        """Write the queued rows (one transaction, one batched insert)."""
        await self.writer.flush()

    async def run(self) -> None:
        """The writer job (:meth:`~mycarenet_core.audit.AuditWriter.run`)."""
        await self.writer.run()
