"""The hub's servicers: thin — throttle, route, then call the OA (or the mailbox).

Who may call what (certificate, session, roles, mandated service) is settled before a handler runs, by the
trust interceptor over ``mycarenet_core/trust.toml``; a handler takes the verified session from it
(:func:`hub.auth.session_caller`) and applies only the scope rules of its own: the requester's own
mailbox, a therapeutic relation with the patient, an insurer delivering only its own messages.

Public face: ``mycarenet.dmg.v1.DmgService`` and ``MailboxService``; internal face:
``mycarenet.hub.v1.MailboxIntakeService`` (OA outbox relays).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import select

from hub.audit import AuditEntry, AuditLog
from hub.auth import Caller, TokenVerifier, current_peer, require_supervisor, session_caller
from hub.mailbox import DEFAULT_PAGE, MAX_PAGE, MailboxNotifier, MailboxRepository
from hub.models import PendingTransfer
from hub.patient_list import PatientListWorker
from hub.routing import RoutingIndex, RoutingRepository
from hub.throttle import Throttle
from hub.upstream import EhealthClient, OaClient
from mycarenet_core import dates
from mycarenet_core.clock import Clock
from mycarenet_core.db import transaction
from mycarenet_core.errors import (
    FieldViolation,
    McnCode,
    MeshError,
    field_error,
    invalid_argument,
    not_found,
    permission_denied,
    unauthenticated,
    unavailable,
)
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import (
    dmg_pb2,
    dmg_service_pb2_grpc,
    mailbox_service_pb2_grpc,
)
from mycarenet_core.gen.mycarenet.dmg.v1 import (
    dmg_service_pb2 as pub,
)
from mycarenet_core.gen.mycarenet.dmg.v1 import (
    mailbox_service_pb2 as mbx,
)
from mycarenet_core.gen.mycarenet.ehealth.v1 import therapeutic_relation_pb2 as tr
from mycarenet_core.gen.mycarenet.hub.v1 import (
    mailbox_intake_service_pb2 as intake,
)
from mycarenet_core.gen.mycarenet.hub.v1 import (
    mailbox_intake_service_pb2_grpc,
)
from mycarenet_core.gen.mycarenet.oa.v1 import context_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import oa_dmg_service_pb2 as oa_pb
from mycarenet_core.identifiers import (
    INSURER_CODES,
    IdentifierError,
    parse_inami,
    parse_member_number,
    parse_niss,
)
from mycarenet_core.telemetry import message_links

log = logging.getLogger(__name__)
Context = grpc.aio.ServicerContext[Any, Any]
TRANSPORT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass
class HubCore:
    """Everything the servicers depend on (built by :class:`hub.app.HubApp`)."""

    clock: Clock
    sessions: async_sessionmaker[AsyncSession]
    verifier: TokenVerifier
    throttle: Throttle
    index: RoutingIndex
    oas: Mapping[str, OaClient]
    ehealth: EhealthClient
    audit: AuditLog
    notifier: MailboxNotifier
    lists: PatientListWorker
    watch_poll_seconds: float = 5.0
    tracer: trace.Tracer = field(default_factory=trace.NoOpTracer)

    # --- shared steps -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def handling(self, rpc: str, reference: str = "") -> AsyncIterator[AuditEntry]:
        """Audit the call and put the requester reference in every error's metadata."""
        try:
            async with self.audit.record(rpc) as entry:
                entry.requester_reference = reference
                yield entry
        except MeshError as error:
            raise error.with_metadata(requester_reference=reference) from None

    def caller(self, entry: AuditEntry) -> Caller:
        """The session the trust interceptor verified for this call, recorded in its audit row."""
        caller = session_caller()
        entry.caller = caller
        return caller

    def request_context(self, caller: Caller, reference: str) -> context_pb2.RequestContext:
        return context_pb2.RequestContext(
            requester_inami=caller.requester_inami,
            requester_role=caller.proto_role,
            executor_id=caller.executor_id,
            executor_kind=caller.executor_kind,
            mandate_id=caller.mandate_id,
            session_id=caller.session_id,
            requester_reference=reference,
            processing_date=dates.to_proto(self.clock.today()),
            organisation_inami=caller.organisation,
        )

    def oa(self, code: str) -> OaClient:
        client = self.oas.get(code)
        if client is None:
            raise unavailable("OA_UNAVAILABLE", f"no route to insurer {code}").with_metadata(
                insurer_code=code
            )
        return client

    async def resolve(self, patient: common_pb2.PatientSelector, on: dt.date) -> tuple[str, str]:
        """(insurer code, NISS) of the patient: by NISS and date through the index (120 at once when
        unknown), or by member number, routed by mutuality code (122 when the hub does not know it)."""
        which = patient.WhichOneof("identifier")
        if which == "niss":
            try:
                niss = parse_niss(patient.niss).value
            except IdentifierError as error:
                raise field_error("patient.niss", error.code, error.reason) from None
            code = self.index.route(int(niss), on)
            if code is None:
                raise not_found(
                    "PATIENT_UNKNOWN",
                    f"NISS unknown to the insurers or not affiliated on {on.isoformat()}",
                    code=McnCode.PATIENT_UNKNOWN,
                    field_path="patient.niss",
                )
            trace.get_current_span().set_attribute("mycarenet.oa", code)
            return code, niss
        if which == "member":
            try:
                member = parse_member_number(
                    patient.member.mutuality_code, patient.member.registration_number
                )
            except IdentifierError as error:
                path = "patient.member.mutuality_code" if error.code == 121 else "patient.member"
                raise field_error(path, error.code, error.reason) from None
            async with self.sessions() as session:
                found = await RoutingRepository(session).niss_by_member(
                    member.insurer, member.registration_number
                )
            if found is None:
                raise not_found(
                    "MEMBER_UNKNOWN",
                    "member number unknown to the insurer",
                    code=McnCode.MEMBER_NUMBER_UNKNOWN,
                    field_path="patient.member.registration_number",
                )
            trace.get_current_span().set_attribute("mycarenet.oa", member.insurer)
            return member.insurer, found
        raise field_error(
            "patient", McnCode.MANDATORY_FIELD_MISSING, "patient NISS or member number is mandatory"
        )

    async def check_relation(self, caller: Caller, niss: str, context: Context) -> None:
        """The therapeutic relation, checked by eHealth in one round trip; PERMISSION_DENIED 140 if none."""
        request = tr.CheckRelationRequest(
            provider_inami=caller.requester_inami,
            patient_niss=niss,
            date=dates.to_proto(self.clock.today()),
        )
        answer = await self.ehealth.call(
            lambda t: self.ehealth.relations.CheckRelation(request, timeout=t),
            context.time_remaining(),
        )
        if not answer.exists:
            raise permission_denied(
                "NO_THERAPEUTIC_RELATION",
                "no therapeutic relation between the requester and the patient (eHealth)",
                code=McnCode.PROVIDER_NOT_ENTITLED,
            )

    async def _send_transfer(self, request: tr.TransferDmgRelationRequest, remaining: float | None) -> None:
        await self.ehealth.call(
            lambda t: self.ehealth.relations.TransferDmgRelation(request, timeout=t), remaining
        )

    async def transfer_relation(
        self, request: tr.TransferDmgRelationRequest, remaining: float | None
    ) -> bool:
        """Move the DMG relation at eHealth; on failure keep it for the background retry. True if done."""
        try:
            await self._send_transfer(request, remaining)
            return True
        except MeshError as error:
            log.warning("DMG relation move %s postponed: %s", request.source_reference, error)
            async with transaction(self.sessions) as session:
                if await session.get(PendingTransfer, request.source_reference) is None:
                    session.add(
                        PendingTransfer(
                            source_reference=request.source_reference,
                            request=request.SerializeToString(),
                            last_error=str(error)[:500],
                        )
                    )
            return False

    async def retry_transfers(self) -> None:
        """Background: push the postponed DMG relation moves to eHealth (stop at a transport failure)."""
        async with self.sessions() as session:
            rows = (await session.execute(select(PendingTransfer).limit(100))).scalars().all()
        for row in rows:
            error: MeshError | None = None
            try:
                await self._send_transfer(tr.TransferDmgRelationRequest.FromString(row.request), 5.0)
            except MeshError as failed:
                error = failed
            async with transaction(self.sessions) as session:
                fresh = await session.get(PendingTransfer, row.source_reference)
                if fresh is not None and error is None:
                    await session.delete(fresh)
                elif fresh is not None and error is not None:
                    fresh.attempts += 1
                    fresh.last_error = str(error)[:500]
            if error is not None and error.status in TRANSPORT:
                return


