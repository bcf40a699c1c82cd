"""The hub's invoicing services (``mycarenet.invoicing.v1.InvoicingService``): eFact and eAttest, the
provider's own way of bringing a contact to the patient's insurer (seed 001 annex 4, seed 004).

The path of a notify: the trust table admits the caller (a physician who bills contacts, a medical house,
or a third party mandated for INVOICING); the request is parsed with the core ``Checker`` (every field
violation at once, nothing forwarded); the provider is throttled as the trust table declares (a batch: one
token per insurer its lines go to; an attest: one); each contact is routed by NISS to the
patient's insurer at the contact date (:mod:`hub.routing`).

* eFact: the lines of a batch are grouped by insurer and each insurer's part is sent to it
  (``OaInvoicingService.AcceptInvoiceLines``), in parallel; the insurer stores them before it answers.
  The technical acknowledgement is returned once every insurer concerned has acknowledged: "an invoice
  counts as received only once the insurer's acknowledgement has been sent back through the network"
  (seed 001 annex 4). When an insurer cannot be reached the call fails (UNAVAILABLE) and the provider
  posts the batch again, which the insurers' idempotency (requester, batch reference, line number) makes
  harmless. The acknowledgement's reference is derived from the requester and the batch reference, so the
  same batch always has the same one. A line whose patient no insurer covers on its contact date is named
  in the acknowledgement (120) and goes nowhere. The answer per line comes later, through the insurer's
  outbox, in the requester's mailbox (``MESSAGE_KIND_INVOICE_ANSWER``).
* eAttest: one certificate, routed and registered at once (``OaInvoicingService.RegisterAttest``).

No therapeutic relation is asked: invoicing is what proves the contact.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
from dataclasses import dataclass, replace
from typing import Any

from hub import requests
from hub.audit import AuditEntry
from hub.auth import Caller
from hub.policy import Call, Servicer, rpc
from hub.services import HubCore
from hub.upstream import OaClient
from mycarenet_core.codes import McnCode
from mycarenet_core.errors import MeshError, invalid_argument
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from mycarenet_core.gen.mycarenet.invoicing.v1 import invoicing_service_pb2 as pub
from mycarenet_core.gen.mycarenet.oa.v1 import oa_invoicing_service_pb2 as oa_pb
from mycarenet_core.gen.mycarenet.oa.v1 import oa_invoicing_service_pb2_grpc as oa_grpc
from mycarenet_core.identifiers import Role
from mycarenet_core.trust import TABLE, TrustTable
from mycarenet_core.validation import Checker

MAX_LINES = 500
_LINE = re.compile(r"^lines\[(\d+)\]")
CONTACT_CODE_LENGTH = 32


@dataclass(frozen=True)
class Batch:
    reference: str
    lines: list[tuple[int, pub.InvoiceLine]]
    """(index in the request, line), the line's NISS normalised."""


@dataclass(frozen=True)
class RoutedBatch:
    """A parsed batch with its lines grouped by the insurer of their patient at their contact date."""

    batch: Batch
    routed: dict[str, list[tuple[int, pub.InvoiceLine]]]
    unrouted: list[common_pb2.AckItem]
    """An item (120) for each line no insurer covers."""
    insurers: list[str]
    """The insurers the lines go to, in order (the throttle takes one token each, at least one)."""


@dataclass(frozen=True)
class Attest:
    reference: str
    niss: str
    on: dt.date


def hub_reference(requester: str, reference: str) -> str:
    """The acknowledgement's reference of a batch: the same batch always gets the same one."""
    return "EFACT-" + hashlib.sha256(f"{requester}\x1f{reference}".encode()).hexdigest()[:40]


def _contact(
    check: Checker,
    at: str,
    line: pub.InvoiceLine | pub.SendAttestRequest,
    caller: Caller,
    today: dt.date,
) -> tuple[str, dt.date | None]:
    """The fields of one contact: NISS, physician (the requester unless it is a medical house, 156), date
    (not after today, 146), code, amount."""
    niss = check.niss(f"{at}patient_niss", line.patient_niss)
    provider = check.inami(f"{at}provider_inami", line.provider_inami)
    if (
        provider is not None
        and provider.value != caller.requester_inami
        and caller.role is not Role.MEDICAL_HOUSE
    ):
        check.add(
            f"{at}provider_inami", McnCode.AUTHOR_MISMATCH, "the physician of a contact is the requester"
        )
    on = check.date(f"{at}contact_date", line.contact_date)
    if on is not None and on > today:
        check.add(f"{at}contact_date", McnCode.DATE_IN_FUTURE, "the contact is after today")
    check.text(f"{at}nomenclature_code", line.nomenclature_code, max_length=CONTACT_CODE_LENGTH)
    if line.amount.currency_code not in ("", "EUR"):
        check.add(f"{at}amount.currency_code", McnCode.VALUE_NOT_ALLOWED, "only EUR")
    check.text(f"{at}amount.amount", line.amount.amount, max_length=20)
    return niss, on


def parse_batch(request: pub.PostInvoiceBatchRequest, caller: Caller, today: dt.date) -> Batch:
    lines: list[tuple[int, pub.InvoiceLine]] = []
    with Checker() as check:
        ref = requests.reference(check, request.requester_reference, required=True)
        seen: set[int] = set()
        if check.items("lines", request.lines, maximum=MAX_LINES, required=True):
            for i, line in enumerate(request.lines):
                at = f"lines[{i}]."
                if line.line_number < 1 or line.line_number in seen:
                    check.add(f"{at}line_number", McnCode.VALUE_NOT_ALLOWED, "numbered from 1, unique")
                seen.add(line.line_number)
                niss, _on = _contact(check, at, line, caller, today)
                copy = pub.InvoiceLine()
                copy.CopyFrom(line)
                copy.patient_niss = niss
                lines.append((i, copy))
    return Batch(ref, lines)


