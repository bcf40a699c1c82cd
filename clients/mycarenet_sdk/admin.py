"""The sandbox administrator's client: what the authentic sources do in the real platform.

In the real MyCareNet, eHealth's cadastre comes from the authentic sources (INAMI, the FPS), a credential is
bound to a person by the eID, and an insurer knows its members from its own files. In the sandbox the
administrator stands in for all of them, with the cluster's ``admin`` certificate (see the trust table,
``mycarenet_core/trust.toml``): it writes providers and organisations once in eHealth's cadastre, which the
seven insurers follow, registers credentials, adds members at their insurer, registers relations and
mandates for anyone, and rotates eHealth's signing key.

    async with mycarenet_sdk.connect_admin(ehealth=..., insurers={"100": ..., ...}, ca=..., cert=...,
                                           key=...) as admin:   # cert/key: cluster.json tls admin_*
        added = await admin.add_provider("19000292004", first_name="Eva", last_name="Claes",
                                         key_file=Path("eva.pem"), wait=True)

``wait`` (or :meth:`AdminClient.wait_for_cadastre`) returns once every insurer has applied the write, so the
provider can enrol at all seven at once. On a local cluster (``admin_from_cluster``) it also drives the
sandbox: the test clock (:meth:`AdminClient.clock`, ``set_clock``, ``advance_clock``) and chaos.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mycarenet_core import dates
from mycarenet_core.channels import client_credentials, open_channel
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
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
from mycarenet_core.gen.mycarenet.insurability.v1 import insurability_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import (
    membership_service_pb2,
    membership_service_pb2_grpc,
    reference_data_service_pb2,
    reference_data_service_pb2_grpc,
)
from mycarenet_core.gen.mycarenet.sandbox.v1 import chaos_pb2, chaos_pb2_grpc, clock_pb2, clock_pb2_grpc
from mycarenet_core.identifiers import IdentifierError, Sex, parse_niss
from mycarenet_sdk.client import (
    MyCareNetError,
    _date,
    _period,
    mandated_services,
    relation_proof,
    subject_kind,
)
from mycarenet_sdk.keys import ensure_key_file, fingerprint, public_pem

T = TypeVar("T")
CLOCK_TIMEOUT = 600.0  # seconds a move of the test clock may take (every insurer runs its year ends)

# A provider of the sandbox practises since this date unless told otherwise: long enough for any story.
DEFAULT_VALID_FROM = dt.date(2000, 1, 1)
ORGANISATION_KINDS = {
    "medical_house": cadastre_pb2.ORGANISATION_KIND_MEDICAL_HOUSE,
    "group_practice": cadastre_pb2.ORGANISATION_KIND_GROUP_PRACTICE,
    "pharmacy": cadastre_pb2.ORGANISATION_KIND_PHARMACY,
}
SEXES = {
    Sex.MALE: common_pb2.SEX_MALE,
    Sex.FEMALE: common_pb2.SEX_FEMALE,
    Sex.UNKNOWN: common_pb2.SEX_UNKNOWN,
}


@dataclass(frozen=True)
class ProviderAdded:
    """A provider as eHealth's cadastre stores it, the change the insurers must apply, and its credential."""

    provider: cadastre_pb2.CadastreProvider
    created: bool
    change_sequence: int
    fingerprint: str = ""  # of the registered credential ("" when none was registered)
    key_file: Path | None = None  # where the private key is (written when ``key_created``)
    key_created: bool = False
    private_key: Ed25519PrivateKey | None = field(default=None, repr=False)  # generated, not written
    positions: Mapping[str, CadastrePosition] = field(default_factory=dict)  # after ``wait``