def check_requester(given: str, caller: Caller) -> None:
    """An optional requester INAMI in the request must be the session's requester of record (156)."""
    if not given:
        return
    try:
        value = parse_inami(given).value
    except IdentifierError as error:
        raise field_error("requester_inami", error.code, error.reason) from None
    if value != caller.requester_inami:
        raise field_error(
            "requester_inami", McnCode.AUTHOR_MISMATCH, "requester differs from the authenticated session"
        )


def insurer_list(codes: list[str], served: Iterable[str], field_name: str) -> list[str]:
    """The asked insurer codes, each a node code (121 otherwise), without repeats; when none are asked,
    every insurer this hub serves (all seven in a full mesh)."""
    bad = [
        FieldViolation(field_name, McnCode.MUTUALITY_UNKNOWN, f"unknown insurer {c!r}")
        for c in codes
        if c not in INSURER_CODES
    ]
    if bad:
        raise invalid_argument(bad)
    asked = codes or [c for c in INSURER_CODES if c in set(served)]
    return list(dict.fromkeys(asked))


class DmgServicer(dmg_service_pb2_grpc.DmgServiceServicer):
    def __init__(self, core: HubCore) -> None:
        self.core = core

    async def ConsultDmg(self, request: pub.ConsultDmgRequest, context: Context) -> pub.ConsultDmgResponse:
        core = self.core
        async with core.handling("ConsultDmg", request.requester_reference) as entry:
            caller = core.caller(entry)
            check_requester(request.requester_inami, caller)
            core.throttle.take(caller.requester_inami)
            on = dates.from_proto(request.request_date, "request_date")
            code, niss = await core.resolve(request.patient, on)
            entry.insurer_codes = [code]
            await core.check_relation(caller, niss, context)
            oa = core.oa(code)
            call = oa_pb.ConsultDmgRequest(
                context=core.request_context(caller, request.requester_reference),
                patient=request.patient,
                request_date=request.request_date,
            )
            answer = await oa.call(
                lambda t: oa.dmg.ConsultDmg(call, timeout=t, wait_for_ready=False), context.time_remaining()
            )
            return pub.ConsultDmgResponse(
                requester_reference=request.requester_reference,
                patient=answer.patient,
                insurer_code=answer.insurer_code or code,
                holding=answer.holding if answer.HasField("holding") else None,
                payment_made_this_year=answer.payment_made_this_year,
                acknowledgement=common_pb2.Acknowledgement(complete=True),
            )

    async def NotifyDmg(self, request: pub.NotifyDmgRequest, context: Context) -> pub.NotifyDmgResponse:
        core = self.core
        async with core.handling("NotifyDmg", request.requester_reference) as entry:
            caller = core.caller(entry)
            check_requester(request.requester_inami, caller)
            require_supervisor(caller, request.supervisor_inami)
            if not request.requester_reference:
                raise field_error(
                    "requester_reference", McnCode.MANDATORY_FIELD_MISSING, "the reference is mandatory"
                )
            core.throttle.take(caller.requester_inami)
            on = dates.from_proto(request.contact_date, "contact_date")
            code, niss = await core.resolve(request.patient, on)
            entry.insurer_codes = [code]
            await core.check_relation(caller, niss, context)
            oa = core.oa(code)
            call = oa_pb.NotifyDmgRequest(
                context=core.request_context(caller, request.requester_reference),
                patient=request.patient,
                contact_date=request.contact_date,
                contact_time=request.contact_time,
                nomenclature_code=request.nomenclature_code,
                supervisor_inami=request.supervisor_inami,
            )
            answer = await oa.call(
                lambda t: oa.dmg.NotifyDmg(call, timeout=t, wait_for_ready=False), context.time_remaining()
            )
            ack = common_pb2.Acknowledgement(complete=True)
            if answer.holder.inami:
                moved = await core.transfer_relation(
                    tr.TransferDmgRelationRequest(
                        patient_niss=answer.patient.niss or niss,
                        new_holder_inami=answer.holder.inami,
                        previous_holder_inami=answer.previous_holder.inami,
                        start_date=answer.start_date,
                        source_reference=f"{code}:{request.requester_reference}",
                    ),
                    context.time_remaining(),
                )
                if not moved:
                    ack.items.append(
                        common_pb2.AckItem(
                            description="the DMG therapeutic relation will be moved at eHealth shortly",
                            severity=common_pb2.SEVERITY_WARNING,
                        )
                    )
            return pub.NotifyDmgResponse(
                requester_reference=request.requester_reference,
                patient=answer.patient,
                insurer_code=answer.insurer_code or code,
                holder=answer.holder,
                start_date=answer.start_date,
                end_date=answer.end_date,
                payment=answer.payment,
                acknowledgement=ack,
                replayed=answer.replayed,
            )

    async def EnrolDmg(self, request: pub.EnrolDmgRequest, context: Context) -> pub.EnrolDmgResponse:
        core = self.core
        async with core.handling("EnrolDmg", request.requester_reference) as entry:
            caller = core.caller(entry)
            codes = insurer_list(list(request.insurer_codes), core.oas, "insurer_codes")
            entry.insurer_codes = codes
            start = dates.optional_from_proto(request.start_date, "start_date") or core.clock.today()
            ctx = core.request_context(caller, request.requester_reference)
            remaining = context.time_remaining()

            async def one(code: str) -> pub.EnrolmentOutcome:
                outcome = pub.EnrolmentOutcome(insurer_code=code)
                try:
                    oa = core.oa(code)
                    call = oa_pb.EnrolDmgRequest(
                        context=ctx, bank_account=request.bank_account, start_date=dates.to_proto(start)
                    )
                    answer = await oa.call(
                        lambda t: oa.dmg.EnrolDmg(call, timeout=t, wait_for_ready=False), remaining
                    )
                    outcome.status = pub.ENROLMENT_STATUS_ENROLLED
                    outcome.enrolled_since.CopyFrom(answer.enrolled_since)
                except MeshError as error:
                    outcome.error = error.message
                    outcome.error_code = error.code or 0
                    if error.code == McnCode.ALREADY_ENROLLED:
                        outcome.status = pub.ENROLMENT_STATUS_ALREADY_ENROLLED
                        with contextlib.suppress(MeshError):
                            oa = core.oa(code)
                            got = await oa.call(
                                lambda t: oa.dmg.GetEnrolment(
                                    oa_pb.GetEnrolmentRequest(inami=caller.requester_inami), timeout=t
                                ),
                                remaining,
                            )
                            outcome.enrolled_since.CopyFrom(got.enrolled_since)
                    else:
                        outcome.status = pub.ENROLMENT_STATUS_FAILED
                return outcome

            outcomes = await asyncio.gather(*(one(c) for c in codes))
            return pub.EnrolDmgResponse(requester_reference=request.requester_reference, outcomes=outcomes)


