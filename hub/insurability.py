"""The hub's insurability services (``mycarenet.insurability.v1.InsurabilityService``): MemberData and the
pharmacist's rights consultation with payment commitment (seed 003 §5, §6).

Same path as a consult: the trust table admits the caller (a provider's session, or one under a mandate
for INSURABILITY), the request is parsed, an excluded provider is refused (the abuse control,
:mod:`hub.abuse`), the provider is throttled, the patient routed to their insurer at
the date asked (by NISS, or by mutuality for a member number, seed 003 §4.3), and the insurer answers from
its own database. No therapeutic relation is asked for: pharmacists and dentists have none; the rules of
use (a patient actually treated, once per contact, never systematically; seed 001 annex 2, seed 003 §7)
are enforced by the throttle and checked afterwards on the audit, as the seeds describe.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from hub import requests
from hub.policy import Call, Servicer, rpc
from hub.upstream import OaClient
from mycarenet_core.gen.mycarenet.insurability.v1 import insurability_service_pb2 as pub
from mycarenet_core.gen.mycarenet.oa.v1 import context_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import oa_insurability_service_pb2 as oa_pb
from mycarenet_core.sessions import Caller, service_name
from mycarenet_core.trust import current_grant
from mycarenet_core.validation import Checker


@dataclass(frozen=True)
class Asked:
    reference: str
    patient: requests.PatientRef
    on: dt.date


def member_data(request: pub.GetMemberDataRequest, today: dt.date) -> Asked:
    with Checker() as check:
        ref = requests.reference(check, request.requester_reference, required=False)
        on = check.date("date", request.date) if request.HasField("date") else today
        who = requests.patient(check, request.patient)
    assert on is not None
    return Asked(ref, who, on)


def rights(request: pub.ConsultRightsRequest) -> Asked:
    with Checker() as check:
        ref = requests.reference(check, request.requester_reference, required=False)
        on = check.date("dispensing_date", request.dispensing_date)
        who = requests.patient(check, request.patient)
    assert on is not None
    return Asked(ref, who, on)


def rejected_invoices_only(caller: Caller) -> bool:
    """True for a tarification office: a session under a mandate that covers the grant's restricted service
    (TARIFICATION_OFFICE) and not its full one (INSURABILITY); the insurer then answers only for its rejected
    invoice lines of the principal (seed 003 §8.2.2.7)."""
    grant = current_grant()
    covered = {service_name(s) for s in caller.mandate_services}
    return bool(caller.principal) and bool(grant.restricted_service) and grant.service not in covered


def not_excluded(servicer: InsurabilityServicer, call: Call[Any], asked: Asked) -> None:
    """An excluded requester of record is refused (:meth:`hub.abuse.AbuseControl.admit`) before its request
    costs a token."""
    core = servicer.core
    core.abuse.admit(call.caller.requester_inami, core.clock.now())


class InsurabilityServicer(Servicer):
    SERVICE = pub.DESCRIPTOR.services_by_name["InsurabilityService"]

    async def _routed(self, call: Call[Any], asked: Asked) -> tuple[OaClient, context_pb2.RequestContext]:
        """The patient's insurer at the date asked (counted by the abuse control), and the context the
        insurer is asked in: who asks, and whether only for a rejected invoice line (a tarification
        office)."""
        core, caller = self.core, call.caller
        oa, niss = await core.routed(asked.patient, asked.on, call.entry)
        await core.abuse.consulted(caller.requester_inami, niss, core.clock.now())
        asked_as = core.request_context(caller, asked.reference)
        asked_as.rejected_invoices_only = rejected_invoices_only(caller)
        return oa, asked_as

    @rpc(lambda self, call: member_data(call.request, self.core.clock.today()), guard=not_excluded)
    async def GetMemberData(
        self, call: Call[pub.GetMemberDataRequest], asked: Asked
    ) -> pub.GetMemberDataResponse:
        remaining = call.remaining()
        oa, asked_as = await self._routed(call, asked)
        request = oa_pb.GetMemberDataRequest(context=asked_as, request=call.request)
        answer = await oa.call(
            lambda t: oa.insurability.GetMemberData(request, timeout=t, wait_for_ready=False), remaining
        )
        return pub.GetMemberDataResponse(
            requester_reference=call.request.requester_reference, member_data=answer.member_data
        )

    @rpc(lambda self, call: rights(call.request), guard=not_excluded)
    async def ConsultRights(
        self, call: Call[pub.ConsultRightsRequest], asked: Asked
    ) -> pub.ConsultRightsResponse:
        remaining = call.remaining()
        oa, asked_as = await self._routed(call, asked)
        request = oa_pb.ConsultRightsRequest(context=asked_as, request=call.request)
        answer = await oa.call(
            lambda t: oa.insurability.ConsultRights(request, timeout=t, wait_for_ready=False), remaining
        )
        response = pub.ConsultRightsResponse(
            requester_reference=call.request.requester_reference, member_data=answer.member_data
        )
        if answer.HasField("commitment"):
            response.commitment.CopyFrom(answer.commitment)
        return response
