"""The hub's domain (:class:`HubCore`) and its servicers, which are proto → domain call → proto.

Who may call what (certificate, session, roles, mandated service) is settled before a handler runs, by the
trust interceptor over ``mycarenet_core/trust.toml``; the same table declares each RPC's throttle and audit,
which the method's handler enforces (:mod:`hub.policy`): it records the call, parses its request with the
parser its step names (:mod:`hub.requests`: every field violation at once), takes the throttle's tokens,
and runs the step, which calls the domain; the domain applies the scope rules of its own: the requester's
own mailbox, a therapeutic relation with the patient (:mod:`hub.relations`), an insurer delivering only its
own messages.

Public face: ``mycarenet.dmg.v1.DmgService`` and ``MailboxService``; internal face:
``mycarenet.hub.v1.MailboxIntakeService`` (OA outbox relays).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub import requests
from hub.abuse import AbuseControl
from hub.audit import AuditEntry, AuditLog
from hub.auth import Caller, TokenVerifier, current_peer
from hub.mailbox import MailboxNotifier, MailboxRepository
from hub.patient_list import PatientListWorker
from hub.policy import Call, Servicer, rpc
from hub.relations import RelationCheck
from hub.routing import RoutingIndex, RoutingRepository
from hub.throttle import Throttle
from hub.upstream import EhealthClient, OaClient
from mycarenet_core import dates
from mycarenet_core.clock import Clock
from mycarenet_core.codes import McnCode
from mycarenet_core.db import transaction
from mycarenet_core.errors import MeshError, not_found, permission_denied, unauthenticated, unavailable
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_service_pb2 as pub
from mycarenet_core.gen.mycarenet.dmg.v1 import mailbox_service_pb2 as mbx
from mycarenet_core.gen.mycarenet.hub.v1 import mailbox_intake_service_pb2 as intake
from mycarenet_core.gen.mycarenet.oa.v1 import context_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import oa_dmg_service_pb2 as oa_pb
from mycarenet_core.identifiers import INSURER_CODES
from mycarenet_core.telemetry import message_links
from mycarenet_core.validation import paginate

log = logging.getLogger(__name__)
WATCH_BATCH = 200


@dataclass
class HubCore:
    """The hub's domain: routing, the relation check, the insurers' calls, the mailbox (built by
    :class:`hub.app.HubApp`)."""

    clock: Clock
    sessions: async_sessionmaker[AsyncSession]
    verifier: TokenVerifier
    throttle: Throttle
    index: RoutingIndex
    oas: Mapping[str, OaClient]
    ehealth: EhealthClient
    relations: RelationCheck
    audit: AuditLog
    notifier: MailboxNotifier
    lists: PatientListWorker
    abuse: AbuseControl
    tracer: trace.Tracer = field(default_factory=trace.NoOpTracer)

    # --- shared steps -------------------------------------------------------------------------------

    def request_context(self, caller: Caller, reference: str) -> context_pb2.RequestContext:
        """Who asks, for the insurer. A provider's reference is optional but for a notify (its idempotency
        key): without one, the insurer's audit gets the hub's own (``hub-<uuid>``)."""
        return context_pb2.RequestContext(
            requester_inami=caller.requester_inami,
            requester_role=caller.proto_role,
            executor_id=caller.executor_id,
            executor_kind=caller.executor_kind,
            mandate_id=caller.mandate_id,
            session_id=caller.session_id,
            requester_reference=reference or f"hub-{uuid.uuid4().hex}",
            processing_date=dates.to_proto(self.clock.today()),
            organisation_inami=caller.organisation,
            session_user_inami=caller.user,
        )

    def oa(self, code: str) -> OaClient:
        client = self.oas.get(code)
        if client is None:
            raise unavailable("OA_UNAVAILABLE", f"no route to insurer {code}").with_metadata(
                insurer_code=code
            )
        return client

    async def resolve(self, patient: requests.PatientRef, on: dt.date) -> tuple[str, str]:
        """(insurer code, NISS) of the patient: by NISS and date through the index (120 at once when
        unknown), or by member number, routed by mutuality code (122 when the hub does not know it)."""
        if patient.member is None:
            code = self.index.route(int(patient.niss), on)
            if code is None:
                raise not_found(
                    "PATIENT_UNKNOWN",
                    f"NISS unknown to the insurers or not affiliated on {on.isoformat()}",
                    code=McnCode.PATIENT_UNKNOWN,
                    field_path="patient.niss",
                )
            trace.get_current_span().set_attribute("mycarenet.oa", code)
            return code, patient.niss
        member = patient.member
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

    async def patient_bound(
        self,
        caller: Caller,
        patient: requests.PatientRef,
        on: dt.date,
        entry: AuditEntry,
        remaining: float | None,
    ) -> tuple[OaClient, str]:
        """The steps of a call about one patient: route, the therapeutic relation; the insurer to ask and
        the patient's NISS."""
        oa, niss = await self.routed(patient, on, entry)
        await self.relations.require(caller.requester_inami, niss, remaining)
        return oa, niss

    async def routed(
        self, patient: requests.PatientRef, on: dt.date, entry: AuditEntry
    ) -> tuple[OaClient, str]:
        """Route the patient (the call's throttle is taken): the insurer to ask and the patient's NISS."""
        code, niss = await self.resolve(patient, on)
        entry.insurer_codes = [code]
        return self.oa(code), niss

    # --- the DMG services ---------------------------------------------------------------------------

    async def consult(
        self, caller: Caller, asked: requests.Consult, entry: AuditEntry, remaining: float | None
    ) -> oa_pb.ConsultDmgResponse:
        oa, _niss = await self.patient_bound(caller, asked.patient, asked.on, entry, remaining)
        call = oa_pb.ConsultDmgRequest(
            context=self.request_context(caller, asked.reference), request=asked.request
        )
        return await oa.call(lambda t: oa.dmg.ConsultDmg(call, timeout=t, wait_for_ready=False), remaining)

    async def notify(
        self, caller: Caller, asked: requests.Notify, entry: AuditEntry, remaining: float | None
    ) -> oa_pb.NotifyDmgResponse:
        oa, _niss = await self.patient_bound(caller, asked.patient, asked.on, entry, remaining)
        call = oa_pb.NotifyDmgRequest(
            context=self.request_context(caller, asked.reference), request=asked.request
        )
        # The DMG relation moves at eHealth, which follows this insurer's holder-change feed: the insurer
        # wrote the change in the transaction of the holding, so nothing is left for the hub to do.
        return await oa.call(lambda t: oa.dmg.NotifyDmg(call, timeout=t, wait_for_ready=False), remaining)

    async def enrol(
        self, caller: Caller, asked: requests.Enrol, entry: AuditEntry, remaining: float | None
    ) -> list[pub.EnrolmentOutcome]:
        """Enrol at every insurer asked, in parallel; one outcome each (a failure is an outcome)."""
        entry.insurer_codes = asked.insurers
        ctx = self.request_context(caller, asked.reference)

        async def one(code: str) -> pub.EnrolmentOutcome:
            outcome = pub.EnrolmentOutcome(insurer_code=code)
            try:
                oa = self.oa(code)
                call = oa_pb.EnrolDmgRequest(context=ctx, request=asked.request)
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
                        oa = self.oa(code)
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

        return list(await asyncio.gather(*(one(c) for c in asked.insurers)))

    # --- the mailbox --------------------------------------------------------------------------------

    async def messages(
        self, caller: Caller, page: requests.MessagePage
    ) -> tuple[list[dmg_pb2.MailboxMessage], str]:
        async with self.sessions() as session:
            rows = await MailboxRepository(session).pending(
                caller.requester_inami, page.kinds, after_id=page.after_id, limit=page.size + 1
            )
        shown, token = paginate(rows, page.size, lambda row: (row[0],))
        return [message for _, message in shown], token

    async def watch(self, caller: Caller, kinds: list[int]) -> AsyncIterator[dmg_pb2.MailboxMessage]:
        """The recipient's pending messages, then each new one as it arrives, until the session ends: its
        natural end quietly, a revocation at eHealth (logout, a mandate or credential revoked, validity
        ended) with UNAUTHENTICATED REVOKED. Woken by a delivery or a revocation, never polling."""
        recipient = caller.requester_inami
        loop = asyncio.get_running_loop()
        end_at = loop.time() + max(0.0, (caller.expires - self.clock.now()).total_seconds())
        event = self.notifier.subscribe(recipient, caller.session_id)
        try:
            last = 0
            while True:
                if self.verifier.is_revoked(caller.session_id):
                    raise unauthenticated("REVOKED", "the session was ended")
                event.clear()
                async with self.sessions() as session:
                    batch = await MailboxRepository(session).pending(
                        recipient, kinds, after_id=last, limit=WATCH_BATCH
                    )
                for row_id, message in batch:
                    last = row_id
                    yield message
                if len(batch) == WATCH_BATCH:
                    continue
                left = end_at - loop.time()
                if left <= 0:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), left)
        finally:
            self.notifier.unsubscribe(recipient, event, caller.session_id)

    async def confirm(self, caller: Caller, asked: requests.Confirm) -> mbx.ConfirmMessagesResponse:
        async with transaction(self.sessions) as session:
            result = await MailboxRepository(session).confirm(
                caller.requester_inami, asked.message_ids, asked.hashes, self.clock.now()
            )
        return mbx.ConfirmMessagesResponse(
            confirmed_count=result.confirmed,
            already_confirmed_count=result.already,
            unknown=result.unknown,
            acknowledgement=common_pb2.Acknowledgement(complete=not result.unknown),
        )

    async def deliver(
        self, code: str, messages: list[dmg_pb2.MailboxMessage]
    ) -> intake.DeliverMessagesResponse:
        # The storage links back to the request that caused each message (its W3C trace context).
        with self.tracer.start_as_current_span(
            "mailbox.store",
            kind=trace.SpanKind.CONSUMER,
            links=message_links(messages),
            attributes={"mycarenet.oa": code, "messaging.batch.message_count": len(messages)},
        ):
            now = self.clock.now()
            # An insurer's usage notices are findings: their strikes are recorded with them (hub/abuse.py).
            async with (
                self.abuse.findings_of(code, messages, now) as findings,
                transaction(self.sessions) as session,
            ):
                await findings.record(session)
                result = await MailboxRepository(session).store(messages, now)
        self.notifier.notify(result.recipients)
        return intake.DeliverMessagesResponse(stored_ids=result.stored, duplicate_ids=result.duplicates)


