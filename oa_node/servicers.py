"""The gRPC servicers of an insurer node: proto → typed request (:mod:`oa_node.controls`) → domain call →
proto. Who may call which RPC, and which calls leave an audit row, is the trust table's business
(``mycarenet_core/trust.toml``): the trust interceptor admits the caller before a servicer runs, and each
RPC's step runs in the audit row its declaration asks for (:class:`Servicer`, built once at start).

A step is ``step(self, request, context, entry)``, marked with :func:`audited` and named after its RPC; the
audit row is named after the RPC too, and opened with the columns ``fields`` takes from the request (who
called, for the back office's calls the intake reference); the domain fills the rest (the patient, the
incidents) and, for a change, writes the row in the change's own transaction
(:meth:`~oa_node.audit.AuditTrail.transaction`): as durable as the change. A node throttles nothing and
audits no watch stream (its streams are served as written): a table that asks either is refused, and so
is a servicer with an RPC the table does not declare, or a unary RPC without its step (the node does not
start)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar, Generic, TypeVar

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from sqlalchemy.exc import IntegrityError

from mycarenet_core.gen.mycarenet.oa.v1 import holding_feed_service_pb2 as hf_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import intake_service_pb2 as intake_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import membership_service_pb2 as ms_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import oa_dmg_service_pb2 as oa_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import oa_insurability_service_pb2 as ins_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import oa_invoicing_service_pb2 as oainv_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import reference_data_service_pb2 as rd_pb2
from mycarenet_core.trust import TABLE, Auditing, Throttling, TrustTable
from oa_node import controls as c
from oa_node.audit import AuditEntry, AuditTrail, context_fields, peer_of
from oa_node.dmg import DmgOperations
from oa_node.holdings import HoldingFeed
from oa_node.insurability import (
    InsurabilityOperations,
    parse_lines,
    parse_member_data,
    parse_rights,
    record_rejections,
)
from oa_node.invoicing import InvoicingOperations, parse_attest
from oa_node.invoicing import parse_lines as parse_invoice_lines
from oa_node.membership import MembershipOperations
from oa_node.reference import ReferenceOperations, parse_organisations, parse_providers

Context = grpc.aio.ServicerContext[Any, Any]
F = TypeVar("F", bound=Callable[..., Any])
Ops = TypeVar("Ops")

Fields = Callable[[Any, Context], dict[str, Any]]
"""(request, context) → the columns of the call's audit row known before it runs."""
Step = Callable[[Any, Any, Context, AuditEntry], Awaitable[Any]]


def from_peer(request: Any, context: Context) -> dict[str, Any]:
    """Who called: the certificate kind the trust model admitted, and the address."""
    return {"peer": peer_of(context)}


def from_hub(request: Any, context: Context) -> dict[str, Any]:
    """The requester, executor and session the hub vouches for in the request context, and the peer."""
    return context_fields(request.context, peer_of(context))


def from_intake(request: Any, context: Context) -> dict[str, Any]:
    """The back office's intake reference, and the peer."""
    return {"requester_reference": request.intake_reference[:200], "peer": peer_of(context)}


_FIELDS = "__oa_audit_fields__"


def audited(fields: Fields = from_peer) -> Callable[[F], F]:
    """Mark a servicer method as the step of the unary RPC of its name, its audit row opened with
    ``fields``."""

    def mark(step: F) -> F:
        setattr(step, _FIELDS, fields)
        return step

    return mark


class Servicer(Generic[Ops]):
    """Base of the node's servicers, over the domain's ``operations``: ``SERVICE`` is the service's
    descriptor; each unary RPC's step is replaced on the instance by its handler, built once from ``table``
    (module docstring)."""

    SERVICE: ClassVar[ServiceDescriptor]

    def __init__(self, operations: Ops, audit: AuditTrail, table: TrustTable = TABLE) -> None:
        self._ops = operations
        self._audit = audit
        for method, policy in table.declared(self.SERVICE):
            if policy.throttle is not Throttling.NONE:
                raise ValueError(f"{policy.method}: an insurer node throttles nothing (the hub does)")
            step = getattr(type(self), method.name, None)
            if method.server_streaming:
                if policy.audit is not Auditing.NONE:
                    raise ValueError(f"{policy.method}: an insurer node audits no stream")
                continue
            fields = getattr(step, _FIELDS, None)
            if step is None or fields is None:
                raise TypeError(f"{type(self).__name__}.{method.name} is not marked with @audited")
            handler = self._handler(method.name, step, fields, policy.audit or Auditing.CALL)
            setattr(self, method.name, handler)

    def _handler(
        self, name: str, step: Step, fields: Fields, audit: Auditing
    ) -> Callable[[Any, Context], Awaitable[Any]]:
        """The call of ``step`` in its audit row; everything read from the table is bound here, once."""
        call = self._audit.call

        async def run(request: Any, context: Context) -> Any:
            async with call(name, fields(request, context), audit) as entry:
                return await step(self, request, context, entry)

        return run