@dataclass(frozen=True)
class ProcessClock:
    """The date one process of the mesh observes, and the year ends it ran in the call (insurers)."""

    process: str
    observed: bool
    today: dt.date | None
    year_ends_run: tuple[int, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class ClockState:
    """The sandbox's mesh clock: its date and instant, and what each process observes."""

    today: dt.date
    now: dt.datetime
    offset: dt.timedelta
    processes: tuple[ProcessClock, ...] = ()

    @classmethod
    def from_proto(cls, message: clock_pb2.ClockState) -> ClockState:
        return cls(
            today=dates.from_proto(message.today, "today"),
            now=message.now.ToDatetime(dt.UTC),
            offset=message.offset.ToTimedelta(),
            processes=tuple(
                ProcessClock(
                    p.process,
                    p.observed,
                    dates.optional_from_proto(p.today, "today"),
                    tuple(p.year_ends_run),
                    p.error,
                )
                for p in message.processes
            ),
        )


@dataclass(frozen=True)
class CadastrePosition:
    """How far one insurer has followed eHealth's cadastre."""

    applied_sequence: int
    following: bool


def _key_material(
    public_key: Ed25519PublicKey | str | None, key_file: Path | None, generate: bool
) -> tuple[str, Path | None, bool, Ed25519PrivateKey | None]:
    """(public PEM, key file, created, generated key not written) from what the caller gave."""
    if public_key is not None:
        return (public_key if isinstance(public_key, str) else public_pem(public_key)), None, False, None
    if key_file is not None:
        key, created = ensure_key_file(key_file)
        return public_pem(key), key_file, created, None
    if generate:
        key = Ed25519PrivateKey.generate()
        return public_pem(key), None, False, key
    return "", None, False, None


def _positions_text(positions: Mapping[str, CadastrePosition | str], sequence: int) -> str:
    parts = []
    for code, position in sorted(positions.items()):
        if isinstance(position, str):
            parts.append(f"{code}: {position}")
        else:
            state = "following" if position.following else "NOT following eHealth's cadastre"
            parts.append(f"{code}: at {position.applied_sequence} of {sequence}, {state}")
    return "; ".join(parts)


async def wait_for_cadastre(
    insurers: Mapping[str, reference_data_service_pb2_grpc.ReferenceDataServiceStub],
    sequence: int,
    *,
    seconds: float = 60.0,
    poll: float = 0.2,
) -> dict[str, CadastrePosition]:
    """Wait until every insurer reports ``GetCadastrePosition.applied_sequence >= sequence`` (it knows the
    cadastre as it was after that change). Raises :class:`MyCareNetError` ``DEADLINE_EXCEEDED``
    ``CADASTRE_NOT_FOLLOWED`` naming the insurers behind, or the error of an insurer that cannot answer."""
    deadline = time.monotonic() + seconds
    per_call = max(1.0, min(5.0, seconds))

    async def ask(
        code: str, stub: reference_data_service_pb2_grpc.ReferenceDataServiceStub
    ) -> tuple[str, CadastrePosition | str]:
        aio: Any = stub  # generated stubs are typed for the sync API
        try:
            reply = await aio.GetCadastrePosition(
                reference_data_service_pb2.GetCadastrePositionRequest(), timeout=per_call
            )
        except grpc.RpcError as error:
            parsed = MyCareNetError.from_rpc_error(error)
            if parsed.status in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return code, f"unreachable ({parsed.status.name})"  # e.g. restarting: keep waiting
            raise parsed from None
        return code, CadastrePosition(int(reply.applied_sequence), bool(reply.following))

    while True:
        answers = dict(await asyncio.gather(*(ask(code, stub) for code, stub in insurers.items())))
        behind = {
            code: position
            for code, position in answers.items()
            if isinstance(position, str) or position.applied_sequence < sequence
        }
        if not behind:
            return {c: p for c, p in answers.items() if isinstance(p, CadastrePosition)}
        if time.monotonic() >= deadline:
            raise MyCareNetError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "CADASTRE_NOT_FOLLOWED",
                f"after {seconds:.0f} s, insurer(s) {', '.join(sorted(behind))} have not applied cadastre "
                f"change {sequence}: {_positions_text(behind, sequence)}",
            )
        await asyncio.sleep(poll)


@dataclass(frozen=True)
class Insurability:
    """One insurability period of a patient (both ends included) and its status (seed 003 §3.4.1)."""

    start: dt.date
    end: dt.date
    ct1: str = "110"
    ct2: str = "110"
    preferential_rate: bool = False
    maximum_billing: bool = False

    def proto(self) -> insurability_pb2.InsurabilityPeriod:
        return insurability_pb2.InsurabilityPeriod(
            period=_period(self.start, self.end),
            status=insurability_pb2.InsurabilityStatus(
                ct1=self.ct1,
                ct2=self.ct2,
                preferential_rate=self.preferential_rate,
                maximum_billing=self.maximum_billing,
            ),
        )


