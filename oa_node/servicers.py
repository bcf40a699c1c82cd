"""The gRPC servicers of an insurer node: thin adapters from the protos to the operations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from mycarenet_core.gen.mycarenet.oa.v1 import intake_service_pb2 as intake_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import intake_service_pb2_grpc as intake_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import membership_service_pb2 as ms_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import membership_service_pb2_grpc as ms_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import oa_dmg_service_pb2 as oa_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import oa_dmg_service_pb2_grpc as oa_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import reference_data_service_pb2 as rd_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import reference_data_service_pb2_grpc as rd_grpc
from mycarenet_core.trust import current_peer
from oa_node.dmg import DmgOperations
from oa_node.membership import MembershipOperations
from oa_node.reference import ReferenceOperations

Context = grpc.aio.ServicerContext[Any, Any]


def _peer(context: Context) -> str:
    """Who called, for the audit: the certificate kind the trust model admitted, and the address."""
    return f"{current_peer().name}@{context.peer()}"


class OaDmgServicer(oa_grpc.OaDmgServiceServicer):
    def __init__(self, operations: DmgOperations) -> None:
        self._ops = operations

    async def ConsultDmg(
        self, request: oa_pb2.ConsultDmgRequest, context: Context
    ) -> oa_pb2.ConsultDmgResponse:
        return await self._ops.consult(request, _peer(context))

    async def NotifyDmg(self, request: oa_pb2.NotifyDmgRequest, context: Context) -> oa_pb2.NotifyDmgResponse:
        return await self._ops.notify(request, _peer(context))

    async def ListHoldings(
        self, request: oa_pb2.ListHoldingsRequest, context: Context
    ) -> oa_pb2.ListHoldingsResponse:
        return await self._ops.list_holdings(request, _peer(context))

    async def EnrolDmg(self, request: oa_pb2.EnrolDmgRequest, context: Context) -> oa_pb2.EnrolDmgResponse:
        return await self._ops.enrol(request, _peer(context))

    async def GetEnrolment(
        self, request: oa_pb2.GetEnrolmentRequest, context: Context
    ) -> oa_pb2.GetEnrolmentResponse:
        return await self._ops.get_enrolment(request, _peer(context))


class InvoicingIntakeServicer(intake_grpc.InvoicingIntakeServiceServicer):
    def __init__(self, operations: DmgOperations) -> None:
        self._ops = operations

    async def RegisterContact(
        self, request: intake_pb2.RegisterContactRequest, context: Context
    ) -> intake_pb2.RegisterContactResponse:
        return await self._ops.register_contact(request, _peer(context))

    async def RegisterPaperAttestation(
        self, request: intake_pb2.RegisterPaperAttestationRequest, context: Context
    ) -> intake_pb2.RegisterPaperAttestationResponse:
        return await self._ops.register_paper_attestation(request, _peer(context))

    async def ProcessYearEnd(
        self, request: intake_pb2.ProcessYearEndRequest, context: Context
    ) -> intake_pb2.ProcessYearEndResponse:
        return await self._ops.process_year_end(request, _peer(context))


class MembershipServicer(ms_grpc.MembershipServiceServicer):
    def __init__(self, operations: MembershipOperations) -> None:
        self._ops = operations

    async def UpsertMembers(
        self, request: ms_pb2.UpsertMembersRequest, context: Context
    ) -> ms_pb2.UpsertMembersResponse:
        return await self._ops.upsert_members(request, _peer(context))

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
    def __init__(self, operations: ReferenceOperations) -> None:
        self._ops = operations

    async def UpsertProviders(
        self, request: rd_pb2.UpsertProvidersRequest, context: Context
    ) -> rd_pb2.UpsertProvidersResponse:
        return await self._ops.upsert_providers(request, _peer(context))

    async def UpsertOrganisations(
        self, request: rd_pb2.UpsertOrganisationsRequest, context: Context
    ) -> rd_pb2.UpsertOrganisationsResponse:
        return await self._ops.upsert_organisations(request, _peer(context))

    async def ListTariffs(
        self, request: rd_pb2.ListTariffsRequest, context: Context
    ) -> rd_pb2.ListTariffsResponse:
        return await self._ops.list_tariffs(request)

    async def GetCadastrePosition(
        self, request: rd_pb2.GetCadastrePositionRequest, context: Context
    ) -> rd_pb2.GetCadastrePositionResponse:
        return await self._ops.cadastre_position(request)
