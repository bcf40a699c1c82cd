"""The four eHealth servicers: thin (proto → domain call → proto). Errors are raised as MeshError and mapped
to statuses by the shared interceptor of :class:`mycarenet_core.server.MeshServer`.

Who may call what is settled before a handler runs (the trust interceptor, ``mycarenet_core/trust.toml``);
a handler passes the caller (:func:`ehealth.access.current_actor`) to the domain, which applies the scope
rules that need the data ("only its own relations")."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from ehealth import convert
from ehealth.access import current_actor
from ehealth.audit import note
from ehealth.auth import Authenticator
from ehealth.cadastre import Cadastre
from ehealth.inputs import Checker, paginate
from ehealth.mandates import Mandates
from ehealth.models import RevocationRow
from ehealth.relations import Relations
from mycarenet_core.clock import Clock
from mycarenet_core.errors import McnCode
from mycarenet_core.gen.mycarenet.ehealth.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    cadastre_pb2,
    cadastre_pb2_grpc,
    mandate_pb2,
    mandate_pb2_grpc,
)
from mycarenet_core.gen.mycarenet.ehealth.v1 import (
    therapeutic_relation_pb2 as tr_pb2,
)
from mycarenet_core.gen.mycarenet.ehealth.v1 import (
    therapeutic_relation_pb2_grpc as tr_pb2_grpc,
)

Context = grpc.aio.ServicerContext[Any, Any]
FINGERPRINT = re.compile(r"[0-9a-f]{64}")


def _revocation(row: RevocationRow) -> auth_pb2.Revocation:
    return auth_pb2.Revocation(
        sequence=row.sequence or 0,
        session_id=row.session_id,
        revoke_time=convert.timestamp(row.revoke_time),
        expire_time=convert.timestamp(row.expire_time),
    )


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, auth: Authenticator, on_rotate: Callable[[], Awaitable[object]] | None = None) -> None:
        self.auth = auth
        self.on_rotate = on_rotate

    async def CreateChallenge(
        self, request: auth_pb2.CreateChallengeRequest, context: Context
    ) -> auth_pb2.CreateChallengeResponse:
        check = Checker()
        kind, subject_id = convert.subject(check, request.subject)
        check.done()
        row = await self.auth.create_challenge(kind, subject_id)
        return auth_pb2.CreateChallengeResponse(
            challenge_id=row.challenge_id, nonce=row.nonce, expire_time=convert.timestamp(row.expire_time)
        )

    async def CreateSession(
        self, request: auth_pb2.CreateSessionRequest, context: Context
    ) -> auth_pb2.CreateSessionResponse:
        challenge_id, signature, audience, lifetime, principal = convert.session_request(request)
        issued = await self.auth.create_session(
            challenge_id, signature, audience=audience, lifetime_seconds=lifetime, principal_inami=principal
        )
        response = auth_pb2.CreateSessionResponse(
            token=issued.token,
            session_id=issued.session_id,
            expire_time=convert.timestamp(issued.expire_time),
        )
        if issued.mandate is not None:
            response.mandate.CopyFrom(convert.mandate_to_proto(issued.mandate))
        return response

    async def GetSigningKeys(
        self, request: auth_pb2.GetSigningKeysRequest, context: Context
    ) -> auth_pb2.GetSigningKeysResponse:
        keys = await self.auth.signing_keys()
        return auth_pb2.GetSigningKeysResponse(keys=[convert.signing_key_to_proto(k) for k in keys])

    async def Logout(self, request: auth_pb2.LogoutRequest, context: Context) -> auth_pb2.LogoutResponse:
        check = Checker()
        token = check.text("token", request.token, max_length=8192)
        check.done()
        session_id, revoked = await self.auth.logout(token)
        return auth_pb2.LogoutResponse(session_id=session_id, revoked=revoked)

    async def ListRevocations(
        self, request: auth_pb2.ListRevocationsRequest, context: Context
    ) -> auth_pb2.ListRevocationsResponse:
        check = Checker()
        size = check.page_size("page_size", request.page_size, default=500, maximum=5000)
        key = check.page_token("page_token", request.page_token, 1)
        check.done()
        after = max(request.after_sequence, int(key[0])) if key else request.after_sequence
        rows = await self.auth.revocations(after, size + 1)
        page, next_token = paginate(rows, size, lambda r: [r.sequence or 0])
        return auth_pb2.ListRevocationsResponse(
            revocations=[_revocation(r) for r in page], next_page_token=next_token
        )

    async def WatchRevocations(
        self, request: auth_pb2.WatchRevocationsRequest, context: Context
    ) -> AsyncIterator[auth_pb2.WatchRevocationsResponse]:
        async for row in self.auth.watch_revocations(request.after_sequence):
            yield auth_pb2.WatchRevocationsResponse(revocation=_revocation(row))

    async def RegisterCredential(
        self, request: auth_pb2.RegisterCredentialRequest, context: Context
    ) -> auth_pb2.RegisterCredentialResponse:
        check = Checker()
        kind, subject_id = convert.subject(check, request.subject)
        pem = convert.public_key(check, "public_key_pem", request.public_key_pem, required=True)
        check.done()
        note(subject=subject_id)
        fingerprint = await self.auth.register_credential(kind, subject_id, pem)
        return auth_pb2.RegisterCredentialResponse(fingerprint=fingerprint)

    async def RevokeCredential(
        self, request: auth_pb2.RevokeCredentialRequest, context: Context
    ) -> auth_pb2.RevokeCredentialResponse:
        check = Checker()
        kind, subject_id = convert.subject(check, request.subject)
        fingerprint = request.fingerprint.strip().lower()
        if fingerprint and not FINGERPRINT.fullmatch(fingerprint):
            check.add("fingerprint", McnCode.BAD_FORMAT, "a fingerprint is 64 hexadecimal characters")
        check.done()
        note(subject=subject_id)
        revoked, ended = await self.auth.revoke_credential(kind, subject_id, fingerprint, current_actor())
        return auth_pb2.RevokeCredentialResponse(revoked=revoked, ended_sessions=ended)

    async def RotateSigningKey(
        self, request: auth_pb2.RotateSigningKeyRequest, context: Context
    ) -> auth_pb2.RotateSigningKeyResponse:
        key = await self.auth.rotate_signing_key()
        if self.on_rotate is not None:
            await self.on_rotate()
        return auth_pb2.RotateSigningKeyResponse(key=convert.signing_key_to_proto(key))


class CadastreServicer(cadastre_pb2_grpc.CadastreServiceServicer):
    def __init__(self, cadastre: Cadastre) -> None:
        self.cadastre = cadastre

    async def UpsertProvider(
        self, request: cadastre_pb2.UpsertProviderRequest, context: Context
    ) -> cadastre_pb2.UpsertProviderResponse:
        row, pem = convert.provider_request(request.provider)
        record, created, sequence = await self.cadastre.upsert_provider(row, pem)
        return cadastre_pb2.UpsertProviderResponse(
            provider=convert.provider_to_proto(record), created=created, change_sequence=sequence
        )

    async def GetProvider(
        self, request: cadastre_pb2.GetProviderRequest, context: Context
    ) -> cadastre_pb2.GetProviderResponse:
        inami = convert.lookup_inami(request.inami)
        record, organisations = await self.cadastre.get_provider(inami, current_actor())
        return cadastre_pb2.GetProviderResponse(
            provider=convert.provider_to_proto(record), organisation_inamis=organisations
        )

    async def ListProviders(
        self, request: cadastre_pb2.ListProvidersRequest, context: Context
    ) -> cadastre_pb2.ListProvidersResponse:
        check = Checker()
        size = check.page_size("page_size", request.page_size)
        key = check.page_token("page_token", request.page_token, 1)
        check.done()
        role = convert.role_from_proto(request.role)
        records = await self.cadastre.list_providers(
            role.value if role else None, str(key[0]) if key else None, size + 1
        )
        page, next_token = paginate(records, size, lambda r: [r.row.inami])
        return cadastre_pb2.ListProvidersResponse(
            providers=[convert.provider_to_proto(r) for r in page], next_page_token=next_token
        )

    async def UpsertOrganisation(
        self, request: cadastre_pb2.UpsertOrganisationRequest, context: Context
    ) -> cadastre_pb2.UpsertOrganisationResponse:
        row, members = convert.organisation_request(request.organisation)
        record, created, sequence = await self.cadastre.upsert_organisation(row, members)
        return cadastre_pb2.UpsertOrganisationResponse(
            organisation=convert.organisation_to_proto(record), created=created, change_sequence=sequence
        )

    async def GetOrganisation(
        self, request: cadastre_pb2.GetOrganisationRequest, context: Context
    ) -> cadastre_pb2.GetOrganisationResponse:
        inami = convert.lookup_inami(request.inami)
        record = await self.cadastre.get_organisation(inami, current_actor())
        return cadastre_pb2.GetOrganisationResponse(organisation=convert.organisation_to_proto(record))

    async def ListOrganisations(
        self, request: cadastre_pb2.ListOrganisationsRequest, context: Context
    ) -> cadastre_pb2.ListOrganisationsResponse:
        check = Checker()
        size = check.page_size("page_size", request.page_size)
        key = check.page_token("page_token", request.page_token, 1)
        kind = None
        if request.kind:
            kind = check.enum("kind", request.kind, convert.ORGANISATION_KINDS)
        check.done()
        records = await self.cadastre.list_organisations(
            kind.value if kind else None, str(key[0]) if key else None, size + 1
        )
        page, next_token = paginate(records, size, lambda r: [r.row.inami])
        return cadastre_pb2.ListOrganisationsResponse(
            organisations=[convert.organisation_to_proto(r) for r in page], next_page_token=next_token
        )

    async def ListCadastreChanges(
        self, request: cadastre_pb2.ListCadastreChangesRequest, context: Context
    ) -> cadastre_pb2.ListCadastreChangesResponse:
        check = Checker()
        size = check.page_size("page_size", request.page_size, default=500, maximum=5000)
        if request.after_sequence < 0:
            check.add("after_sequence", McnCode.VALUE_NOT_ALLOWED, "a sequence number is never negative")
        check.done()
        changes, head = await self.cadastre.changes(request.after_sequence, size)
        return cadastre_pb2.ListCadastreChangesResponse(
            changes=[convert.change_to_proto(c) for c in changes], head_sequence=head
        )

    async def WatchCadastreChanges(
        self, request: cadastre_pb2.WatchCadastreChangesRequest, context: Context
    ) -> AsyncIterator[cadastre_pb2.WatchCadastreChangesResponse]:
        check = Checker()
        if request.after_sequence < 0:
            check.add("after_sequence", McnCode.VALUE_NOT_ALLOWED, "a sequence number is never negative")
        check.done()
        async for change in self.cadastre.watch_changes(request.after_sequence):
            yield cadastre_pb2.WatchCadastreChangesResponse(change=convert.change_to_proto(change))


class TherapeuticRelationServicer(tr_pb2_grpc.TherapeuticRelationServiceServicer):
    def __init__(self, relations: Relations, clock: Clock) -> None:
        self.relations = relations
        self.clock = clock

    async def RegisterRelation(
        self, request: tr_pb2.RegisterRelationRequest, context: Context
    ) -> tr_pb2.RegisterRelationResponse:
        provider, patient, proof, period = convert.register_request(request, self.clock.today())
        row = await self.relations.register(provider, patient, proof, period, current_actor())
        return tr_pb2.RegisterRelationResponse(relation=convert.relation_to_proto(row))

    async def RevokeRelation(
        self, request: tr_pb2.RevokeRelationRequest, context: Context
    ) -> tr_pb2.RevokeRelationResponse:
        check = Checker()
        relation_id = check.text("relation_id", request.relation_id, max_length=64)
        end = check.optional_date("end_date", request.end_date)
        check.done()
        row = await self.relations.revoke(relation_id, end, current_actor())
        return tr_pb2.RevokeRelationResponse(relation=convert.relation_to_proto(row))

    async def CheckRelation(
        self, request: tr_pb2.CheckRelationRequest, context: Context
    ) -> tr_pb2.CheckRelationResponse:
        provider, patient, day = convert.check_request(request)
        row = await self.relations.check(provider, patient, day)
        if row is None:
            return tr_pb2.CheckRelationResponse(exists=False)
        return tr_pb2.CheckRelationResponse(exists=True, relation=convert.relation_to_proto(row))

    async def ListRelations(
        self, request: tr_pb2.ListRelationsRequest, context: Context
    ) -> tr_pb2.ListRelationsResponse:
        actor = current_actor()
        check = Checker()
        provider = check.optional_inami("provider_inami", request.provider_inami)
        patient = check.optional_niss("patient_niss", request.patient_niss)
        given = request.provider_inami.strip() or request.patient_niss.strip()
        if not given and not actor.restricted:  # a provider's session lists its own by default
            check.add(
                "provider_inami", McnCode.MANDATORY_FIELD_MISSING, "give a provider, a patient, or both"
            )
        valid_on, size, after = convert.list_filters(
            check, request.valid_on, request.page_size, request.page_token
        )
        check.done()
        rows = await self.relations.search(
            provider_inami=provider.value if provider else "",
            patient_niss=patient,
            valid_on=valid_on,
            after=after,
            limit=size + 1,
            actor=actor,
        )
        page, next_token = paginate(rows, size, lambda r: convert.page_key(r.valid_from, r.relation_id))
        return tr_pb2.ListRelationsResponse(
            relations=[convert.relation_to_proto(r) for r in page], next_page_token=next_token
        )

    async def TransferDmgRelation(
        self, request: tr_pb2.TransferDmgRelationRequest, context: Context
    ) -> tr_pb2.TransferDmgRelationResponse:
        patient, new_holder, previous, start, reference = convert.transfer_request(request)
        result = await self.relations.transfer_dmg(patient, new_holder, previous, start, reference)
        response = tr_pb2.TransferDmgRelationResponse(
            new_relation=convert.relation_to_proto(result.new_relation), replayed=result.replayed
        )
        if result.ended_relation is not None:
            response.ended_relation.CopyFrom(convert.relation_to_proto(result.ended_relation))
        return response


class MandateServicer(mandate_pb2_grpc.MandateServiceServicer):
    def __init__(self, mandates: Mandates) -> None:
        self.mandates = mandates

    async def CreateMandate(
        self, request: mandate_pb2.CreateMandateRequest, context: Context
    ) -> mandate_pb2.CreateMandateResponse:
        created, closed = await self.mandates.create(convert.new_mandate(request.mandate), current_actor())
        return mandate_pb2.CreateMandateResponse(
            mandate=convert.mandate_to_proto(created), closed=[convert.mandate_to_proto(m) for m in closed]
        )

    async def RevokeMandate(
        self, request: mandate_pb2.RevokeMandateRequest, context: Context
    ) -> mandate_pb2.RevokeMandateResponse:
        check = Checker()
        mandate_id = check.text("mandate_id", request.mandate_id, max_length=64)
        end = check.optional_date("end_date", request.end_date)
        check.done()
        record, _ = await self.mandates.revoke(mandate_id, end, current_actor())
        return mandate_pb2.RevokeMandateResponse(mandate=convert.mandate_to_proto(record))

    async def ListMandates(
        self, request: mandate_pb2.ListMandatesRequest, context: Context
    ) -> mandate_pb2.ListMandatesResponse:
        check = Checker()
        principal = check.optional_inami("principal_inami", request.principal_inami)
        valid_on, size, after = convert.list_filters(
            check, request.valid_on, request.page_size, request.page_token
        )
        check.done()
        records = await self.mandates.search(
            principal_inami=principal.value if principal else "",
            mandatee_id=request.mandatee_id.strip(),
            valid_on=valid_on,
            after=after,
            limit=size + 1,
            actor=current_actor(),
        )
        page, next_token = paginate(
            records, size, lambda m: convert.page_key(m.row.valid_from, m.row.mandate_id)
        )
        return mandate_pb2.ListMandatesResponse(
            mandates=[convert.mandate_to_proto(m) for m in page], next_page_token=next_token
        )