class AdminClient:
    """An async client of eHealth and of the insurers' nodes, with the administrator's certificate."""

    def __init__(
        self,
        *,
        ehealth: str,
        insurers: Mapping[str, str] | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 30.0,
        interceptors: Sequence[Any] = (),
        sandbox: str | None = None,
    ) -> None:
        # The "admin" certificate (declared as such on a plaintext development mesh).
        self._ehealth_channel = open_channel(
            ehealth, credentials=credentials, interceptors=interceptors, identity="admin"
        )
        self._oa_channels = {
            code: open_channel(target, credentials=credentials, interceptors=interceptors, identity="admin")
            for code, target in (insurers or {}).items()
        }
        self._auth = auth_pb2_grpc.AuthServiceStub(self._ehealth_channel)
        self._cadastre = cadastre_pb2_grpc.CadastreServiceStub(self._ehealth_channel)
        self._relations = therapeutic_relation_pb2_grpc.TherapeuticRelationServiceStub(self._ehealth_channel)
        self._mandates = mandate_pb2_grpc.MandateServiceStub(self._ehealth_channel)
        self._reference = {
            code: reference_data_service_pb2_grpc.ReferenceDataServiceStub(ch)
            for code, ch in self._oa_channels.items()
        }
        self._members = {
            code: membership_service_pb2_grpc.MembershipServiceStub(ch)
            for code, ch in self._oa_channels.items()
        }
        # The cluster supervisor's sandbox server (the test clock, chaos), when there is one.
        self._sandbox_channel = (
            open_channel(sandbox, credentials=credentials, interceptors=interceptors, identity="admin")
            if sandbox
            else None
        )
        self.timeout = timeout

    @property
    def insurer_codes(self) -> list[str]:
        return sorted(self._oa_channels)

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._ehealth_channel.close(None)
        for channel in self._oa_channels.values():
            await channel.close(None)
        if self._sandbox_channel is not None:
            await self._sandbox_channel.close(None)

    def _sandbox(self) -> grpc.aio.Channel:
        if self._sandbox_channel is None:
            raise MyCareNetError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "NO_SANDBOX",
                "this client knows no sandbox server (a local cluster's: cluster.json sandbox.address)",
            )
        return self._sandbox_channel

    async def _call(self, fn: Callable[..., Awaitable[T]], request: Any) -> T:
        try:
            return await fn(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise MyCareNetError.from_rpc_error(error) from None

    def _insurer(self, code: str) -> str:
        if code not in self._oa_channels:
            known = ", ".join(self.insurer_codes) or "none"
            raise MyCareNetError(
                grpc.StatusCode.INVALID_ARGUMENT, "INSURER_UNKNOWN", f"no insurer {code} (known: {known})"
            )
        return code

    # --- eHealth: the cadastre --------------------------------------------------------------------

    async def add_provider(
        self,
        inami: str,
        *,
        first_name: str,
        last_name: str,
        niss: str = "",
        supervisor_inami: str = "",
        valid_from: dt.date = DEFAULT_VALID_FROM,
        valid_to: dt.date | None = None,
        public_key: Ed25519PublicKey | str | None = None,
        key_file: Path | None = None,
        credential: bool = True,
        wait: bool = False,
        wait_seconds: float = 60.0,
    ) -> ProviderAdded:
        """Write (create or update) a provider in eHealth's cadastre and register its credential.

        The credential is ``public_key`` (object or PEM), else the key in ``key_file`` (generated and written
        there, mode 0600, when the file does not exist), else a generated key returned in
        :attr:`ProviderAdded.private_key`; ``credential=False`` leaves the provider's credential as it is.
        With ``wait``, returns once all insurers know the provider (:meth:`wait_for_cadastre`)."""
        pem, path, created_key, generated = (
            _key_material(public_key, key_file, True) if credential else ("", None, False, None)
        )
        reply = await self._call(
            self._cadastre.UpsertProvider,
            cadastre_pb2.UpsertProviderRequest(
                provider=cadastre_pb2.CadastreProvider(
                    inami=inami,
                    niss=niss,
                    first_name=first_name,
                    last_name=last_name,
                    validity=_period(valid_from, valid_to),
                    supervisor_inami=supervisor_inami,
                )
            ),
        )
        print_ = ""
        if pem:
            print_ = await self.register_credential(inami, public_key=pem, kind="provider")
        positions: dict[str, CadastrePosition] = {}
        if wait:
            sequence = reply.change_sequence or await self.cadastre_head()  # unchanged: wait for all before
            positions = await self.wait_for_cadastre(sequence, seconds=wait_seconds)
        return ProviderAdded(
            provider=reply.provider,
            created=reply.created,
            change_sequence=int(reply.change_sequence),
            fingerprint=print_,
            key_file=path,
            key_created=created_key,
            private_key=generated,
            positions=positions,
        )

    async def get_provider(self, inami: str) -> cadastre_pb2.GetProviderResponse:
        """A provider's cadastre entry and the organisations it belongs to."""
        return await self._call(self._cadastre.GetProvider, cadastre_pb2.GetProviderRequest(inami=inami))

    async def list_providers(self) -> list[cadastre_pb2.CadastreProvider]:
        """Every provider of the cadastre (all pages)."""
        out: list[cadastre_pb2.CadastreProvider] = []
        token = ""
        while True:
            page = await self._call(
                self._cadastre.ListProviders,
                cadastre_pb2.ListProvidersRequest(page_size=1000, page_token=token),
            )
            out.extend(page.providers)
            token = page.next_page_token
            if not token:
                return out

    async def add_organisation(
        self,
        inami: str,
        *,
        name: str,
        kind: str = "medical_house",
        members: Sequence[str] = (),
        valid_from: dt.date = DEFAULT_VALID_FROM,
        valid_to: dt.date | None = None,
        wait: bool = False,
        wait_seconds: float = 60.0,
    ) -> cadastre_pb2.UpsertOrganisationResponse:
        """Write (create or update) a medical house or group practice with its member providers (members
        from ``valid_from``)."""
        try:
            org_kind = ORGANISATION_KINDS[kind.lower().replace("-", "_")]
        except KeyError:
            known = ", ".join(ORGANISATION_KINDS)
            raise ValueError(f"unknown organisation kind {kind!r} (one of {known})") from None
        since = _period(valid_from, valid_to)
        reply = await self._call(
            self._cadastre.UpsertOrganisation,
            cadastre_pb2.UpsertOrganisationRequest(
                organisation=cadastre_pb2.Organisation(
                    inami=inami,
                    kind=org_kind,
                    name=name,
                    validity=since,
                    members=[cadastre_pb2.OrganisationMember(inami=m, period=since) for m in members],
                )
            ),
        )
        if wait:
            sequence = reply.change_sequence or await self.cadastre_head()
            await self.wait_for_cadastre(sequence, seconds=wait_seconds)
        return reply

    async def cadastre_head(self) -> int:
        """The sequence of the latest change in eHealth's cadastre."""
        reply = await self._call(
            self._cadastre.ListCadastreChanges, cadastre_pb2.ListCadastreChangesRequest(page_size=1)
        )
        return int(reply.head_sequence)

    async def cadastre_positions(self) -> dict[str, CadastrePosition]:
        """How far each insurer has followed the cadastre."""
        out: dict[str, CadastrePosition] = {}
        for code, stub in sorted(self._reference.items()):
            reply = await self._call(
                stub.GetCadastrePosition, reference_data_service_pb2.GetCadastrePositionRequest()
            )
            out[code] = CadastrePosition(int(reply.applied_sequence), bool(reply.following))
        return out

    async def wait_for_cadastre(
        self, sequence: int, *, seconds: float = 60.0, poll: float = 0.2
    ) -> dict[str, CadastrePosition]:
        """Wait until every insurer has applied the cadastre change ``sequence`` (see
        :func:`wait_for_cadastre`)."""
        if not self._reference:
            raise MyCareNetError(
                grpc.StatusCode.FAILED_PRECONDITION, "NO_INSURERS", "the admin client was given no insurers"
            )
        return await wait_for_cadastre(self._reference, sequence, seconds=seconds, poll=poll)

    # --- eHealth: credentials and keys ------------------------------------------------------------

    async def register_credential(
        self,
        subject_id: str,
        *,
        kind: str = "person",
        public_key: Ed25519PublicKey | Ed25519PrivateKey | str | None = None,
        key_file: Path | None = None,
    ) -> str:
        """Bind a public key to a subject (as the eID does): ``public_key``, or the key in ``key_file``
        (generated there when missing). Returns the fingerprint. A mandated person (``kind="person"``,
        their NISS) needs one to log in under a mandate."""
        if isinstance(public_key, Ed25519PrivateKey):
            public_key = public_key.public_key()
        pem, _, _, _ = _key_material(public_key, key_file, False)
        if not pem:
            raise ValueError("give public_key or key_file")
        reply = await self._call(
            self._auth.RegisterCredential,
            auth_pb2.RegisterCredentialRequest(
                subject=auth_pb2.Subject(kind=subject_kind(kind), id=subject_id), public_key_pem=pem
            ),
        )
        return reply.fingerprint or fingerprint(pem)

    async def revoke_credential(
        self, subject_id: str, fingerprint_hex: str, *, kind: str = "provider"
    ) -> auth_pb2.RevokeCredentialResponse:
        """Revoke a subject's credential; the sessions opened with it end."""
        return await self._call(
            self._auth.RevokeCredential,
            auth_pb2.RevokeCredentialRequest(
                subject=auth_pb2.Subject(kind=subject_kind(kind), id=subject_id), fingerprint=fingerprint_hex
            ),
        )

    async def rotate_signing_key(self) -> auth_pb2.SigningKey:
        """Rotate eHealth's token signing key (logins in progress keep working)."""
        return (await self._call(self._auth.RotateSigningKey, auth_pb2.RotateSigningKeyRequest())).key

    # --- eHealth: relations and mandates for anyone --------------------------------------------------

    async def register_relation(
        self,
        provider_inami: str,
        patient_niss: str,
        *,
        start: dt.date | None = None,
        end: dt.date | None = None,
        proof: str = "eid",
    ) -> therapeutic_relation_pb2.TherapeuticRelation:
        """Register a therapeutic relation between any provider and patient (from ``start``, default today
        at eHealth)."""
        request = therapeutic_relation_pb2.RegisterRelationRequest(
            provider_inami=provider_inami,
            patient_niss=patient_niss,
            proof=relation_proof(proof),
            start_date=_date(start),
            end_date=_date(end),
        )
        return (await self._call(self._relations.RegisterRelation, request)).relation

    async def give_mandate(
        self,
        principal_inami: str,
        mandatee_id: str,
        services: Sequence[str],
        *,
        start: dt.date,
        end: dt.date | None = None,
        mandatee_kind: str = "person",
    ) -> mandate_pb2.CreateMandateResponse:
        """A mandate from any principal (see :meth:`mycarenet_sdk.Client.give_mandate`)."""
        mandate = mandate_pb2.Mandate(
            principal_inami=principal_inami,
            mandatee_kind=auth_pb2.SubjectKind.Name(subject_kind(mandatee_kind)),
            mandatee_id=mandatee_id,
            services=mandated_services(services),
            period=_period(start, end),
        )
        request = mandate_pb2.CreateMandateRequest(mandate=mandate)
        return await self._call(self._mandates.CreateMandate, request)

    # --- insurers: members ---------------------------------------------------------------------------

    async def add_patient(
        self,
        niss: str,
        *,
        insurer: str,
        first_name: str,
        last_name: str,
        birth_date: dt.date | None = None,
        sex: str | None = None,
        registration_number: str = "",
        affiliated_from: dt.date | None = None,
        affiliated_to: dt.date | None = None,
        chronic_condition: bool = False,
        medical_house_inami: str = "",
        medical_house_from: dt.date | None = None,
        insurability: Sequence[Insurability] = (),
        care_statuses: Sequence[tuple[str, dt.date, dt.date | None]] = (),
    ) -> membership_service_pb2.UpsertMembersResponse:
        """Write (create or update) a member at its insurer, affiliated from ``affiliated_from`` (default
        the birth date, at the earliest 1990-01-01). Birth date and sex default to what the NISS encodes;
        the registration number to ``M<niss>``. The hub learns the affiliation from the insurer's feed.
        ``insurability``: its periods and statuses (none: 110/110 on the affiliation); ``care_statuses``:
        (``CHRONIC_CONDITION``, ``PALLIATIVE`` or ``HOSPITALISED``, start, end or None)."""
        code = self._insurer(insurer)
        try:
            parsed = parse_niss(niss)
        except IdentifierError as error:
            raise MyCareNetError(grpc.StatusCode.INVALID_ARGUMENT, "NISS_INVALID", error.reason) from None
        birth = birth_date or parsed.birth_date or dt.date(parsed.birth_year, 1, 1)
        if sex is None:
            sex_value = SEXES[parsed.sex]
        else:
            try:
                sex_value = SEXES[Sex[sex.upper()]]
            except KeyError:
                raise ValueError(f"unknown sex {sex!r} (male, female or unknown)") from None
        start = affiliated_from or max(birth, dt.date(1990, 1, 1))
        house_since = medical_house_from or start
        member = membership_service_pb2.Member(
            patient=common_pb2.Patient(
                niss=parsed.value,
                first_name=first_name,
                last_name=last_name,
                birth_date=_date(birth),
                sex=sex_value,
                member=common_pb2.MemberNumber(
                    mutuality_code=code, registration_number=registration_number or f"M{parsed.value}"
                ),
            ),
            affiliations=[_period(start, affiliated_to)],
            chronic_condition=chronic_condition,
            medical_house_inami=medical_house_inami,
            medical_house_period=_period(house_since) if medical_house_inami else None,
            insurability=[period.proto() for period in insurability],
            care_statuses=[
                insurability_pb2.CareStatusPeriod(
                    kind=insurability_pb2.CareStatusKind.Value(f"CARE_STATUS_KIND_{kind.upper()}"),
                    period=_period(start, end),
                )
                for kind, start, end in care_statuses
            ],
        )
        return await self._call(
            self._members[code].UpsertMembers, membership_service_pb2.UpsertMembersRequest(members=[member])
        )

    async def get_member(self, niss: str, *, insurer: str) -> membership_service_pb2.Member:
        """A member as its insurer knows it."""
        code = self._insurer(insurer)
        request = membership_service_pb2.GetMemberRequest(patient=common_pb2.PatientSelector(niss=niss))
        return (await self._call(self._members[code].GetMember, request)).member

    # --- the sandbox: chaos on the running mesh ------------------------------------------------------

    async def inject_fault(self, request: chaos_pb2.InjectFaultRequest) -> chaos_pb2.Fault:
        """Inject one fault (see :meth:`kill` and the others); it heals by itself after its duration."""
        stub = chaos_pb2_grpc.ChaosServiceStub(self._sandbox())
        return (await self._call(stub.InjectFault, request)).fault

    async def process_fault(self, process: str, action: str, seconds: float = 0.0) -> chaos_pb2.Fault:
        """``action`` on ``process`` (``hub``, ``ehealth``, ``oa-300`` …): ``kill`` (SIGKILL, down for
        ``seconds``), ``pause`` (SIGSTOP for ``seconds``) or ``restart`` (graceful stop, down for
        ``seconds``); then the supervisor starts it again."""
        if action not in PROCESS_ACTIONS:
            raise ValueError(f"unknown action {action!r} (one of {', '.join(PROCESS_ACTIONS)})")
        fault = chaos_pb2.ProcessFault(process=process, action=PROCESS_ACTIONS[action])
        return await self.inject_fault(
            chaos_pb2.InjectFaultRequest(process=fault, duration_ms=round(seconds * 1000))
        )

    async def link_fault(
        self,
        source: str,
        target: str,
        seconds: float,
        *,
        latency_ms: int = 0,
        jitter_ms: int = 0,
        error_percent: int = 0,
        error_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
    ) -> chaos_pb2.Fault:
        """Latency (``latency_ms`` + up to ``jitter_ms``) and/or ``error_percent`` % of the calls failing
        with ``error_code`` on the calls from ``source`` to process ``target``, for ``seconds``."""
        link = chaos_pb2.LinkFault(
            source=source,
            target=target,
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            error_percent=error_percent,
            error_code=error_code.value[0] if error_percent else 0,
        )
        return await self.inject_fault(
            chaos_pb2.InjectFaultRequest(link=link, duration_ms=round(seconds * 1000))
        )

    async def list_faults(self) -> list[chaos_pb2.Fault]:
        """The active faults, oldest first, each with its remaining time."""
        stub = chaos_pb2_grpc.ChaosServiceStub(self._sandbox())
        return list((await self._call(stub.ListFaults, chaos_pb2.ListFaultsRequest())).faults)

    async def clear_faults(self, fault_id: str | None = None) -> list[str]:
        """Heal fault ``fault_id`` now, or every active fault with None; the ids healed."""
        stub = chaos_pb2_grpc.ChaosServiceStub(self._sandbox())
        request = chaos_pb2.ClearFaultsRequest(id=fault_id or "", all=fault_id is None)
        return list((await self._call(stub.ClearFaults, request)).cleared_ids)

    # --- the sandbox: the test clock ------------------------------------------------------------------

    async def _clock_call(self, fn: Callable[..., Awaitable[Any]], request: Any) -> ClockState:
        try:
            answer = await fn(request, timeout=max(self.timeout, CLOCK_TIMEOUT))
        except grpc.RpcError as error:
            raise MyCareNetError.from_rpc_error(error) from None
        return ClockState.from_proto(answer.clock)

    async def clock(self) -> ClockState:
        """The mesh clock, and the date each process observes."""
        stub = clock_pb2_grpc.SandboxClockServiceStub(self._sandbox())
        return await self._clock_call(stub.GetClock, clock_pb2.GetClockRequest())

    async def set_clock(self, day: dt.date) -> ClockState:
        """Move the mesh to ``day`` (the time of day keeps running); returns once every process observes it
        and every insurer ran the year ends it went over. FAILED_PRECONDITION CLOCK_BACKWARDS before the
        mesh date."""
        stub = clock_pb2_grpc.SandboxClockServiceStub(self._sandbox())
        request = clock_pb2.SetClockRequest(date=dates.to_proto(day))
        return await self._clock_call(stub.SetClock, request)

    async def advance_clock(self, days: int) -> ClockState:
        """Move the mesh forward by ``days`` (as :meth:`set_clock`)."""
        stub = clock_pb2_grpc.SandboxClockServiceStub(self._sandbox())
        return await self._clock_call(stub.AdvanceClock, clock_pb2.AdvanceClockRequest(days=days))


PROCESS_ACTIONS = {
    "kill": chaos_pb2.PROCESS_ACTION_KILL,
    "pause": chaos_pb2.PROCESS_ACTION_PAUSE,
    "restart": chaos_pb2.PROCESS_ACTION_RESTART,
}


def connect_admin(
    *,
    ehealth: str,
    insurers: Mapping[str, str] | None = None,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    timeout: float = 30.0,
    sandbox: str | None = None,
) -> AdminClient:
    """The administrator's client of eHealth, of the insurers (``{"100": "host:port", ...}``) and of a local
    cluster's ``sandbox`` server; mutual TLS with the ``admin`` certificate when ``ca``, ``cert`` and ``key``
    are given. Use ``async with``."""
    credentials = client_credentials(ca, cert, key) if ca and cert and key else None
    return AdminClient(
        ehealth=ehealth, insurers=insurers, credentials=credentials, timeout=timeout, sandbox=sandbox
    )


def admin_from_cluster(description: Path | Mapping[str, Any], *, timeout: float = 30.0) -> AdminClient:
    """An admin client of a local cluster, from its ``cluster.json`` (path or loaded)."""
    import json

    desc: Mapping[str, Any] = (
        json.loads(Path(description).read_text()) if isinstance(description, (str, Path)) else description
    )
    ehealth = next(str(p["address"]) for p in desc["processes"] if p["role"] == "ehealth")
    insurers = {str(p["oa_code"]): str(p["address"]) for p in desc["processes"] if p["role"] == "oa"}
    tls = desc.get("tls") or {}
    return connect_admin(
        ehealth=ehealth,
        insurers=insurers,
        ca=Path(tls["ca"]) if tls else None,
        cert=Path(tls["admin_cert"]) if tls else None,
        key=Path(tls["admin_key"]) if tls else None,
        timeout=timeout,
        sandbox=(desc.get("sandbox") or {}).get("address"),
    )


__all__ = [
    "AdminClient",
    "CadastrePosition",
    "ClockState",
    "ProcessClock",
    "ProviderAdded",
    "admin_from_cluster",
    "connect_admin",
    "wait_for_cadastre",
]