def _page_size(value: int) -> int:
    if value < 0:
        raise field_error("page_size", McnCode.BAD_FORMAT, "page_size must not be negative")
    return min(value or DEFAULT_PAGE, MAX_PAGE)


def _page_token(value: str) -> int:
    if not value:
        return 0
    if not (value.startswith("m") and value[1:].isdigit()):
        raise field_error("page_token", McnCode.BAD_FORMAT, "page_token is not one this service issued")
    return int(value[1:])


class MailboxServicer(mailbox_service_pb2_grpc.MailboxServiceServicer):
    def __init__(self, core: HubCore) -> None:
        self.core = core

    async def PostPatientList(
        self, request: mbx.PostPatientListRequest, context: Context
    ) -> mbx.PostPatientListResponse:
        core = self.core
        async with core.handling("PostPatientList", request.requester_reference) as entry:
            caller = core.caller(entry)
            if not request.requester_reference:
                raise field_error(
                    "requester_reference", McnCode.MANDATORY_FIELD_MISSING, "the reference is mandatory"
                )
            when = dates.from_proto(request.reference_date, "reference_date")
            this_year = core.clock.today().year
            if when.year > this_year:
                raise field_error(
                    "reference_date", McnCode.DATE_IN_FUTURE, "the year asked for is in the future"
                )
            if when.year < this_year - 2:
                raise field_error(
                    "reference_date", McnCode.DATE_TOO_OLD, "the year asked for is more than two years back"
                )
            codes = insurer_list(list(request.insurer_codes), core.oas, "insurer_codes")
            entry.insurer_codes = codes
            tack = await core.lists.post(
                core.request_context(caller, request.requester_reference), when.year, codes
            )
            return mbx.PostPatientListResponse(
                requester_reference=request.requester_reference, technical_ack=tack
            )

    async def GetMessages(self, request: mbx.GetMessagesRequest, context: Context) -> mbx.GetMessagesResponse:
        core = self.core
        async with core.handling("GetMessages") as entry:
            caller = core.caller(entry)
            size = _page_size(request.page_size)
            after = _page_token(request.page_token)
            async with core.sessions() as session:
                rows = await MailboxRepository(session).pending(
                    caller.requester_inami, request.kinds, after_id=after, limit=size + 1
                )
            more = len(rows) > size
            rows = rows[:size]
            return mbx.GetMessagesResponse(
                messages=[m for _, m in rows], next_page_token=f"m{rows[-1][0]}" if more else ""
            )

    async def WatchMessages(
        self, request: mbx.WatchMessagesRequest, context: Context
    ) -> AsyncIterator[mbx.WatchMessagesResponse]:
        core = self.core
        async with core.handling("WatchMessages") as entry:
            caller = core.caller(entry)
        recipient = caller.requester_inami
        loop = asyncio.get_running_loop()
        end_at = loop.time() + max(0.0, (caller.expires - core.clock.now()).total_seconds())
        event = core.notifier.subscribe(recipient)
        try:
            last = 0
            while True:
                # A session ended at eHealth (logout, a mandate or credential revoked, the provider's
                # validity ended) stops the watch too, within a poll, and says so; its natural end is quiet.
                if core.verifier.is_revoked(caller.session_id):
                    raise unauthenticated("REVOKED", "the session was ended")
                event.clear()
                async with core.sessions() as session:
                    batch = await MailboxRepository(session).pending(
                        recipient, request.kinds, after_id=last, limit=200
                    )
                for row_id, message in batch:
                    last = row_id
                    yield mbx.WatchMessagesResponse(message=message)
                if len(batch) == 200:
                    continue
                left = end_at - loop.time()
                if left <= 0:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(left, core.watch_poll_seconds))
        finally:
            core.notifier.unsubscribe(recipient, event)

    async def ConfirmMessages(
        self, request: mbx.ConfirmMessagesRequest, context: Context
    ) -> mbx.ConfirmMessagesResponse:
        core = self.core
        async with core.handling("ConfirmMessages") as entry:
            caller = core.caller(entry)
            async with transaction(core.sessions) as session:
                result = await MailboxRepository(session).confirm(
                    caller.requester_inami,
                    list(request.message_ids),
                    list(request.content_hashes),
                    core.clock.now(),
                )
            return mbx.ConfirmMessagesResponse(
                confirmed_count=result.confirmed,
                already_confirmed_count=result.already,
                unknown=result.unknown,
                acknowledgement=common_pb2.Acknowledgement(complete=not result.unknown),
            )


