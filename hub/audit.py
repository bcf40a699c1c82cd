"""The audit trail (seed 001 art. 3): one row per request — the certificate that called, requester of record,
executor, mandate, session, RPC, OA, outcome, codes, time. Rows are queued and written in batches off the
request path.

A call that reaches its handler is recorded by the handler (:meth:`AuditLog.record`), which knows the
requester reference, the insurers and the MyCareNet codes of the answer. A call refused before its handler
(wrong certificate, no or bad token, a role or mandate outside the trust table) is recorded from the trust
interceptor's :class:`~mycarenet_core.trust.CallRecord` (:meth:`AuditLog.observe`): every call has its row.
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
from mycarenet_core.clock import Clock
from mycarenet_core.errors import MeshError
from mycarenet_core.lifecycle import Backoff
from mycarenet_core.trust import CallRecord, current_peer

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
    return {
        "requester_inami": caller.requester_inami,
        "executor_id": caller.executor_id,
        "executor_kind": caller.executor_kind,
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
    """Rows queued by the calls, written in batches by :meth:`run` (a background job) and by :meth:`flush`
    (also the last one, on a clean stop)."""

    def __init__(self, engine: AsyncEngine, clock: Clock, *, every: float = 0.2) -> None:
        self._engine = engine
        self._clock = clock
        self.every = every
        self._queue: list[Row] = []
        self._wake = asyncio.Event()
        # One flush at a time: a flush returns only once every row queued before it is written, also those
        # a concurrent flush (the background writer) had taken.
        self._flushing = asyncio.Lock()

    def _add(self, row: Row) -> None:
        self._queue.append(row)
        self._wake.set()

    @contextlib.asynccontextmanager
    async def record(self, rpc: str) -> AsyncIterator[AuditEntry]:
        """Audit the enclosed handler: the outcome is OK, or the MeshError's status, reason and codes."""
        entry = AuditEntry(rpc)
        _handled.set(True)
        started = time.monotonic()
        outcome, reason, codes = "OK", "", ""
        try:
            yield entry
        except MeshError as error:
            outcome, reason, codes = error.status.name, error.reason, ",".join(map(str, error.codes))
            raise
        except BaseException as error:
            outcome, reason = "INTERNAL", type(error).__name__
            raise
        finally:
            row = _who(entry.caller)
            row.update(
                time=self._clock.now(),
                rpc=rpc,
                peer=_peer_name()[:20],
                requester_reference=entry.requester_reference[:200],
                insurer_code=",".join(entry.insurer_codes)[:30],
                outcome=outcome,
                reason=reason[:60],
                codes=codes[:60],
                duration_ms=(time.monotonic() - started) * 1000,
            )
            self._add(row)

    def observe(self, call: CallRecord) -> None:
        """The trust interceptor's record of a call: a row when the handler did not write one (the call was
        refused before it), with who called, the session when it verified, the outcome and the reason."""
        if _handled.get():
            return
        row = _who(call.session)
        row.update(
            time=self._clock.now(),
            rpc=call.method.rsplit("/", 1)[-1][:60],
            peer=call.peer.name[:20],
            requester_reference=request_reference.get()[:200],
            insurer_code="",
            outcome=call.outcome[:30],
            reason=call.reason[:60],
            codes=",".join(map(str, call.codes))[:60],
            duration_ms=0.0,
        )
        self._add(row)

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def flush(self) -> None:
        """Write the queued rows (one transaction, one batched insert)."""
        async with self._flushing:
            if not self._queue:
                return
            batch, self._queue = self._queue, []
            try:
                async with self._engine.begin() as connection:
                    await connection.execute(INSERT, batch)
            except BaseException:
                self._queue[:0] = batch  # keep them for the next attempt
                raise

    async def run(self) -> None:
        """Write queued rows in batches until cancelled; a failed write is tried again after a backoff, with
        the rows queued meanwhile."""
        backoff = Backoff(self.every, 10.0)
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.every)
            try:
                # Shielded: a stop never cancels a batch half-way (committed or not, it would be unknown);
                # the final flush of the stop waits for this one, then writes what is left.
                await asyncio.shield(self.flush())
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("audit write failed (%s); %d rows kept for the next attempt", error, self.queued)
                self._wake.set()
                await backoff.sleep()