class OaDmgServicer(Servicer[DmgOperations]):
    SERVICE = oa_pb2.DESCRIPTOR.services_by_name["OaDmgService"]

    @audited(from_hub)
    async def ConsultDmg(
        self, request: oa_pb2.ConsultDmgRequest, context: Context, entry: AuditEntry
    ) -> oa_pb2.ConsultDmgResponse:
        return await self._ops.consult(c.parse_consult(request, self._ops.insurer_code), entry)

    @audited(from_hub)
    async def NotifyDmg(
        self, request: oa_pb2.NotifyDmgRequest, context: Context, entry: AuditEntry
    ) -> oa_pb2.NotifyDmgResponse:
        command = c.parse_notify(request, self._ops.insurer_code, self._ops.contact_codes)
        return await self._ops.notify(command, entry)

    @audited(from_hub)
    async def ListHoldings(
        self, request: oa_pb2.ListHoldingsRequest, context: Context, entry: AuditEntry
    ) -> oa_pb2.ListHoldingsResponse:
        return await self._ops.list_holdings(c.parse_list(request), entry)

    @audited(from_hub)
    async def EnrolDmg(
        self, request: oa_pb2.EnrolDmgRequest, context: Context, entry: AuditEntry
    ) -> oa_pb2.EnrolDmgResponse:
        return await self._ops.enrol(c.parse_enrol(request), entry)

    @audited(lambda request, context: {"requester_inami": request.inami[:32], "peer": peer_of(context)})
    async def GetEnrolment(
        self, request: oa_pb2.GetEnrolmentRequest, context: Context, entry: AuditEntry
    ) -> oa_pb2.GetEnrolmentResponse:
        return await self._ops.get_enrolment(c.parse_inami_field(request.inami, "inami"))


class InvoicingIntakeServicer(Servicer[DmgOperations]):
    SERVICE = intake_pb2.DESCRIPTOR.services_by_name["InvoicingIntakeService"]

    @audited(from_intake)
    async def RegisterContact(
        self, request: intake_pb2.RegisterContactRequest, context: Context, entry: AuditEntry
    ) -> intake_pb2.RegisterContactResponse:
        event = c.parse_contact(request, self._ops.contact_codes)
        return await self._ops.register_contact(event, entry)

    @audited(from_intake)
    async def RegisterPaperAttestation(
        self, request: intake_pb2.RegisterPaperAttestationRequest, context: Context, entry: AuditEntry
    ) -> intake_pb2.RegisterPaperAttestationResponse:
        return await self._ops.register_paper_attestation(c.parse_attestation(request), entry)

    @audited()
    async def ProcessYearEnd(
        self, request: intake_pb2.ProcessYearEndRequest, context: Context, entry: AuditEntry
    ) -> intake_pb2.ProcessYearEndResponse:
        return await self._ops.process_year_end(c.parse_year_end(request), entry)


class OaInvoicingServicer(Servicer[InvoicingOperations]):
    SERVICE = oainv_pb2.DESCRIPTOR.services_by_name["OaInvoicingService"]

    @audited(from_hub)
    async def AcceptInvoiceLines(
        self, request: oainv_pb2.AcceptInvoiceLinesRequest, context: Context, entry: AuditEntry
    ) -> oainv_pb2.AcceptInvoiceLinesResponse:
        return await self._ops.accept(parse_invoice_lines(request), entry)

    @audited(from_hub)
    async def RegisterAttest(
        self, request: oainv_pb2.RegisterAttestRequest, context: Context, entry: AuditEntry
    ) -> oainv_pb2.RegisterAttestResponse:
        return await self._ops.attest(parse_attest(request), entry)