class MailboxIntakeServicer(mailbox_intake_service_pb2_grpc.MailboxIntakeServiceServicer):
    def __init__(self, core: HubCore) -> None:
        self.core = core

    async def DeliverMessages(
        self, request: intake.DeliverMessagesRequest, context: Context
    ) -> intake.DeliverMessagesResponse:
        core = self.core
        async with core.handling("DeliverMessages") as entry:
            code = request.insurer_code
            entry.insurer_codes = [code]
            if code not in INSURER_CODES:
                raise field_error("insurer_code", McnCode.MUTUALITY_UNKNOWN, f"unknown insurer {code!r}")
            # The trust table lets only insurer nodes in; each delivers only the messages of the insurer its
            # certificate names (without TLS: the oa-XXX it declares), never another's.
            peer = current_peer()
            if peer.insurer_code != code:
                raise permission_denied(
                    "NOT_THIS_INSURER", f"{peer.name} delivers only its own messages, not those of oa-{code}"
                )
            bad: list[FieldViolation] = []
            for i, message in enumerate(request.messages):
                if not message.message_id:
                    bad.append(
                        FieldViolation(
                            f"messages[{i}].message_id", McnCode.MANDATORY_FIELD_MISSING, "missing"
                        )
                    )
                if not message.recipient_inami:
                    bad.append(
                        FieldViolation(
                            f"messages[{i}].recipient_inami", McnCode.MANDATORY_FIELD_MISSING, "missing"
                        )
                    )
                if message.insurer_code and message.insurer_code != code:
                    bad.append(
                        FieldViolation(
                            f"messages[{i}].insurer_code",
                            McnCode.ROUTING_INCONSISTENT,
                            "not the delivering insurer",
                        )
                    )
                if message.kind == dmg_pb2.MESSAGE_KIND_UNSPECIFIED:
                    bad.append(
                        FieldViolation(f"messages[{i}].kind", McnCode.MANDATORY_FIELD_MISSING, "missing")
                    )
            if bad:
                raise invalid_argument(bad)
            messages = []
            for message in request.messages:
                copy = dmg_pb2.MailboxMessage()
                copy.CopyFrom(message)
                copy.insurer_code = code
                messages.append(copy)
            # The storage links back to the request that caused each message (its W3C trace context).
            with core.tracer.start_as_current_span(
                "mailbox.store",
                kind=trace.SpanKind.CONSUMER,
                links=message_links(messages),
                attributes={"mycarenet.oa": code, "messaging.batch.message_count": len(messages)},
            ):
                async with transaction(core.sessions) as session:
                    result = await MailboxRepository(session).store(messages)
            core.notifier.notify(result.recipients)
            return intake.DeliverMessagesResponse(stored_ids=result.stored, duplicate_ids=result.duplicates)
