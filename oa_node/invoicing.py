"""Invoicing from the provider's side at an insurer node (seed 001 annex 4, seed 004): eFact lines and
eAttest certificates, which the hub routes here (``mycarenet.oa.v1.OaInvoicingService``).

* eFact (third-party payment, asynchronous): :meth:`InvoicingOperations.accept` stores the lines of a batch
  (:class:`~oa_node.models.InvoiceLineRow`) in one transaction and only then answers: that answer is the
  insurer's acknowledgement, and "an invoice counts as received only once acknowledged". A line stored
  again (the same batch posted again) adds nothing; the same (requester, batch, line) with another content
  is 158. :class:`InvoiceLines`, a background job woken by every acceptance, then registers each line's
  contact through :meth:`~oa_node.dmg.DmgOperations.register_contact` — the back office's intake, the same
  rules (prolongation, cohabitation) — and writes its answer (accepted, or rejected with its MyCareNet
  code) to the outbox in the transaction that marks the line answered: the relay carries it to the
  requester's mailbox (``MESSAGE_KIND_INVOICE_ANSWER``). A crash between the contact and its answer is
  harmless: the intake reference of a line (``efact:<requester>:<batch>:<line>``) replays the contact.
* eAttest (cash payment, synchronous): :meth:`InvoicingOperations.attest` registers the certificate's
  contact the same way at once (intake reference ``eattest:<requester>:<reference>``).

The physician of a line is the requester itself, or, when the requester is an organisation (a medical
house, a group practice), one of its members on the contact date (else 156).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mycarenet_core import dates
from mycarenet_core.clock import Clock
from mycarenet_core.codes import McnCode
from mycarenet_core.db import transaction
from mycarenet_core.errors import MeshError, field_error
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from mycarenet_core.gen.mycarenet.invoicing.v1 import invoicing_service_pb2 as inv_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import oa_invoicing_service_pb2 as oainv_pb2
from mycarenet_core.validation import Checker
from oa_node import controls as c
from oa_node import models as m
from oa_node.audit import AuditEntry, AuditTrail
from oa_node.dmg import DmgOperations
from oa_node.feeds import SAFETY_TIMEOUT, Wakeup
from oa_node.repositories import OutboxRepository, ReferenceRepository, outbox_row

log = logging.getLogger(__name__)

MAX_LINES = 500
MAX_HUB_REFERENCE = 64
_AMOUNT = re.compile(r"^\d{1,9}(\.\d{1,2})?$")
BATCH = 100  # lines answered per pass of the worker
Context = grpc.aio.ServicerContext[Any, Any]
_TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
    }
)


@dataclass(frozen=True)
class Line:
    """One invoice line (or one eAttest certificate), parsed."""

    number: int
    niss: str
    provider: str
    contact_date: dt.date
    code: str
    amount: str
    fingerprint: str


@dataclass(frozen=True)
class LineBatch:
    caller: c.Caller
    hub_reference: str
    lines: list[Line]


@dataclass(frozen=True)
class Attest:
    caller: c.Caller
    line: Line


# --- parsing ---------------------------------------------------------------------------------------------


def _line(
    check: Checker, at: str, line: inv_pb2.InvoiceLine | inv_pb2.SendAttestRequest, number: int
) -> Line | None:
    niss = check.niss(f"{at}patient_niss", line.patient_niss)
    provider = check.inami(f"{at}provider_inami", line.provider_inami)
    contact = check.date(f"{at}contact_date", line.contact_date)
    code = check.text(f"{at}nomenclature_code", line.nomenclature_code, max_length=32)
    amount = money(check, f"{at}amount", line.amount)
    if not niss or provider is None or contact is None or not code or amount is None:
        return None
    print_ = hashlib.sha256(line.SerializeToString(deterministic=True)).hexdigest()
    return Line(number, niss, provider.value, contact, code, amount, print_)


def money(check: Checker, field: str, value: common_pb2.Money) -> str | None:
    """An amount in EUR with at most two decimals (111 otherwise)."""
    if value.currency_code not in ("", "EUR"):
        check.add(f"{field}.currency_code", McnCode.VALUE_NOT_ALLOWED, "only EUR")
        return None
    if not _AMOUNT.match(value.amount):
        check.add(f"{field}.amount", McnCode.BAD_FORMAT, "a decimal amount with a dot, e.g. 30.00")
        return None
    return value.amount


def parse_lines(request: oainv_pb2.AcceptInvoiceLinesRequest) -> LineBatch:
    with Checker() as check:
        who = c.caller(check, request.context)
        check.text("hub_reference", request.hub_reference, max_length=MAX_HUB_REFERENCE)
        lines: list[Line] = []
        seen: set[int] = set()
        if check.items("lines", request.lines, maximum=MAX_LINES, required=True):
            for i, raw in enumerate(request.lines):
                if raw.line_number < 1 or raw.line_number in seen:
                    check.add(f"lines[{i}].line_number", McnCode.VALUE_NOT_ALLOWED, "numbered from 1, unique")
                seen.add(raw.line_number)
                found = _line(check, f"lines[{i}].", raw, raw.line_number)
                if found is not None:
                    lines.append(found)
    return LineBatch(c.parsed(who), request.hub_reference, lines)


def parse_attest(request: oainv_pb2.RegisterAttestRequest) -> Attest:
    with Checker() as check:
        who = c.caller(check, request.context)
        line = _line(check, "attest.", request.attest, 1)
    return Attest(c.parsed(who), c.parsed(line))


# --- the operations ---------------------------------------------------------------------------------------


class InvoicingOperations:
    """eFact acceptance and eAttest registration of one insurer node."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        dmg: DmgOperations,
        audit: AuditTrail,
        clock: Clock,
        outbox: Wakeup,
        wakeup: Wakeup | None = None,
    ) -> None:
        self._sessions = sessions
        self._dmg = dmg
        self._audit = audit
        self._clock = clock
        self._outbox = outbox
        self.wakeup = wakeup or Wakeup()
        """Set after each acceptance that stored lines: :class:`InvoiceLines` answers them."""

    async def accept(self, batch: LineBatch, entry: AuditEntry) -> oainv_pb2.AcceptInvoiceLinesResponse:
        """Store the lines not stored yet (one transaction); 158 for a line stored with another content."""
        who = batch.caller
        entry.incidents.append(f"batch {who.reference}: {len(batch.lines)} lines")
        async with self._audit.transaction(entry) as session:
            found = {
                row.line_number: row.fingerprint
                for row in (
                    await session.execute(
                        select(m.InvoiceLineRow).where(
                            m.InvoiceLineRow.requester_inami == who.inami.value,  # type: ignore[arg-type]
                            m.InvoiceLineRow.batch_reference == who.reference,  # type: ignore[arg-type]
                        )
                    )
                ).scalars()
            }
            fresh = []
            for i, line in enumerate(batch.lines):
                if line.number in found:
                    if found[line.number] != line.fingerprint:
                        raise field_error(
                            f"lines[{i}]",
                            McnCode.IDENTIFICATION_INCONSISTENT,
                            "this batch reference and line number were used for another line",
                        )
                    continue
                fresh.append(
                    m.InvoiceLineRow(
                        requester_inami=who.inami.value,
                        batch_reference=who.reference,
                        line_number=line.number,
                        hub_reference=batch.hub_reference,
                        patient_niss=line.niss,
                        provider_inami=line.provider,
                        contact_date=line.contact_date,
                        code=line.code,
                        amount=line.amount,
                        submitted_on=who.today,
                        fingerprint=line.fingerprint,
                        received_at=self._clock.now(),
                    )
                )
            session.add_all(fresh)
        if fresh:
            self.wakeup.set()
        return oainv_pb2.AcceptInvoiceLinesResponse(
            accepted_count=len(fresh), already_count=len(batch.lines) - len(fresh)
        )

    async def attest(self, attest: Attest, entry: AuditEntry) -> oainv_pb2.RegisterAttestResponse:
        """Register the certificate's contact now (the intake's domain function); its errors are the
        call's."""
        who, line = attest.caller, attest.line
        await self._check_provider(who.inami.value, line, "attest.provider_inami")
        event = _event("eattest", who.inami.value, who.reference, line, who.today)
        answer = await self._dmg.register_contact(event, entry)
        return oainv_pb2.RegisterAttestResponse(
            replayed=answer.replayed, message_ids=list(answer.effects.message_ids)
        )

    async def _check_provider(self, requester: str, line: Line, field: str) -> None:
        """The physician of a line is the requester, or a member of the requesting organisation (156)."""
        if line.provider == requester:
            return
        async with self._sessions() as session:
            groups = await ReferenceRepository(session).groups_on([line.provider], line.contact_date)
        if groups.get(line.provider) != requester:
            raise field_error(
                field,
                McnCode.AUTHOR_MISMATCH,
                "the physician is neither the requester nor one of its members",
            )

    # --- the answers of eFact lines ----------------------------------------------------------------------

    async def answer_pending(self, limit: int | None = None) -> int:
        """Answer the stored lines not answered yet (oldest first), every one of them once per pass, read a
        page of ``limit`` (:data:`BATCH`) at a time; the number answered. A line that cannot be answered now
        (the database busy, a fault) is left pending for the next pass and holds up none of the lines
        behind it, however many fail."""
        size = limit or BATCH
        after, answered = 0, 0
        while True:
            async with self._sessions() as session:
                rows = (
                    (
                        await session.execute(
                            select(m.InvoiceLineRow)
                            .where(
                                m.InvoiceLineRow.answered == False,  # type: ignore[arg-type]  # noqa: E712
                                m.InvoiceLineRow.id > after,  # type: ignore[arg-type,operator]
                            )
                            .order_by(m.InvoiceLineRow.id)  # type: ignore[arg-type]
                            .limit(size)
                        )
                    )
                    .scalars()
                    .all()
                )
            for row in rows:
                try:
                    await self._answer(row)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("eFact line %s of %s left pending", row.line_number, row.batch_reference)
                    continue
                answered += 1
            if len(rows) < size:
                return answered
            after = rows[-1].id or 0

    async def _answer(self, row: m.InvoiceLineRow) -> None:
        line = Line(
            row.line_number,
            row.patient_niss,
            row.provider_inami,
            row.contact_date,
            row.code,
            row.amount,
            row.fingerprint,
        )
        reference = f"{row.batch_reference}#{row.line_number}"
        answer = dmg_pb2.InvoiceAnswer(
            batch_reference=row.batch_reference,
            hub_reference=row.hub_reference,
            line_number=row.line_number,
            patient_niss=row.patient_niss,
            provider_inami=row.provider_inami,
            contact_date=dates.to_proto(row.contact_date),
            nomenclature_code=row.code,
            result=dmg_pb2.INVOICE_LINE_RESULT_ACCEPTED,
        )
        fields = {
            "requester_inami": row.requester_inami,
            "requester_reference": reference[:200],
            "peer": "efact",
        }
        try:
            async with self._audit.call("InvoiceLine", fields) as entry:
                await self._check_provider(row.requester_inami, line, "provider_inami")
                event = _event("efact", row.requester_inami, reference, line, row.submitted_on)
                await self._dmg.register_contact(event, entry)
        except MeshError as error:
            if not error.codes or error.status in _TRANSIENT:
                raise  # not an answer (the database busy, ...): the line stays pending, the job retries it
            answer.result = dmg_pb2.INVOICE_LINE_RESULT_REJECTED
            answer.error_code = error.codes[0]
            answer.error_description = error.message[:500]
        now = self._clock.now()
        created = timestamp_pb2.Timestamp()
        created.FromDatetime(now.astimezone(dt.UTC))
        message = dmg_pb2.MailboxMessage(
            message_id=f"{self._dmg.insurer_code}-efact-{row.id}",
            kind=dmg_pb2.MESSAGE_KIND_INVOICE_ANSWER,
            insurer_code=self._dmg.insurer_code,
            recipient_inami=row.requester_inami,
            requester_reference=row.batch_reference,
            created_time=created,
            invoice_answer=answer,
        )
        message.content_hash = hashlib.sha256(answer.SerializeToString(deterministic=True)).hexdigest()
        async with transaction(self._sessions) as session:
            done = await session.execute(
                update(m.InvoiceLineRow)
                .where(m.InvoiceLineRow.id == row.id, m.InvoiceLineRow.answered == False)  # type: ignore[arg-type]  # noqa: E712
                .values(answered=True, answered_at=now)
            )
            if done.rowcount:  # type: ignore[attr-defined]
                await OutboxRepository(session).add([outbox_row(message, now)])
        self._outbox.set()


def _event(kind: str, requester: str, reference: str, line: Line, submitted: dt.date) -> c.IntakeEvent:
    """The intake event of a line: a contact, keyed by its own intake reference."""
    return c.IntakeEvent(
        "contact",
        f"{kind}:{requester}:{reference}",
        line.niss,
        line.provider,
        line.contact_date,
        submitted,
        line.fingerprint,
        line.code,
    )


class InvoiceLines:
    """The background job answering eFact lines: woken by each acceptance (and at the safety timeout)."""

    def __init__(self, operations: InvoicingOperations, *, interval: float = SAFETY_TIMEOUT) -> None:
        self._ops = operations
        self._interval = interval
        self.answered = asyncio.Event()

    async def run(self) -> None:
        while True:
            while await self._ops.answer_pending():
                self.answered.set()
            await self._ops.wakeup.wait(self._interval)


__all__ = ["InvoiceLines", "InvoicingOperations", "parse_attest", "parse_lines"]