class DmgServicer(Servicer):
    SERVICE = pub.DESCRIPTOR.services_by_name["DmgService"]

    @rpc(lambda self, call: requests.consult(call.request, call.caller))
    async def ConsultDmg(
        self, call: Call[pub.ConsultDmgRequest], asked: requests.Consult
    ) -> pub.ConsultDmgResponse:
        answer = await self.core.consult(call.caller, asked, call.entry, call.remaining())
        return pub.ConsultDmgResponse(
            requester_reference=call.request.requester_reference,
            patient=answer.patient,
            insurer_code=answer.insurer_code or call.entry.insurer_codes[0],
            holding=answer.holding if answer.HasField("holding") else None,
            payment_made_this_year=answer.payment_made_this_year,
            acknowledgement=common_pb2.Acknowledgement(complete=True),
            requester_payment=answer.requester_payment if answer.HasField("requester_payment") else None,
        )

    @rpc(lambda self, call: requests.notify(call.request, call.caller))
    async def NotifyDmg(
        self, call: Call[pub.NotifyDmgRequest], asked: requests.Notify
    ) -> pub.NotifyDmgResponse:
        answer = await self.core.notify(call.caller, asked, call.entry, call.remaining())
        return pub.NotifyDmgResponse(
            requester_reference=call.request.requester_reference,
            patient=answer.patient,
            insurer_code=answer.insurer_code or call.entry.insurer_codes[0],
            holder=answer.holder,
            start_date=answer.start_date,
            end_date=answer.end_date,
            payment=answer.payment,
            acknowledgement=common_pb2.Acknowledgement(complete=True),
            replayed=answer.replayed,
        )

    @rpc(lambda self, call: requests.enrol(call.request, self.core.oas, self.core.clock))
    async def EnrolDmg(self, call: Call[pub.EnrolDmgRequest], asked: requests.Enrol) -> pub.EnrolDmgResponse:
        outcomes = await self.core.enrol(call.caller, asked, call.entry, call.remaining())
        return pub.EnrolDmgResponse(requester_reference=call.request.requester_reference, outcomes=outcomes)


