"""The async client."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opentelemetry import trace

from mycarenet_core.channels import client_credentials, open_channel
from mycarenet_core.errors import MeshError, parse_rpc_error
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import (
    dmg_pb2,
    dmg_service_pb2,
    dmg_service_pb2_grpc,
    mailbox_service_pb2,
    mailbox_service_pb2_grpc,
)
from mycarenet_core.gen.mycarenet.ehealth.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    cadastre_pb2,
    cadastre_pb2_grpc,
    mandate_pb2,
    mandate_pb2_grpc,
    therapeutic_relation_pb2,
    therapeutic_relation_pb2_grpc,
)
from mycarenet_core.gen.mycarenet.insurability.v1 import (
    insurability_pb2,
    insurability_service_pb2,
    insurability_service_pb2_grpc,
)
from mycarenet_core.gen.mycarenet.invoicing.v1 import invoicing_service_pb2, invoicing_service_pb2_grpc
from mycarenet_core.telemetry import Telemetry, message_links
from mycarenet_sdk import commitments
from mycarenet_sdk.keys import fingerprint, load_private_key

T = TypeVar("T")

SUBJECT_KINDS = {
    "provider": auth_pb2.SUBJECT_KIND_PROVIDER,
    "organisation": auth_pb2.SUBJECT_KIND_ORGANISATION,
    "person": auth_pb2.SUBJECT_KIND_PERSON,
    "company": auth_pb2.SUBJECT_KIND_COMPANY,
}
# The proof a provider registers a therapeutic relation on (RELATION_PROOF_DMG is set by the system only).
RELATION_PROOFS = {
    "eid": therapeutic_relation_pb2.RELATION_PROOF_EID_READ,
    "isi": therapeutic_relation_pb2.RELATION_PROOF_ISI_PLUS_READ,
    "declaration": therapeutic_relation_pb2.RELATION_PROOF_PATIENT_DECLARATION,
}
MANDATED_SERVICES = {
    "DMG_CONSULT": mandate_pb2.MANDATED_SERVICE_DMG_CONSULT,
    "DMG_NOTIFY": mandate_pb2.MANDATED_SERVICE_DMG_NOTIFY,
    "DMG_ENROL": mandate_pb2.MANDATED_SERVICE_DMG_ENROL,
    "DMG_PATIENT_LIST": mandate_pb2.MANDATED_SERVICE_DMG_PATIENT_LIST,
    "MAILBOX": mandate_pb2.MANDATED_SERVICE_MAILBOX,
    "INSURABILITY": mandate_pb2.MANDATED_SERVICE_INSURABILITY,
    "TARIFICATION_OFFICE": mandate_pb2.MANDATED_SERVICE_TARIFICATION_OFFICE,
}


class MyCareNetError(MeshError):
    """A call failed: ``status`` (grpc.StatusCode), ``reason``, ``codes`` (MyCareNet), ``violations``."""

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> MyCareNetError:
        parsed = parse_rpc_error(error)
        return cls(
            parsed.status,
            parsed.reason,
            parsed.message,
            parsed.code,
            parsed.violations,
            parsed.metadata,
            parsed.retry_after_seconds,
        )

    @property
    def excluded_until(self) -> dt.datetime | None:
        """With reason ``SYSTEMATIC_CONSULTATION_EXCLUDED`` (the insurability services refuse a provider
        excluded for systematic consultation, seed 003 §7.2): when the exclusion ends. The usage notices in
        the mailbox (:meth:`Client.usage_notices`) say why."""
        value = self.metadata.get("excluded_until", "")
        try:
            return dt.datetime.fromisoformat(value) if value else None
        except ValueError:
            return None


@dataclass(frozen=True)
class Session:
    """An eHealth session: the token and what it says."""

    token: str
    session_id: str
    expire_time: dt.datetime
    subject_id: str
    principal_inami: str | None = None


def new_reference() -> str:
    """A fresh requester reference."""
    return f"sdk-{uuid.uuid4().hex[:20]}"


def _date(value: dt.date | None) -> common_pb2.Date | None:
    return None if value is None else common_pb2.Date(year=value.year, month=value.month, day=value.day)


def _period(start: dt.date | None, end: dt.date | None = None) -> common_pb2.Period:
    return common_pb2.Period(start=_date(start), end=_date(end))


def subject_kind(kind: str) -> auth_pb2.SubjectKind.ValueType:
    """``provider``, ``organisation``, ``person`` or ``company`` as the eHealth enum."""
    try:
        return SUBJECT_KINDS[kind.lower()]
    except KeyError:
        raise ValueError(f"unknown subject kind {kind!r} (one of {', '.join(SUBJECT_KINDS)})") from None


def relation_proof(proof: str) -> therapeutic_relation_pb2.RelationProof.ValueType:
    """``eid``, ``isi`` or ``declaration`` as the eHealth enum."""
    try:
        return RELATION_PROOFS[proof.lower()]
    except KeyError:
        raise ValueError(f"unknown relation proof {proof!r} (one of {', '.join(RELATION_PROOFS)})") from None


def mandated_services(names: Sequence[str]) -> list[mandate_pb2.MandatedService.ValueType]:
    """Service names (``DMG_CONSULT``, ``dmg-consult``, ``MANDATED_SERVICE_DMG_CONSULT`` ...) as enums."""
    out: list[mandate_pb2.MandatedService.ValueType] = []
    for name in names:
        key = name.upper().replace("-", "_").removeprefix("MANDATED_SERVICE_")
        if key not in MANDATED_SERVICES:
            raise ValueError(f"unknown mandated service {name!r} (one of {', '.join(MANDATED_SERVICES)})")
        if MANDATED_SERVICES[key] not in out:
            out.append(MANDATED_SERVICES[key])
    if not out:
        raise ValueError("a mandate names at least one service")
    return out


def _patient(
    niss: str | None, member: tuple[str, str] | None, sex: int = common_pb2.SEX_UNSPECIFIED
) -> common_pb2.PatientSelector:
    if (niss is None) == (member is None):
        raise ValueError("give either niss or member=(mutuality_code, registration_number)")
    if niss is not None:
        return common_pb2.PatientSelector(niss=niss, sex=sex)  # type: ignore[arg-type]
    assert member is not None
    return common_pb2.PatientSelector(
        member=common_pb2.MemberNumber(mutuality_code=member[0], registration_number=member[1]),
        sex=sex,  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class InvoiceLine:
    """One contact to invoice through eFact (third-party payment): ``provider_inami`` defaults to you; a
    medical house names its physician."""

    patient_niss: str
    contact_date: dt.date
    nomenclature_code: str
    amount: str
    """In EUR, with a dot: "30.00"."""
    provider_inami: str = ""


class Client:
    """Provider software's async client (the ``client`` certificate): the hub (DMG, mailbox) and eHealth
    (login; with the provider's own session, its relations, the mandates it gives, its credential and its
    cadastre entry). The administrator's operations are on :class:`mycarenet_sdk.admin.AdminClient`."""

    def __init__(
        self,
        *,
        hub: str,
        ehealth: str,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 10.0,
        interceptors: Sequence[Any] = (),
        tracer: trace.Tracer | None = None,
    ) -> None:
        # Provider software holds the "client" certificate (declared on a plaintext development mesh).
        self._hub_channel = open_channel(
            hub, credentials=credentials, interceptors=interceptors, identity="client"
        )
        self._ehealth_channel = open_channel(
            ehealth, credentials=credentials, interceptors=interceptors, identity="client"
        )
        self._tracer = tracer
        self._dmg = dmg_service_pb2_grpc.DmgServiceStub(self._hub_channel)
        self._mailbox = mailbox_service_pb2_grpc.MailboxServiceStub(self._hub_channel)
        self._insurability = insurability_service_pb2_grpc.InsurabilityServiceStub(self._hub_channel)
        self._invoicing = invoicing_service_pb2_grpc.InvoicingServiceStub(self._hub_channel)
        self._auth = auth_pb2_grpc.AuthServiceStub(self._ehealth_channel)
        self._cadastre = cadastre_pb2_grpc.CadastreServiceStub(self._ehealth_channel)
        self._relations = therapeutic_relation_pb2_grpc.TherapeuticRelationServiceStub(self._ehealth_channel)
        self._mandates = mandate_pb2_grpc.MandateServiceStub(self._ehealth_channel)
        self.timeout = timeout
        self.session: Session | None = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._hub_channel.close(None)
        await self._ehealth_channel.close(None)

    async def _call(self, fn: Callable[..., Awaitable[T]], request: Any, *, auth: bool = True) -> T:
        metadata: list[tuple[str, str]] = []
        if auth:
            if self.session is None:
                raise MyCareNetError(grpc.StatusCode.UNAUTHENTICATED, "NOT_LOGGED_IN", "call login() first")
            metadata.append(("authorization", f"Bearer {self.session.token}"))
        try:
            return await fn(request, timeout=self.timeout, metadata=metadata)
        except grpc.RpcError as error:
            raise MyCareNetError.from_rpc_error(error) from None

    # --- eHealth -------------------------------------------------------------------------------------

    async def login(
        self,
        subject_id: str,
        private_key: Ed25519PrivateKey | bytes | str | Path,
        *,
        kind: str = "provider",
        principal_inami: str | None = None,
        lifetime: dt.timedelta | None = None,
        pharmacist: tuple[str, Ed25519PrivateKey | bytes | str | Path] | None = None,
    ) -> Session:
        """Authenticate by signing an eHealth challenge; keeps the session for the next calls.

        A pharmacy's session (``kind="organisation"``, seed 003 §8.2.2.1) is opened by one of its pharmacists:
        ``pharmacist=(inami, private key)`` signs a second challenge, as the pharmacist's eID does."""
        key = load_private_key(private_key)
        challenge = await self._call(
            self._auth.CreateChallenge,
            auth_pb2.CreateChallengeRequest(subject=auth_pb2.Subject(kind=subject_kind(kind), id=subject_id)),
            auth=False,
        )
        request = auth_pb2.CreateSessionRequest(
            challenge_id=challenge.challenge_id,
            signature=key.sign(challenge.nonce),
            principal_inami=principal_inami or "",
            lifetime_seconds=int(lifetime.total_seconds()) if lifetime else 0,
        )
        if pharmacist is not None:
            user_inami, user_key = pharmacist
            user_challenge = await self._call(
                self._auth.CreateChallenge,
                auth_pb2.CreateChallengeRequest(
                    subject=auth_pb2.Subject(kind=subject_kind("provider"), id=user_inami)
                ),
                auth=False,
            )
            request.user_challenge_id = user_challenge.challenge_id
            request.user_signature = load_private_key(user_key).sign(user_challenge.nonce)
        reply = await self._call(self._auth.CreateSession, request, auth=False)
        self.session = Session(
            token=reply.token,
            session_id=reply.session_id,
            expire_time=reply.expire_time.ToDatetime(tzinfo=dt.UTC),
            subject_id=subject_id,
            principal_inami=principal_inami,
        )
        return self.session

    async def logout(self) -> None:
        """End the session at eHealth."""
        if self.session is not None:
            await self._call(self._auth.Logout, auth_pb2.LogoutRequest(token=self.session.token), auth=False)
            self.session = None

    # --- the provider's own data at eHealth (its own session, never under a mandate) -----------------

    def _me(self) -> str:
        """The INAMI of the logged-in provider (the requester of record)."""
        if self.session is None:
            raise MyCareNetError(grpc.StatusCode.UNAUTHENTICATED, "NOT_LOGGED_IN", "call login() first")
        return self.session.principal_inami or self.session.subject_id

    async def cadastre_entry(self) -> cadastre_pb2.GetProviderResponse:
        """Your own entry in eHealth's cadastre (names, validity, supervisor, organisations)."""
        return await self._call(self._cadastre.GetProvider, cadastre_pb2.GetProviderRequest(inami=self._me()))

    async def revoke_credential(
        self, key: Ed25519PrivateKey | bytes | str | Path | None = None, *, fingerprint_hex: str = ""
    ) -> auth_pb2.RevokeCredentialResponse:
        """Revoke your own credential (by its private key, or its fingerprint): it can no longer log in, and
        the sessions opened with it end, this one included."""
        if not fingerprint_hex:
            if key is None:
                raise ValueError("give the key or its fingerprint")
            fingerprint_hex = fingerprint(load_private_key(key))
        request = auth_pb2.RevokeCredentialRequest(
            subject=auth_pb2.Subject(kind=auth_pb2.SUBJECT_KIND_PROVIDER, id=self._me()),
            fingerprint=fingerprint_hex,
        )
        return await self._call(self._auth.RevokeCredential, request)

    async def register_relation(
        self,
        patient_niss: str,
        *,
        start: dt.date | None = None,
        end: dt.date | None = None,
        proof: str = "eid",
    ) -> therapeutic_relation_pb2.TherapeuticRelation:
        """Register your therapeutic relation with a patient (as reading the patient's eID does); from
        ``start`` (default today) to ``end`` (default open)."""
        request = therapeutic_relation_pb2.RegisterRelationRequest(
            provider_inami=self._me(),
            patient_niss=patient_niss,
            proof=relation_proof(proof),
            start_date=_date(start),
            end_date=_date(end),
        )
        return (await self._call(self._relations.RegisterRelation, request)).relation

    async def revoke_relation(
        self, relation_id: str, *, end: dt.date | None = None
    ) -> therapeutic_relation_pb2.TherapeuticRelation:
        """End one of your therapeutic relations on ``end`` (default today)."""
        request = therapeutic_relation_pb2.RevokeRelationRequest(relation_id=relation_id, end_date=_date(end))
        return (await self._call(self._relations.RevokeRelation, request)).relation

    async def list_relations(
        self, *, patient_niss: str = "", valid_on: dt.date | None = None
    ) -> list[therapeutic_relation_pb2.TherapeuticRelation]:
        """Your therapeutic relations (all pages), optionally with one patient or valid on a date."""
        out: list[therapeutic_relation_pb2.TherapeuticRelation] = []
        token = ""
        while True:
            request = therapeutic_relation_pb2.ListRelationsRequest(
                provider_inami=self._me(),
                patient_niss=patient_niss,
                valid_on=_date(valid_on),
                page_size=1000,
                page_token=token,
            )
            page = await self._call(self._relations.ListRelations, request)
            out.extend(page.relations)
            token = page.next_page_token
            if not token:
                return out

    async def give_mandate(
        self,
        mandatee_id: str,
        services: Sequence[str],
        *,
        start: dt.date,
        end: dt.date | None = None,
        mandatee_kind: str = "person",
    ) -> mandate_pb2.CreateMandateResponse:
        """Let ``mandatee_id`` (a person's NISS, another provider's INAMI ...) act for you for ``services``
        (``DMG_CONSULT``, ``DMG_NOTIFY``, ``DMG_ENROL``, ``DMG_PATIENT_LIST``, ``MAILBOX``) from ``start``
        to ``end`` (default until revoked). A new mandate closes an overlapping one you gave for the same
        service. The mandatee logs in with ``login(mandatee_id, key, kind=..., principal_inami=<you>)``."""
        mandate = mandate_pb2.Mandate(
            principal_inami=self._me(),
            mandatee_kind=auth_pb2.SubjectKind.Name(subject_kind(mandatee_kind)),
            mandatee_id=mandatee_id,
            services=mandated_services(services),
            period=_period(start, end),
        )
        request = mandate_pb2.CreateMandateRequest(mandate=mandate)
        return await self._call(self._mandates.CreateMandate, request)

    async def revoke_mandate(self, mandate_id: str, *, end: dt.date | None = None) -> mandate_pb2.Mandate:
        """End a mandate you gave on ``end`` (default today); the sessions opened with it end."""
        request = mandate_pb2.RevokeMandateRequest(mandate_id=mandate_id, end_date=_date(end))
        return (await self._call(self._mandates.RevokeMandate, request)).mandate

    async def list_mandates(self, *, valid_on: dt.date | None = None) -> list[mandate_pb2.Mandate]:
        """The mandates you gave (all pages), optionally only those valid on a date."""
        out: list[mandate_pb2.Mandate] = []
        token = ""
        while True:
            request = mandate_pb2.ListMandatesRequest(
                principal_inami=self._me(), valid_on=_date(valid_on), page_size=1000, page_token=token
            )
            page = await self._call(self._mandates.ListMandates, request)
            out.extend(page.mandates)
            token = page.next_page_token
            if not token:
                return out

    # --- DMG -----------------------------------------------------------------------------------------

    async def consult(
        self,
        niss: str | None = None,
        *,
        member: tuple[str, str] | None = None,
        date: dt.date | None = None,
        reference: str | None = None,
    ) -> dmg_service_pb2.ConsultDmgResponse:
        """Consult a patient's DMG right at ``date`` (default: the hub's today)."""
        request = dmg_service_pb2.ConsultDmgRequest(
            requester_reference=reference or new_reference(),
            patient=_patient(niss, member),
            request_date=_date(date),
        )
        return await self._call(self._dmg.ConsultDmg, request)

    async def member_data(
        self,
        niss: str | None = None,
        *,
        member: tuple[str, str] | None = None,
        date: dt.date | None = None,
        reference: str | None = None,
    ) -> insurability_pb2.MemberData:
        """The insurer's file on a patient at ``date`` (default: the hub's today): insurability periods with
        CT1/CT2 and social statuses, care statuses, medical house, DMG holder. For a patient actually treated,
        once per contact, never systematically."""
        request = insurability_service_pb2.GetMemberDataRequest(
            requester_reference=reference or new_reference(), patient=_patient(niss, member), date=_date(date)
        )
        answer = await self._call(self._insurability.GetMemberData, request)
        return answer.member_data

    async def consult_rights(
        self,
        niss: str | None = None,
        *,
        member: tuple[str, str] | None = None,
        dispensing_date: dt.date,
        reference: str | None = None,
    ) -> insurability_service_pb2.ConsultRightsResponse:
        """A pharmacist's rights consultation at a dispensing date: the member data and, with a right that
        day, the insurer's payment commitment (seed 003 §5)."""
        request = insurability_service_pb2.ConsultRightsRequest(
            requester_reference=reference or new_reference(),
            patient=_patient(niss, member),
            dispensing_date=_date(dispensing_date),
        )
        return await self._call(self._insurability.ConsultRights, request)

    async def rights_at_dispensing(
        self,
        niss: str,
        *,
        dispensing_date: dt.date,
        stored: list[commitments.StoredCommitment],
        trusts_last_data: bool = False,
        has_sis_card: bool = False,
        has_document: bool = False,
        trusts_document: bool = False,
    ) -> tuple[commitments.Decision, insurability_service_pb2.ConsultRightsResponse | None]:
        """The emergency scheme of seed 003 §9.2 for one dispensing: consult online (and store the new
        commitment in ``stored``); when the mesh cannot answer (unreachable, too slow, the insurer down),
        reuse the latest stored commitment covering the date, or say what the pharmacist falls back to."""
        try:
            answer = await self.consult_rights(niss, dispensing_date=dispensing_date)
        except MyCareNetError as error:
            if error.status not in commitments.NETWORK_UNAVAILABLE:
                raise
            decision = commitments.decide(
                network_available=False,
                stored=stored,
                niss=niss,
                dispensing=dispensing_date,
                trusts_last_data=trusts_last_data,
                has_sis_card=has_sis_card,
                has_document=has_document,
                trusts_document=trusts_document,
            )
            return decision, None
        if answer.HasField("commitment"):
            stored.append(commitments.stored_from(niss, answer.commitment))
        return commitments.Decision(commitments.Basis.ONLINE), answer

    async def notify(
        self,
        niss: str | None = None,
        *,
        member: tuple[str, str] | None = None,
        contact_date: dt.date,
        nomenclature_code: str,
        contact_time: str = "",
        supervisor_inami: str = "",
        reference: str | None = None,
    ) -> dmg_service_pb2.NotifyDmgResponse:
        """Notify the opening or takeover of a DMG. Retrying with the same ``reference`` is safe."""
        request = dmg_service_pb2.NotifyDmgRequest(
            requester_reference=reference or new_reference(),
            patient=_patient(niss, member),
            contact_date=_date(contact_date),
            contact_time=contact_time,
            nomenclature_code=nomenclature_code,
            supervisor_inami=supervisor_inami,
        )
        return await self._call(self._dmg.NotifyDmg, request)

    async def enrol(
        self,
        *,
        iban: str,
        bic: str,
        holder_name: str,
        insurer_codes: Sequence[str] = (),
        reference: str | None = None,
    ) -> dmg_service_pb2.EnrolDmgResponse:
        """Enrol for the electronic DMG at the given insurers (all when empty)."""
        request = dmg_service_pb2.EnrolDmgRequest(
            requester_reference=reference or new_reference(),
            bank_account=common_pb2.BankAccount(iban=iban, bic=bic, holder_name=holder_name),
            insurer_codes=list(insurer_codes),
        )
        return await self._call(self._dmg.EnrolDmg, request)

    # --- invoicing (eFact, eAttest) ------------------------------------------------------------------

    async def post_invoices(
        self, lines: Sequence[InvoiceLine], *, reference: str | None = None
    ) -> invoicing_service_pb2.PostInvoiceBatchResponse:
        """eFact: post a batch (lines numbered from 1 in order); the answer is the technical acknowledgement,
        the insurers' answer per line comes to your mailbox (``MESSAGE_KIND_INVOICE_ANSWER``). Posting the
        same batch again with the same ``reference`` is safe."""
        me = self._me()
        request = invoicing_service_pb2.PostInvoiceBatchRequest(
            requester_reference=reference or new_reference(),
            lines=[
                invoicing_service_pb2.InvoiceLine(
                    line_number=number,
                    patient_niss=line.patient_niss,
                    provider_inami=line.provider_inami or me,
                    contact_date=_date(line.contact_date),
                    nomenclature_code=line.nomenclature_code,
                    amount=common_pb2.Money(currency_code="EUR", amount=line.amount),
                )
                for number, line in enumerate(lines, start=1)
            ],
        )
        return await self._call(self._invoicing.PostInvoiceBatch, request)

    async def send_attest(
        self,
        niss: str,
        *,
        contact_date: dt.date,
        nomenclature_code: str,
        amount: str,
        provider_inami: str = "",
        reference: str | None = None,
    ) -> invoicing_service_pb2.SendAttestResponse:
        """eAttest: one electronic care certificate (cash payment), registered by the insurer at once.
        Retrying with the same ``reference`` is safe."""
        request = invoicing_service_pb2.SendAttestRequest(
            requester_reference=reference or new_reference(),
            patient_niss=niss,
            provider_inami=provider_inami or self._me(),
            contact_date=_date(contact_date),
            nomenclature_code=nomenclature_code,
            amount=common_pb2.Money(currency_code="EUR", amount=amount),
        )
        return await self._call(self._invoicing.SendAttest, request)

    # --- asynchronous channel ------------------------------------------------------------------------

    async def post_patient_list(
        self, *, reference_date: dt.date, insurer_codes: Sequence[str] = (), reference: str | None = None
    ) -> mailbox_service_pb2.PostPatientListResponse:
        """Ask for the list of patients whose DMG you hold in the year of ``reference_date``."""
        request = mailbox_service_pb2.PostPatientListRequest(
            requester_reference=reference or new_reference(),
            reference_date=_date(reference_date),
            insurer_codes=list(insurer_codes),
        )
        return await self._call(self._mailbox.PostPatientList, request)

    async def get_messages(
        self, *, kinds: Sequence[int] = (), page_size: int = 0, page_token: str = ""
    ) -> mailbox_service_pb2.GetMessagesResponse:
        """One page of pending messages, oldest first."""
        request = mailbox_service_pb2.GetMessagesRequest(
            kinds=list(kinds),  # type: ignore[arg-type]
            page_size=page_size,
            page_token=page_token,
        )
        if self._tracer is None:
            return await self._call(self._mailbox.GetMessages, request)
        # The pick-up links to the request that caused each message (its W3C trace context).
        with self._tracer.start_as_current_span("mailbox.receive", kind=trace.SpanKind.CONSUMER) as span:
            reply = await self._call(self._mailbox.GetMessages, request)
            for link in message_links(reply.messages):
                span.add_link(link.context, link.attributes)
            span.set_attribute("messaging.batch.message_count", len(reply.messages))
            return reply

    async def all_messages(self, *, kinds: Sequence[int] = ()) -> list[dmg_pb2.MailboxMessage]:
        """Every pending message (all pages)."""
        out: list[dmg_pb2.MailboxMessage] = []
        token = ""
        while True:
            page = await self.get_messages(kinds=kinds, page_token=token)
            out.extend(page.messages)
            token = page.next_page_token
            if not token:
                return out

    async def usage_notices(self) -> list[dmg_pb2.MailboxMessage]:
        """The pending usage notices (``MESSAGE_KIND_USAGE_NOTICE``): a finding of systematic consultation of
        the insurability services (many distinct patients in a short time, or consultations never followed by
        a billed service) and its consequence, a warning or a temporary exclusion (seed 003 §7.2–§7.3)."""
        return await self.all_messages(kinds=[dmg_pb2.MESSAGE_KIND_USAGE_NOTICE])

    async def watch_messages(self, *, kinds: Sequence[int] = ()) -> AsyncIterator[dmg_pb2.MailboxMessage]:
        """Pending messages, then each new one as it arrives (until the stream ends or you stop)."""
        if self.session is None:
            raise MyCareNetError(grpc.StatusCode.UNAUTHENTICATED, "NOT_LOGGED_IN", "call login() first")
        call = self._mailbox.WatchMessages(
            mailbox_service_pb2.WatchMessagesRequest(kinds=list(kinds)),  # type: ignore[arg-type]
            metadata=[("authorization", f"Bearer {self.session.token}")],
        )
        try:
            async for event in call:
                if self._tracer is not None:
                    self._tracer.start_span(
                        "mailbox.receive",
                        kind=trace.SpanKind.CONSUMER,
                        links=message_links([event.message]),
                        attributes={"messaging.message.id": event.message.message_id},
                    ).end()
                yield event.message
        except grpc.RpcError as error:
            raise MyCareNetError.from_rpc_error(error) from None
        finally:
            call.cancel()

    async def confirm(
        self, message_ids: Sequence[str] = (), *, content_hashes: Sequence[str] = ()
    ) -> mailbox_service_pb2.ConfirmMessagesResponse:
        """Confirm messages you have stored; they are never returned again."""
        request = mailbox_service_pb2.ConfirmMessagesRequest(
            message_ids=list(message_ids), content_hashes=list(content_hashes)
        )
        return await self._call(self._mailbox.ConfirmMessages, request)


def connect(
    *,
    hub: str,
    ehealth: str,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    timeout: float = 10.0,
    telemetry: Telemetry | None = None,
) -> Client:
    """A client of the mesh; mutual TLS when ``ca``, ``cert`` and ``key`` are given. Use ``async with``.

    With ``telemetry`` (:func:`mycarenet_core.telemetry.setup`), every call is a client span whose W3C
    context the hub continues (one trace down to the OA's database), and mailbox pick-ups are
    ``mailbox.receive`` spans linked to the requests that caused the messages.
    """
    credentials = None
    if ca and cert and key:
        credentials = client_credentials(ca, cert, key)
    return Client(
        hub=hub,
        ehealth=ehealth,
        credentials=credentials,
        timeout=timeout,
        interceptors=telemetry.client_interceptors if telemetry else (),
        tracer=telemetry.tracer if telemetry else None,
    )
