"""The four eHealth servicers: proto → domain call → proto. Every request is parsed by :mod:`ehealth.inputs`
(all field violations at once, INVALID_ARGUMENT with their MyCareNet codes); errors are raised as MeshError
and mapped to statuses by the one interceptor chain of :class:`mycarenet_core.server.MeshServer`.

Who may call what is settled before a handler runs (the trust interceptor, ``mycarenet_core/trust.toml``);
a handler passes the caller (:func:`ehealth.access.current_actor`) to the domain, which applies the scope
rules that need the data ("only its own relations")."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from ehealth import convert, inputs
from ehealth.access import current_actor
from ehealth.audit import note
from ehealth.auth import Authenticator
from ehealth.cadastre import Cadastre
from ehealth.mandates import Mandates
from ehealth.relations import Relations
from mycarenet_core.clock import Clock
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
from mycarenet_core.validation import paginate

Context = grpc.aio.ServicerContext[Any, Any]


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, auth: Authenticator, on_rotate: Callable[[], Awaitable[object]] | None = None) -> None:
        self.auth = auth
        self.on_rotate = on_rotate

    async def CreateChallenge(
        self, request: auth_pb2.CreateChallengeRequest, context: Context
    ) -> auth_pb2.CreateChallengeResponse:
        kind, subject_id = inputs.challenge_request(request)
        row = await self.auth.create_challenge(kind, subject_id)
        return auth_pb2.CreateChallengeResponse(
            challenge_id=row.challenge_id, nonce=row.nonce, expire_time=convert.timestamp(row.expire_time)
        )

    async def CreateSession(
        self, request: auth_pb2.CreateSessionRequest, context: Context
    ) -> auth_pb2.CreateSessionResponse:
        asked = inputs.session_request(request)
        issued = await self.auth.create_session(
            asked.challenge_id,
            asked.signature,
            audience=asked.audience,
            lifetime_seconds=asked.lifetime_seconds,
            principal_inami=asked.principal_inami,
            user_challenge_id=asked.user_challenge_id,
            user_signature=asked.user_signature,
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
        session_id, revoked = await self.auth.logout(inputs.logout_request(request))
        return auth_pb2.LogoutResponse(session_id=session_id, revoked=revoked)

    async def ListRevocations(
        self, request: auth_pb2.ListRevocationsRequest, context: Context
    ) -> auth_pb2.ListRevocationsResponse:
        after, size = inputs.revocations_request(request)
        rows = await self.auth.revocations(after, size + 1)
        page, next_token = paginate(rows, size, lambda r: [r.sequence or 0])
        return auth_pb2.ListRevocationsResponse(
            revocations=[convert.revocation_to_proto(r) for r in page], next_page_token=next_token
        )

    async def WatchRevocations(
        self, request: auth_pb2.WatchRevocationsRequest, context: Context
    ) -> AsyncIterator[auth_pb2.WatchRevocationsResponse]:
        async for row in self.auth.watch_revocations(inputs.watch_request(request)):
            yield auth_pb2.WatchRevocationsResponse(revocation=convert.revocation_to_proto(row))

    async def RegisterCredential(
        self, request: auth_pb2.RegisterCredentialRequest, context: Context
    ) -> auth_pb2.RegisterCredentialResponse:
        kind, subject_id, pem = inputs.credential_request(request)
        note(subject=subject_id)
        fingerprint = await self.auth.register_credential(kind, subject_id, pem)
        return auth_pb2.RegisterCredentialResponse(fingerprint=fingerprint)

    async def RevokeCredential(
        self, request: auth_pb2.RevokeCredentialRequest, context: Context
    ) -> auth_pb2.RevokeCredentialResponse:
        kind, subject_id, fingerprint = inputs.revoke_credential_request(request)
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
        row, pem = inputs.provider_request(request.provider)
        record, created, sequence = await self.cadastre.upsert_provider(row, pem)
        return cadastre_pb2.UpsertProviderResponse(
            provider=convert.provider_to_proto(record), created=created, change_sequence=sequence
        )

    async def GetProvider(
        self, request: cadastre_pb2.GetProviderRequest, context: Context
    ) -> cadastre_pb2.GetProviderResponse:
        record, organisations = await self.cadastre.get_provider(
            inputs.lookup_inami(request.inami), current_actor()
        )
        return cadastre_pb2.GetProviderResponse(
            provider=convert.provider_to_proto(record), organisation_inamis=organisations
        )

    async def ListProviders(
        self, request: cadastre_pb2.ListProvidersRequest, context: Context
    ) -> cadastre_pb2.ListProvidersResponse:
        role, asked = inputs.providers_request(request)
        records = await self.cadastre.list_providers(
            role.value if role else None, asked.after, asked.size + 1
        )
        page, next_token = paginate(records, asked.size, lambda r: [r.row.inami])
        return cadastre_pb2.ListProvidersResponse(
            providers=[convert.provider_to_proto(r) for r in page], next_page_token=next_token
        )

    async def UpsertOrganisation(
        self, request: cadastre_pb2.UpsertOrganisationRequest, context: Context
    ) -> cadastre_pb2.UpsertOrganisationResponse:
        row, members = inputs.organisation_request(request.organisation)
        record, created, sequence = await self.cadastre.upsert_organisation(row, members)
        return cadastre_pb2.UpsertOrganisationResponse(
            organisation=convert.organisation_to_proto(record), created=created, change_sequence=sequence
        )

    async def GetOrganisation(
        self, request: cadastre_pb2.GetOrganisationRequest, context: Context
    ) -> cadastre_pb2.GetOrganisationResponse:
        record = await self.cadastre.get_organisation(inputs.lookup_inami(request.inami), current_actor())
        return cadastre_pb2.GetOrganisationResponse(organisation=convert.organisation_to_proto(record))

    async def ListOrganisations(
        self, request: cadastre_pb2.ListOrganisationsRequest, context: Context
    ) -> cadastre_pb2.ListOrganisationsResponse:
        kind, asked = inputs.organisations_request(request)
        records = await self.cadastre.list_organisations(
            kind.value if kind else None, asked.after, asked.size + 1
        )
        page, next_token = paginate(records, asked.size, lambda r: [r.row.inami])
        return cadastre_pb2.ListOrganisationsResponse(
            organisations=[convert.organisation_to_proto(r) for r in page], next_page_token=next_token
        )

    async def ListCadastreChanges(
        self, request: cadastre_pb2.ListCadastreChangesRequest, context: Context
    ) -> cadastre_pb2.ListCadastreChangesResponse:
        changes, head = await self.cadastre.changes(*inputs.cadastre_changes_request(request))
        return cadastre_pb2.ListCadastreChangesResponse(
            changes=[convert.change_to_proto(c) for c in changes], head_sequence=head
        )

    async def WatchCadastreChanges(
        self, request: cadastre_pb2.WatchCadastreChangesRequest, context: Context
    ) -> AsyncIterator[cadastre_pb2.WatchCadastreChangesResponse]:
        async for change in self.cadastre.watch_changes(inputs.watch_request(request)):
            yield cadastre_pb2.WatchCadastreChangesResponse(change=convert.change_to_proto(change))


class TherapeuticRelationServicer(tr_pb2_grpc.TherapeuticRelationServiceServicer):
    def __init__(self, relations: Relations, clock: Clock) -> None:
        self.relations = relations
        self.clock = clock

    async def RegisterRelation(
        self, request: tr_pb2.RegisterRelationRequest, context: Context
    ) -> tr_pb2.RegisterRelationResponse:
        row = await self.relations.register(
            inputs.register_request(request, self.clock.today()), current_actor()
        )
        return tr_pb2.RegisterRelationResponse(relation=convert.relation_to_proto(row))

    async def RevokeRelation(
        self, request: tr_pb2.RevokeRelationRequest, context: Context
    ) -> tr_pb2.RevokeRelationResponse:
        relation_id, end = inputs.revoke_relation_request(request)
        row = await self.relations.revoke(relation_id, end, current_actor())
        return tr_pb2.RevokeRelationResponse(relation=convert.relation_to_proto(row))

    async def CheckRelation(
        self, request: tr_pb2.CheckRelationRequest, context: Context
    ) -> tr_pb2.CheckRelationResponse:
        row = await self.relations.check(*inputs.check_request(request))
        if row is None:
            return tr_pb2.CheckRelationResponse(exists=False)
        return tr_pb2.CheckRelationResponse(exists=True, relation=convert.relation_to_proto(row))

    async def ListRelations(
        self, request: tr_pb2.ListRelationsRequest, context: Context
    ) -> tr_pb2.ListRelationsResponse:
        actor = current_actor()
        asked = inputs.relations_request(request, restricted=actor.restricted)
        rows = await self.relations.search(
            provider_inami=asked.provider_inami,
            patient_niss=asked.patient_niss,
            valid_on=asked.page.valid_on,
            after=asked.page.after,
            limit=asked.page.size + 1,
            actor=actor,
        )
        page, next_token = paginate(
            rows, asked.page.size, lambda r: inputs.page_key(r.valid_from, r.relation_id)
        )
        return tr_pb2.ListRelationsResponse(
            relations=[convert.relation_to_proto(r) for r in page], next_page_token=next_token
        )

    async def TransferDmgRelation(
        self, request: tr_pb2.TransferDmgRelationRequest, context: Context
    ) -> tr_pb2.TransferDmgRelationResponse:
        result = await self.relations.transfer_dmg(inputs.transfer_request(request))
        assert result.new_relation is not None  # the RPC always names a new holder
        response = tr_pb2.TransferDmgRelationResponse(
            new_relation=convert.relation_to_proto(result.new_relation), replayed=result.replayed
        )
        if result.ended_relation is not None:
            response.ended_relation.CopyFrom(convert.relation_to_proto(result.ended_relation))
        return response

    async def ListRelationChanges(
        self, request: tr_pb2.ListRelationChangesRequest, context: Context
    ) -> tr_pb2.ListRelationChangesResponse:
        changes, head = await self.relations.changes(*inputs.relation_changes_request(request))
        return tr_pb2.ListRelationChangesResponse(
            changes=[convert.relation_change_to_proto(c) for c in changes], head_sequence=head
        )

    async def WatchRelationChanges(
        self, request: tr_pb2.WatchRelationChangesRequest, context: Context
    ) -> AsyncIterator[tr_pb2.WatchRelationChangesResponse]:
        async for change in self.relations.watch_changes(inputs.watch_request(request)):
            yield tr_pb2.WatchRelationChangesResponse(change=convert.relation_change_to_proto(change))


class MandateServicer(mandate_pb2_grpc.MandateServiceServicer):
    def __init__(self, mandates: Mandates) -> None:
        self.mandates = mandates

    async def CreateMandate(
        self, request: mandate_pb2.CreateMandateRequest, context: Context
    ) -> mandate_pb2.CreateMandateResponse:
        created, closed = await self.mandates.create(inputs.new_mandate(request.mandate), current_actor())
        return mandate_pb2.CreateMandateResponse(
            mandate=convert.mandate_to_proto(created), closed=[convert.mandate_to_proto(m) for m in closed]
        )

    async def RevokeMandate(
        self, request: mandate_pb2.RevokeMandateRequest, context: Context
    ) -> mandate_pb2.RevokeMandateResponse:
        mandate_id, end = inputs.revoke_mandate_request(request)
        record, _ = await self.mandates.revoke(mandate_id, end, current_actor())
        return mandate_pb2.RevokeMandateResponse(mandate=convert.mandate_to_proto(record))

    async def ListMandates(
        self, request: mandate_pb2.ListMandatesRequest, context: Context
    ) -> mandate_pb2.ListMandatesResponse:
        asked = inputs.mandates_request(request)
        records = await self.mandates.search(
            principal_inami=asked.principal_inami,
            mandatee_id=asked.mandatee_id,
            valid_on=asked.page.valid_on,
            after=asked.page.after,
            limit=asked.page.size + 1,
            actor=current_actor(),
        )
        page, next_token = paginate(
            records, asked.page.size, lambda m: inputs.page_key(m.row.valid_from, m.row.mandate_id)
        )
        return mandate_pb2.ListMandatesResponse(
            mandates=[convert.mandate_to_proto(m) for m in page], next_page_token=next_token
        )

    async def EndMandatesOnCessation(
        self, request: mandate_pb2.EndMandatesOnCessationRequest, context: Context
    ) -> mandate_pb2.EndMandatesOnCessationResponse:
        subject, day = inputs.cessation_request(request)
        ended, sessions = await self.mandates.end_on_cessation(subject, day)
        return mandate_pb2.EndMandatesOnCessationResponse(
            ended=[convert.mandate_to_proto(m) for m in ended], sessions_ended=sessions
        )