class MailboxServicer(Servicer):
    SERVICE = mbx.DESCRIPTOR.services_by_name["MailboxService"]

    @rpc(lambda self, call: requests.post_list(call.request, self.core.oas, self.core.clock))
    async def PostPatientList(
        self, call: Call[mbx.PostPatientListRequest], asked: requests.ListPost
    ) -> mbx.PostPatientListResponse:
        core = self.core
        tack = await core.lists.post(
            core.request_context(call.caller, asked.reference), asked.year, asked.insurers
        )
        return mbx.PostPatientListResponse(
            requester_reference=call.request.requester_reference, technical_ack=tack
        )

    @rpc(lambda self, call: requests.message_page(call.request))
    async def GetMessages(
        self, call: Call[mbx.GetMessagesRequest], page: requests.MessagePage
    ) -> mbx.GetMessagesResponse:
        messages, token = await self.core.messages(call.caller, page)
        return mbx.GetMessagesResponse(messages=messages, next_page_token=token)

    @rpc(lambda self, call: requests.watch_kinds(call.request))
    async def WatchMessages(
        self, call: Call[mbx.WatchMessagesRequest], kinds: list[int]
    ) -> AsyncIterator[mbx.WatchMessagesResponse]:
        async for message in self.core.watch(call.caller, kinds):
            yield mbx.WatchMessagesResponse(message=message)

    @rpc(lambda self, call: requests.confirm(call.request))
    async def ConfirmMessages(
        self, call: Call[mbx.ConfirmMessagesRequest], asked: requests.Confirm
    ) -> mbx.ConfirmMessagesResponse:
        return await self.core.confirm(call.caller, asked)


class MailboxIntakeServicer(Servicer):
    SERVICE = intake.DESCRIPTOR.services_by_name["MailboxIntakeService"]

    # The request is parsed by the step, once the insurer is known to deliver its own messages.
    @rpc(lambda self, call: call.request)
    async def DeliverMessages(
        self, call: Call[intake.DeliverMessagesRequest], request: intake.DeliverMessagesRequest
    ) -> intake.DeliverMessagesResponse:
        code = request.insurer_code
        call.entry.insurer_codes = [code]
        # The trust table lets only insurer nodes in; each delivers only the messages of the insurer its
        # certificate names (without TLS: the oa-XXX it declares), never another's.
        peer = current_peer()
        if code in INSURER_CODES and peer.insurer_code != code:
            raise permission_denied(
                "NOT_THIS_INSURER", f"{peer.name} delivers only its own messages, not those of oa-{code}"
            )
        return await self.core.deliver(code, requests.delivery(request))