class MembershipServicer(Servicer[MembershipOperations]):
    SERVICE = ms_pb2.DESCRIPTOR.services_by_name["MembershipService"]

    @audited()
    async def UpsertMembers(
        self, request: ms_pb2.UpsertMembersRequest, context: Context, entry: AuditEntry
    ) -> ms_pb2.UpsertMembersResponse:
        return await self._ops.upsert_members(self._ops.parse_upsert(request), entry)

    @audited()
    async def GetMember(
        self, request: ms_pb2.GetMemberRequest, context: Context, entry: AuditEntry
    ) -> ms_pb2.GetMemberResponse:
        return await self._ops.get_member(request)

    @audited()
    async def ListAffiliationChanges(
        self, request: ms_pb2.ListAffiliationChangesRequest, context: Context, entry: AuditEntry
    ) -> ms_pb2.ListAffiliationChangesResponse:
        return await self._ops.list_changes(request)

    async def WatchAffiliationChanges(
        self, request: ms_pb2.WatchAffiliationChangesRequest, context: Context
    ) -> AsyncIterator[ms_pb2.WatchAffiliationChangesResponse]:
        async for item in self._ops.watch(request):
            yield item


class ReferenceDataServicer(Servicer[ReferenceOperations]):
    SERVICE = rd_pb2.DESCRIPTOR.services_by_name["ReferenceDataService"]

    @audited()
    async def UpsertProviders(
        self, request: rd_pb2.UpsertProvidersRequest, context: Context, entry: AuditEntry
    ) -> rd_pb2.UpsertProvidersResponse:
        return await self._ops.upsert_providers(parse_providers(request), entry)

    @audited()
    async def UpsertOrganisations(
        self, request: rd_pb2.UpsertOrganisationsRequest, context: Context, entry: AuditEntry
    ) -> rd_pb2.UpsertOrganisationsResponse:
        return await self._ops.upsert_organisations(parse_organisations(request), entry)

    @audited()
    async def ListTariffs(
        self, request: rd_pb2.ListTariffsRequest, context: Context, entry: AuditEntry
    ) -> rd_pb2.ListTariffsResponse:
        return await self._ops.list_tariffs(request)

    @audited()
    async def GetCadastrePosition(
        self, request: rd_pb2.GetCadastrePositionRequest, context: Context, entry: AuditEntry
    ) -> rd_pb2.GetCadastrePositionResponse:
        return await self._ops.cadastre_position(request)


class HoldingFeedServicer(Servicer[HoldingFeed]):
    SERVICE = hf_pb2.DESCRIPTOR.services_by_name["HoldingFeedService"]

    @audited()
    async def ListHolderChanges(
        self, request: hf_pb2.ListHolderChangesRequest, context: Context, entry: AuditEntry
    ) -> hf_pb2.ListHolderChangesResponse:
        return await self._ops.list(request)

    async def WatchHolderChanges(
        self, request: hf_pb2.WatchHolderChangesRequest, context: Context
    ) -> AsyncIterator[hf_pb2.WatchHolderChangesResponse]:
        async for item in self._ops.watch(request):
            yield item


class OaInsurabilityServicer(Servicer[InsurabilityOperations]):
    SERVICE = ins_pb2.DESCRIPTOR.services_by_name["OaInsurabilityService"]

    @audited(from_hub)
    async def GetMemberData(
        self, request: ins_pb2.GetMemberDataRequest, context: Context, entry: AuditEntry
    ) -> ins_pb2.GetMemberDataResponse:
        return await self._ops.member_data(parse_member_data(request, self._ops.insurer_code), entry)

    @audited(from_hub)
    async def ConsultRights(
        self, request: ins_pb2.ConsultRightsRequest, context: Context, entry: AuditEntry
    ) -> ins_pb2.ConsultRightsResponse:
        return await self._ops.consult_rights(parse_rights(request, self._ops.insurer_code), entry)

    @audited()
    async def VerifyAgreement(
        self, request: ins_pb2.VerifyAgreementRequest, context: Context, entry: AuditEntry
    ) -> ins_pb2.VerifyAgreementResponse:
        return await self._ops.verify(request)

    @audited()
    async def ValidateTarification(
        self, request: ins_pb2.ValidateTarificationRequest, context: Context, entry: AuditEntry
    ) -> ins_pb2.ValidateTarificationResponse:
        answer, rejected = await self._ops.validate(parse_lines(request), entry)
        if rejected:
            # Recorded with the audit row: the provider's tarification office may consult for them. A
            # retry running at the same time may insert the same line first: then this one has nothing
            # left to insert.
            for attempt in (1, 2):
                try:
                    async with self._audit.transaction(entry) as session:
                        await record_rejections(session, rejected, self._audit.clock.now())
                    break
                except IntegrityError:
                    if attempt == 2:
                        raise
        return answer


__all__ = [
    "HoldingFeedServicer",
    "InvoicingIntakeServicer",
    "MembershipServicer",
    "OaDmgServicer",
    "OaInsurabilityServicer",
    "OaInvoicingServicer",
    "ReferenceDataServicer",
    "Servicer",
    "audited",
]
