"""The gRPC servicers of an insurer node: proto → typed request (:mod:`oa_node.controls`) → domain call →
proto, each call inside its audit record (:meth:`oa_node.audit.AuditTrail.call`). Who may call which RPC is
the trust table's business (``mycarenet_core/trust.toml``), enforced before a servicer runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from sqlalchemy.exc import IntegrityError

from mycarenet_core.gen.mycarenet.oa.v1 import holding_feed_service_pb2 as hf_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import holding_feed_service_pb2_grpc as hf_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import intake_service_pb2 as intake_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import intake_service_pb2_grpc as intake_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import membership_service_pb2 as ms_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import membership_service_pb2_grpc as ms_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import oa_dmg_service_pb2 as oa_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import oa_dmg_service_pb2_grpc as oa_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import oa_insurability_service_pb2 as ins_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import oa_insurability_service_pb2_grpc as ins_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import reference_data_service_pb2 as rd_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import reference_data_service_pb2_grpc as rd_grpc
from oa_node import controls as c
from oa_node.audit import AuditTrail, context_fields, peer_of
from oa_node.dmg import DmgOperations
from oa_node.holdings import HoldingFeed
from oa_node.insurability import (
    InsurabilityOperations,
    parse_lines,
    parse_member_data,
    parse_rights,
    record_rejections,
)
from oa_node.membership import MembershipOperations
from oa_node.reference import ReferenceOperations, parse_organisations, parse_providers

Context = grpc.aio.ServicerContext[Any, Any]


class OaDmgServicer(oa_grpc.OaDmgServiceServicer):
    def __init__(self, operations: DmgOperations, audit: AuditTrail) -> None:
        self._ops = operations
        self._audit = audit

    async def ConsultDmg(
        self, request: oa_pb2.ConsultDmgRequest, context: Context
    ) -> oa_pb2.ConsultDmgResponse:
        async with self._audit.call("ConsultDmg", context_fields(request.context, peer_of(context))) as entry:
            return await self._ops.consult(c.parse_consult(request, self._ops.insurer_code), entry)

    async def NotifyDmg(self, request: oa_pb2.NotifyDmgRequest, context: Context) -> oa_pb2.NotifyDmgResponse:
        async with self._audit.call("NotifyDmg", context_fields(request.context, peer_of(context))) as entry:
            command = c.parse_notify(request, self._ops.insurer_code, self._ops.contact_codes)
            return await self._ops.notify(command, entry)

    async def ListHoldings(
        self, request: oa_pb2.ListHoldingsRequest, context: Context
    ) -> oa_pb2.ListHoldingsResponse:
        async with self._audit.call(
            "ListHoldings", context_fields(request.context, peer_of(context))
        ) as entry:
            return await self._ops.list_holdings(c.parse_list(request), entry)

    async def EnrolDmg(self, request: oa_pb2.EnrolDmgRequest, context: Context) -> oa_pb2.EnrolDmgResponse:
        async with self._audit.call("EnrolDmg", context_fields(request.context, peer_of(context))) as entry:
            return await self._ops.enrol(c.parse_enrol(request), entry)

    async def GetEnrolment(
        self, request: oa_pb2.GetEnrolmentRequest, context: Context
    ) -> oa_pb2.GetEnrolmentResponse:
        fields = {"requester_inami": request.inami[:32], "peer": peer_of(context)}
        async with self._audit.call("GetEnrolment", fields):
            return await self._ops.get_enrolment(c.parse_inami_field(request.inami, "inami"))


class InvoicingIntakeServicer(intake_grpc.InvoicingIntakeServiceServicer):
    def __init__(self, operations: DmgOperations, audit: AuditTrail) -> None:
        self._ops = operations
        self._audit = audit

    async def RegisterContact(
        self, request: intake_pb2.RegisterContactRequest, context: Context
    ) -> intake_pb2.RegisterContactResponse:
        fields = {"requester_reference": request.intake_reference[:200], "peer": peer_of(context)}
        async with self._audit.call("RegisterContact", fields) as entry:
            event = c.parse_contact(request, self._ops.contact_codes)
            return await self._ops.register_contact(event, entry)

    async def RegisterPaperAttestation(
        self, request: intake_pb2.RegisterPaperAttestationRequest, context: Context
    ) -> intake_pb2.RegisterPaperAttestationResponse:
        fields = {"requester_reference": request.intake_reference[:200], "peer": peer_of(context)}
        async with self._audit.call("RegisterPaperAttestation", fields) as entry:
            return await self._ops.register_paper_attestation(c.parse_attestation(request), entry)

    async def ProcessYearEnd(
        self, request: intake_pb2.ProcessYearEndRequest, context: Context
    ) -> intake_pb2.ProcessYearEndResponse:
        async with self._audit.call("ProcessYearEnd", {"peer": peer_of(context)}) as entry:
            return await self._ops.process_year_end(c.parse_year_end(request), entry)


class MembershipServicer(ms_grpc.MembershipServiceServicer):
    def __init__(self, operations: MembershipOperations, audit: AuditTrail) -> None:
        self._ops = operations
        self._audit = audit

    async def UpsertMembers(
        self, request: ms_pb2.UpsertMembersRequest, context: Context
    ) -> ms_pb2.UpsertMembersResponse:
        async with self._audit.call("UpsertMembers", {"peer": peer_of(context)}) as entry:
            return await self._ops.upsert_members(self._ops.parse_upsert(request), entry)

    async def GetMember(self, request: ms_pb2.GetMemberRequest, context: Context) -> ms_pb2.GetMemberResponse:
        return await self._ops.get_member(request)

    async def ListAffiliationChanges(
        self, request: ms_pb2.ListAffiliationChangesRequest, context: Context
    ) -> ms_pb2.ListAffiliationChangesResponse:
        return await self._ops.list_changes(request)

    async def WatchAffiliationChanges(
        self, request: ms_pb2.WatchAffiliationChangesRequest, context: Context
    ) -> AsyncIterator[ms_pb2.WatchAffiliationChangesResponse]:
        async for item in self._ops.watch(request):
            yield item


class ReferenceDataServicer(rd_grpc.ReferenceDataServiceServicer):
    def __init__(self, operations: ReferenceOperations, audit: AuditTrail) -> None:
        self._ops = operations
        self._audit = audit

    async def UpsertProviders(
        self, request: rd_pb2.UpsertProvidersRequest, context: Context
    ) -> rd_pb2.UpsertProvidersResponse:
        async with self._audit.call("UpsertProviders", {"peer": peer_of(context)}) as entry:
            return await self._ops.upsert_providers(parse_providers(request), entry)

    async def UpsertOrganisations(
        self, request: rd_pb2.UpsertOrganisationsRequest, context: Context
    ) -> rd_pb2.UpsertOrganisationsResponse:
        async with self._audit.call("UpsertOrganisations", {"peer": peer_of(context)}) as entry:
            return await self._ops.upsert_organisations(parse_organisations(request), entry)

    async def ListTariffs(
        self, request: rd_pb2.ListTariffsRequest, context: Context
    ) -> rd_pb2.ListTariffsResponse:
        return await self._ops.list_tariffs(request)

    async def GetCadastrePosition(
        self, request: rd_pb2.GetCadastrePositionRequest, context: Context
    ) -> rd_pb2.GetCadastrePositionResponse:
        return await self._ops.cadastre_position(request)


class HoldingFeedServicer(hf_grpc.HoldingFeedServiceServicer):
    def __init__(self, feed: HoldingFeed) -> None:
        self._feed = feed

    async def ListHolderChanges(
        self, request: hf_pb2.ListHolderChangesRequest, context: Context
    ) -> hf_pb2.ListHolderChangesResponse:
        return await self._feed.list(request)

    async def WatchHolderChanges(
        self, request: hf_pb2.WatchHolderChangesRequest, context: Context
    ) -> AsyncIterator[hf_pb2.WatchHolderChangesResponse]:
        async for item in self._feed.watch(request):
            yield item


class OaInsurabilityServicer(ins_grpc.OaInsurabilityServiceServicer):
    def __init__(self, operations: InsurabilityOperations, audit: AuditTrail) -> None:
        self._ops = operations
        self._audit = audit

    async def GetMemberData(
        self, request: ins_pb2.GetMemberDataRequest, context: Context
    ) -> ins_pb2.GetMemberDataResponse:
        async with self._audit.call(
            "GetMemberData", context_fields(request.context, peer_of(context))
        ) as entry:
            return await self._ops.member_data(parse_member_data(request, self._ops.insurer_code), entry)

    async def ConsultRights(
        self, request: ins_pb2.ConsultRightsRequest, context: Context
    ) -> ins_pb2.ConsultRightsResponse:
        async with self._audit.call(
            "ConsultRights", context_fields(request.context, peer_of(context))
        ) as entry:
            return await self._ops.consult_rights(parse_rights(request, self._ops.insurer_code), entry)

    async def VerifyAgreement(
        self, request: ins_pb2.VerifyAgreementRequest, context: Context
    ) -> ins_pb2.VerifyAgreementResponse:
        async with self._audit.call("VerifyAgreement", {"peer": peer_of(context)}):
            return await self._ops.verify(request)

    async def ValidateTarification(
        self, request: ins_pb2.ValidateTarificationRequest, context: Context
    ) -> ins_pb2.ValidateTarificationResponse:
        async with self._audit.call("ValidateTarification", {"peer": peer_of(context)}) as entry:
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