def parse_attest(request: pub.SendAttestRequest, caller: Caller, today: dt.date) -> Attest:
    with Checker() as check:
        ref = requests.reference(check, request.requester_reference, required=True)
        niss, on = _contact(check, "", request, caller, today)
    assert on is not None
    return Attest(ref, niss, on)


def _in_request(field: str, indexes: list[int]) -> str:
    """``lines[k]...`` of an insurer's part as ``lines[i]...`` of the caller's request."""
    found = _LINE.match(field)
    if found is None or int(found.group(1)) >= len(indexes):
        return field
    return f"lines[{indexes[int(found.group(1))]}]{field[found.end() :]}"


class InvoicingServicer(Servicer):
    SERVICE = pub.DESCRIPTOR.services_by_name["InvoicingService"]

    def __init__(self, core: HubCore, table: TrustTable = TABLE) -> None:
        super().__init__(core, table)
        self._stubs: dict[str, oa_grpc.OaInvoicingServiceAsyncStub] = {}

    def _stub(self, oa: OaClient) -> oa_grpc.OaInvoicingServiceAsyncStub:
        stub = self._stubs.get(oa.insurer_code)
        if stub is None:
            stub = self._stubs[oa.insurer_code] = oa_grpc.OaInvoicingServiceStub(oa.channel)
        return stub

    @rpc(lambda self, call: self._route(parse_batch(call.request, call.caller, self.core.clock.today())))
    async def PostInvoiceBatch(
        self, call: Call[pub.PostInvoiceBatchRequest], asked: RoutedBatch
    ) -> pub.PostInvoiceBatchResponse:
        caller, remaining = call.caller, call.remaining()
        reference = hub_reference(caller.requester_inami, asked.batch.reference)
        ctx = self.core.request_context(caller, asked.batch.reference)
        await asyncio.gather(
            *(
                self._send(code, lines, ctx, reference, remaining)
                for code, lines in sorted(asked.routed.items())
            )
        )
        tack = dmg_pb2.TechnicalAck(
            reference=reference, result=dmg_pb2.TECHNICAL_ACK_RESULT_SUCCESS, items=asked.unrouted[:100]
        )
        return pub.PostInvoiceBatchResponse(
            requester_reference=call.request.requester_reference,
            technical_ack=tack,
            insurer_codes=asked.insurers,
        )

    def _route(self, batch: Batch) -> RoutedBatch:
        """The lines by insurer at their contact date (with their index in the request), and an item (120)
        for each line no insurer covers."""
        routed: dict[str, list[tuple[int, pub.InvoiceLine]]] = {}
        unrouted: list[common_pb2.AckItem] = []
        for i, line in batch.lines:
            on = dt.date(line.contact_date.year, line.contact_date.month, line.contact_date.day)
            code = self.core.index.route(int(line.patient_niss), on)
            if code is None:
                unrouted.append(
                    common_pb2.AckItem(
                        code=McnCode.PATIENT_UNKNOWN,
                        field_path=f"lines[{i}].patient_niss",
                        description=f"line {line.line_number}: NISS not affiliated on {on.isoformat()}",
                        severity=common_pb2.SEVERITY_ERROR,
                    )
                )
                continue
            routed.setdefault(code, []).append((i, line))
        return RoutedBatch(batch, routed, unrouted, sorted(routed))

    async def _send(
        self,
        code: str,
        lines: list[tuple[int, pub.InvoiceLine]],
        ctx: Any,
        reference: str,
        remaining: float | None,
    ) -> None:
        """One insurer's part; its field violations name the lines as the caller numbered them."""
        oa = self.core.oa(code)
        stub = self._stub(oa)
        call = oa_pb.AcceptInvoiceLinesRequest(
            context=ctx, hub_reference=reference, lines=[line for _, line in lines]
        )
        try:
            await oa.call(lambda t: stub.AcceptInvoiceLines(call, timeout=t, wait_for_ready=False), remaining)
        except MeshError as error:
            if not error.violations:
                raise
            raise invalid_argument(
                [replace(v, field=_in_request(v.field, [i for i, _ in lines])) for v in error.violations]
            ) from None

    @rpc(lambda self, call: parse_attest(call.request, call.caller, self.core.clock.today()))
    async def SendAttest(self, call: Call[pub.SendAttestRequest], asked: Attest) -> pub.SendAttestResponse:
        answer, code = await self._attest(call.caller, asked, call.request, call.entry, call.remaining())
        return pub.SendAttestResponse(
            requester_reference=call.request.requester_reference,
            insurer_code=code,
            acknowledgement=common_pb2.Acknowledgement(complete=True),
            replayed=answer.replayed,
            message_ids=answer.message_ids,
        )

    async def _attest(
        self,
        caller: Caller,
        asked: Attest,
        request: pub.SendAttestRequest,
        entry: AuditEntry,
        remaining: float | None,
    ) -> tuple[oa_pb.RegisterAttestResponse, str]:
        patient = requests.PatientRef(common_pb2.PatientSelector(niss=asked.niss), niss=asked.niss)
        oa, _niss = await self.core.routed(patient, asked.on, entry)
        stub = self._stub(oa)
        attest = pub.SendAttestRequest()
        attest.CopyFrom(request)
        attest.patient_niss = asked.niss
        call = oa_pb.RegisterAttestRequest(
            context=self.core.request_context(caller, asked.reference), attest=attest
        )
        answer = await oa.call(
            lambda t: stub.RegisterAttest(call, timeout=t, wait_for_ready=False), remaining
        )
        return answer, oa.insurer_code


__all__ = ["InvoicingServicer", "hub_reference", "parse_attest", "parse_batch"]
