"""A whole mesh in process, for integration tests: eHealth + N OA nodes + the hub, on port 0 / free ports
(eHealth follows the OA nodes' holder-change feeds, so notifications move the DMG relations),
seeded through their own gRPC services (providers with Ed25519 keys, members, reference data, enrolments,
therapeutic relations), with a helper to log in by signing an eHealth challenge.

Usage::

    async with running_mesh(tmp_path) as mesh:
        token = await mesh.login(mesh.people["gp_a"])
        answer = await mesh.dmg.ConsultDmg(request, metadata=bearer(token), timeout=5)

Every call is made the way the trust model (``mycarenet_core/trust.toml``) says, with the certificate kind
declared on the plaintext channels: provider software (``client``) logs in and calls the hub; what stands in
for the authentic sources (providers, credentials, relations, mandates, members, reference data) is written
by the ``admin``; a direct enrolment at an OA stands in for the hub (``hub``); an insurer delivers its
mailbox messages as ``oa-XXX``.

Later work (CLI, cluster tests) reuses :func:`running_mesh` and :class:`Mesh`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import socket
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ehealth.app import EhealthApp
from hub.app import HubApp, HubTuning
from hub.patient_list import ListPolicy
from hub.throttle import ThrottleConfig
from hub.upstream import CallPolicy
from mycarenet_core.channels import open_channel
from mycarenet_core.clock import FixedClock
from mycarenet_core.dates import to_proto
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_service_pb2_grpc, mailbox_service_pb2_grpc
from mycarenet_core.gen.mycarenet.ehealth.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    cadastre_pb2,
    cadastre_pb2_grpc,
    mandate_pb2,
    mandate_pb2_grpc,
    therapeutic_relation_pb2_grpc,
)
from mycarenet_core.gen.mycarenet.ehealth.v1 import (
    therapeutic_relation_pb2 as tr,
)
from mycarenet_core.gen.mycarenet.hub.v1 import mailbox_intake_service_pb2_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import (
    context_pb2,
    membership_service_pb2_grpc,
    oa_dmg_service_pb2_grpc,
    reference_data_service_pb2_grpc,
)
from mycarenet_core.gen.mycarenet.oa.v1 import (
    membership_service_pb2 as ms,
)
from mycarenet_core.gen.mycarenet.oa.v1 import (
    oa_dmg_service_pb2 as oa_pb,
)
from mycarenet_core.gen.mycarenet.oa.v1 import (
    reference_data_service_pb2 as rd,
)
from mycarenet_core.identifiers import INSURER_CODES, Profession, make_inami, make_niss, parse_inami
from mycarenet_core.telemetry import Telemetry
from oa_node.app import OaNodeApp

TODAY = dt.date(2025, 3, 4)
NOW = dt.datetime(2025, 3, 4, 9, 0, tzinfo=dt.UTC)
D = dt.date

ROLE: dict[str, common_pb2.ProviderRole.ValueType] = {
    "GENERAL_PRACTITIONER": common_pb2.PROVIDER_ROLE_GENERAL_PRACTITIONER,
    "GP_IN_TRAINING": common_pb2.PROVIDER_ROLE_GP_IN_TRAINING,
    "GP_NON_ACCREDITED": common_pb2.PROVIDER_ROLE_GP_NON_ACCREDITED,
    "SPECIALIST": common_pb2.PROVIDER_ROLE_SPECIALIST,
    "DENTIST": common_pb2.PROVIDER_ROLE_DENTIST,
    "PHARMACIST": common_pb2.PROVIDER_ROLE_PHARMACIST,
    "PHYSIOTHERAPIST": common_pb2.PROVIDER_ROLE_PHYSIOTHERAPIST,
}


PHARMACY = make_inami(Profession.ORGANISATION, 50_007, "300")
"""The pharmacy whose session the pharmacist opens (seed 003 §8.2.2.1): a pharmacist consults only in it."""
PHARMACY_KEY = Ed25519PrivateKey.generate()


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


_GIVEN: set[int] = set()


def free_port() -> int:
    """A free port below the kernel's ephemeral range (32768 and up): a port the mesh binds later must not be
    handed out meanwhile to an outgoing connection or a port-0 listener (a bind failed that way once)."""
    for _ in range(200):
        port = random.randrange(20000, 32000)
        if port in _GIVEN:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


@dataclass
class Person:
    """A provider (or a mandated person) with the private key it authenticates with."""

    name: str
    inami: str
    niss: str
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate, repr=False)
    supervisor: str = ""

    @property
    def public_pem(self) -> str:
        return (
            self.key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    @property
    def role(self) -> common_pb2.ProviderRole.ValueType:
        return ROLE[parse_inami(self.inami).role.name]


def default_people() -> dict[str, Person]:
    gp_a = make_inami(Profession.PHYSICIAN, 10001, "004")
    people = [
        Person("gp_a", gp_a, make_niss(D(1970, 1, 1), 11)),
        Person("gp_b", make_inami(Profession.PHYSICIAN, 10002, "003"), make_niss(D(1971, 2, 2), 13)),
        Person("gp_c", make_inami(Profession.PHYSICIAN, 10003, "004"), make_niss(D(1972, 3, 3), 15)),
        Person(
            "trainee",
            make_inami(Profession.PHYSICIAN, 10004, "005"),
            make_niss(D(1995, 4, 4), 17),
            supervisor=gp_a,
        ),
        Person("specialist", make_inami(Profession.PHYSICIAN, 10005, "580"), make_niss(D(1973, 5, 5), 19)),
        Person("dentist", make_inami(Profession.DENTIST, 10006, "000"), make_niss(D(1974, 6, 6), 21)),
        Person("pharmacist", make_inami(Profession.PHARMACIST, 10007, "000"), make_niss(D(1975, 7, 7), 23)),
        Person(
            "gp_nonaccredited", make_inami(Profession.PHYSICIAN, 10008, "001"), make_niss(D(1976, 8, 8), 25)
        ),
    ]
    return {p.name: p for p in people}


@dataclass(frozen=True)
class MemberSpec:
    """A patient: NISS, registration number and affiliation periods per insurer."""

    name: str
    niss: str
    periods: dict[str, list[tuple[dt.date, dt.date | None]]]
    registration: str = ""


def default_members(insurers: Sequence[str]) -> dict[str, MemberSpec]:
    """One patient per insurer ("p100", "p200", ...) and a "mover": 100 until 2024, then 200."""
    out: dict[str, MemberSpec] = {}
    for i, code in enumerate(insurers):
        niss = make_niss(D(1980 + i, 1 + i, 10), 101 + 2 * i)
        out[f"p{code}"] = MemberSpec(f"p{code}", niss, {code: [(D(2000, 1, 1), None)]}, f"R{code}0001")
    if {"100", "200"} <= set(insurers):
        out["mover"] = MemberSpec(
            "mover",
            make_niss(D(1990, 6, 15), 201),
            {"100": [(D(2005, 1, 1), D(2024, 12, 31))], "200": [(D(2025, 1, 1), None)]},
            "MOV0001",
        )
    return out


class Mesh:
    """The running mesh and its stubs. Built and closed by :func:`running_mesh`."""

    def __init__(self, tmp: Path, insurers: Sequence[str], clock: FixedClock) -> None:
        self.tmp = tmp
        self.insurers = list(insurers)
        self.clock = clock
        self.people = default_people()
        self.members = default_members(insurers)
        self.ehealth: EhealthApp | None = None
        self.oas: dict[str, OaNodeApp] = {}
        self.oa_ports = {code: free_port() for code in insurers}
        self.hub: HubApp | None = None
        self.hub_port = 0
        self._channels: list[grpc.aio.Channel] = []
        self._ehealth_channels: dict[str, grpc.aio.Channel] = {}
        self._intakes: dict[str, mailbox_intake_service_pb2_grpc.MailboxIntakeServiceAsyncStub] = {}
        self.telemetry: Telemetry | None = None

    # --- plumbing ------------------------------------------------------------------------------------

    def db(self, name: str) -> str:
        return f"sqlite+aiosqlite:///{self.tmp / (name + '.db')}"

    def channel(self, port: int, identity: str = "client") -> grpc.aio.Channel:
        """A plaintext channel declaring the certificate kind ``identity`` (client, admin, hub, oa-100...).
        Its connections are its own: a test's channel never inherits the reconnection backoff of one that
        a process of the mesh opened to the same address before it listened (eHealth's holder feeds start
        before the OA nodes)."""
        channel = open_channel(
            f"127.0.0.1:{port}", identity=identity, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        self._channels.append(channel)
        return channel

    def ehealth_as(self, identity: str) -> grpc.aio.Channel:
        """One channel to eHealth per certificate kind (kept across an eHealth restart on the same port)."""
        channel = self._ehealth_channels.get(identity)
        if channel is None:
            assert self.ehealth is not None
            assert self.ehealth.port is not None
            channel = self._ehealth_channels[identity] = self.channel(self.ehealth.port, identity)
        return channel

    @property
    def ehealth_channel(self) -> grpc.aio.Channel:
        """eHealth as provider software sees it (login, logout, a provider's own calls)."""
        return self.ehealth_as("client")

    @property
    def ehealth_admin(self) -> grpc.aio.Channel:
        """eHealth as the sandbox administrator sees it (the authentic sources' writes)."""
        return self.ehealth_as("admin")

    def intake_for(self, code: str) -> mailbox_intake_service_pb2_grpc.MailboxIntakeServiceAsyncStub:
        """The hub's mailbox intake as insurer node ``oa-<code>`` calls it."""
        if code not in self._intakes:
            channel = self.channel(self.hub_port, f"oa-{code}")
            self._intakes[code] = mailbox_intake_service_pb2_grpc.MailboxIntakeServiceStub(channel)
        return self._intakes[code]

    async def start_ehealth(self, port: int = 0) -> EhealthApp:
        """eHealth, following every insurer's holder-change feed (the OA ports are known before the OAs
        start): that is how the DMG relation moves."""
        self.ehealth = await EhealthApp.create(
            database_url=self.db("ehealth"),
            clock=self.clock,
            telemetry=self.telemetry,
            oa_targets={code: f"127.0.0.1:{p}" for code, p in self.oa_ports.items()},
        )
        await self.ehealth.start(f"127.0.0.1:{port}")
        return self.ehealth

    async def start_oa(self, code: str) -> OaNodeApp:
        app = await OaNodeApp.create(
            insurer_code=code,
            database_url=self.db(f"oa-{code}"),
            clock=self.clock,
            hub_intake_target=f"127.0.0.1:{self.hub_port}",
            relay_interval=0.1,
            telemetry=self.telemetry,
        )
        await app.start(f"127.0.0.1:{self.oa_ports[code]}")
        self.oas[code] = app
        return app

    async def stop_oa(self, code: str) -> None:
        await self.oas.pop(code).stop(0)

    async def start_hub(self, throttle: ThrottleConfig, tuning: HubTuning) -> HubApp:
        assert self.ehealth is not None
        self.hub = await HubApp.create(
            database_url=self.db("hub"),
            clock=self.clock,
            ehealth_target=f"127.0.0.1:{self.ehealth.port}",
            oa_targets={c: f"127.0.0.1:{p}" for c, p in self.oa_ports.items()},
            throttle=throttle,
            tuning=tuning,
            telemetry=self.telemetry,
        )
        self.hub_port = await self.hub.start(f"127.0.0.1:{self.hub_port or free_port()}")
        hub_channel = self.channel(self.hub_port)
        self.dmg = dmg_service_pb2_grpc.DmgServiceStub(hub_channel)
        self.mailbox = mailbox_service_pb2_grpc.MailboxServiceStub(hub_channel)
        return self.hub

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close(None)
        if self.hub is not None:
            await self.hub.stop(0)
        for code in list(self.oas):
            await self.stop_oa(code)
        if self.ehealth is not None:
            await self.ehealth.stop(0)

    # --- seeding -------------------------------------------------------------------------------------

    async def seed_ehealth(self) -> None:
        cadastre = cadastre_pb2_grpc.CadastreServiceStub(self.ehealth_admin)
        since = common_pb2.Period(start=to_proto(D(2000, 1, 1)))
        await self._seed_people(cadastre, since)
        # The pharmacy of the pharmacist, with its organisation key (seed 003 §8.2.2.1).
        await cadastre.UpsertOrganisation(
            cadastre_pb2.UpsertOrganisationRequest(
                organisation=cadastre_pb2.Organisation(
                    inami=PHARMACY,
                    kind=cadastre_pb2.ORGANISATION_KIND_PHARMACY,
                    name="Pharmacie Test",
                    validity=since,
                    members=[
                        cadastre_pb2.OrganisationMember(inami=self.people["pharmacist"].inami, period=since)
                    ],
                )
            ),
            timeout=10,
        )
        await auth_pb2_grpc.AuthServiceStub(self.ehealth_admin).RegisterCredential(
            auth_pb2.RegisterCredentialRequest(
                subject=auth_pb2.Subject(kind=auth_pb2.SUBJECT_KIND_ORGANISATION, id=PHARMACY),
                public_key_pem=PHARMACY_KEY.public_key()
                .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
                .decode(),
            ),
            timeout=10,
        )

    async def _seed_people(
        self, cadastre: cadastre_pb2_grpc.CadastreServiceStub, since: common_pb2.Period
    ) -> None:
        for p in self.people.values():
            await cadastre.UpsertProvider(
                cadastre_pb2.UpsertProviderRequest(
                    provider=cadastre_pb2.CadastreProvider(
                        inami=p.inami,
                        niss=p.niss,
                        first_name=p.name,
                        last_name="Test",
                        validity=since,
                        supervisor_inami=p.supervisor,
                        public_key_pem=p.public_pem,
                    )
                ),
                timeout=10,
            )

    async def seed_oa(self, code: str) -> None:
        channel = self.channel(self.oa_ports[code], "admin")
        ref = reference_data_service_pb2_grpc.ReferenceDataServiceStub(channel)
        await ref.UpsertProviders(
            rd.UpsertProvidersRequest(
                providers=[
                    rd.KnownProvider(
                        provider=common_pb2.Provider(
                            inami=p.inami, role=p.role, first_name=p.name, last_name="Test"
                        ),
                        supervisor_inami=p.supervisor,
                    )
                    for p in self.people.values()
                ]
            ),
            timeout=10,
        )
        await ref.UpsertOrganisations(
            rd.UpsertOrganisationsRequest(
                organisations=[
                    rd.KnownOrganisation(
                        organisation=common_pb2.Provider(
                            inami=PHARMACY, role=common_pb2.PROVIDER_ROLE_PHARMACY, last_name="Pharmacie Test"
                        ),
                        members=[
                            rd.OrganisationMembership(
                                member_inami=self.people["pharmacist"].inami,
                                period=common_pb2.Period(start=to_proto(D(2000, 1, 1))),
                            )
                        ],
                    )
                ]
            ),
            timeout=10,
        )
        await self.upsert_members(code, [m for m in self.members.values() if code in m.periods])
        for name in ("gp_a", "gp_b"):
            await self.enrol_direct(code, self.people[name])

    async def upsert_members(self, code: str, members: Iterable[MemberSpec]) -> None:
        """Upsert members at one OA and wait until the hub's routing index has the change."""
        stub = membership_service_pb2_grpc.MembershipServiceStub(self.channel(self.oa_ports[code], "admin"))
        answer = await stub.UpsertMembers(
            ms.UpsertMembersRequest(
                members=[
                    ms.Member(
                        patient=common_pb2.Patient(
                            niss=m.niss,
                            first_name=m.name,
                            last_name="Patient",
                            member=common_pb2.MemberNumber(
                                mutuality_code=code, registration_number=m.registration or m.name.upper()[:13]
                            ),
                        ),
                        affiliations=[
                            common_pb2.Period(start=to_proto(s), end=to_proto(e)) for s, e in m.periods[code]
                        ],
                    )
                    for m in members
                ]
            ),
            timeout=10,
        )
        if self.hub is not None:  # an in-process hub (a hub of its own process is waited for otherwise)
            await self.hub.followers[code].wait_for(answer.last_sequence, 10)

    async def enrol_direct(self, code: str, person: Person) -> None:
        """Enrol a GP at one OA directly (seeding), from 2020: the call the hub makes, as the hub."""
        stub = oa_dmg_service_pb2_grpc.OaDmgServiceStub(self.channel(self.oa_ports[code], "hub"))
        context = context_pb2.RequestContext(
            requester_inami=person.inami,
            requester_role=person.role,
            executor_id=person.inami,
            executor_kind="SUBJECT_KIND_PROVIDER",
            requester_reference=f"seed-enrol-{person.name}",
            processing_date=to_proto(D(2020, 1, 1)),
        )
        await stub.EnrolDmg(
            oa_pb.EnrolDmgRequest(
                context=context,
                bank_account=common_pb2.BankAccount(
                    iban="BE68539007547034", bic="GEBABEBB", holder_name=person.name
                ),
                start_date=to_proto(D(2020, 1, 1)),
            ),
            timeout=10,
        )

    async def relate(
        self, person: Person, member: MemberSpec, start: dt.date | None = None
    ) -> tr.TherapeuticRelation:
        """Register a relation at eHealth (as the admin) and wait until the hub's relation cache has it."""
        stub = therapeutic_relation_pb2_grpc.TherapeuticRelationServiceStub(self.ehealth_admin)
        answer = await stub.RegisterRelation(
            tr.RegisterRelationRequest(
                provider_inami=person.inami,
                patient_niss=member.niss,
                proof=tr.RELATION_PROOF_EID_READ,
                start_date=to_proto(start or D(2020, 1, 1)),
            ),
            timeout=10,
        )
        await self.hub_has_relations()
        return answer.relation

    async def hub_has_relations(self, within: float = 10) -> None:
        """Wait until the hub's relation cache has applied every change eHealth's register had now."""
        if self.hub is None:
            return
        stub = therapeutic_relation_pb2_grpc.TherapeuticRelationServiceStub(self.ehealth_admin)
        head = await stub.ListRelationChanges(
            tr.ListRelationChangesRequest(after_sequence=self.hub.relations.sequence, page_size=1), timeout=10
        )
        await self.hub.relations.wait_for(head.head_sequence, within)

    async def relate_all(self, people: Iterable[str]) -> None:
        for name in people:
            for member in self.members.values():
                await self.relate(self.people[name], member)

    async def mandate(
        self, principal: Person, person_niss: str, services: Sequence[mandate_pb2.MandatedService.ValueType]
    ) -> str:
        stub = mandate_pb2_grpc.MandateServiceStub(self.ehealth_admin)
        answer = await stub.CreateMandate(
            mandate_pb2.CreateMandateRequest(
                mandate=mandate_pb2.Mandate(
                    principal_inami=principal.inami,
                    mandatee_kind="SUBJECT_KIND_PERSON",
                    mandatee_id=person_niss,
                    services=services,
                    period=common_pb2.Period(start=to_proto(D(2024, 1, 1))),
                )
            ),
            timeout=10,
        )
        return answer.mandate.mandate_id

    # --- sessions ------------------------------------------------------------------------------------

    async def login(
        self,
        person: Person,
        *,
        kind: auth_pb2.SubjectKind.ValueType = auth_pb2.SUBJECT_KIND_PROVIDER,
        subject_id: str | None = None,
        principal: str = "",
        audience: str = "",
        lifetime_seconds: int = 0,
    ) -> str:
        """A session token: sign the eHealth challenge with the person's private key."""
        auth = auth_pb2_grpc.AuthServiceStub(self.ehealth_channel)
        challenge = await auth.CreateChallenge(
            auth_pb2.CreateChallengeRequest(
                subject=auth_pb2.Subject(kind=kind, id=subject_id or person.inami)
            ),
            timeout=10,
        )
        session = await auth.CreateSession(
            auth_pb2.CreateSessionRequest(
                challenge_id=challenge.challenge_id,
                signature=person.key.sign(challenge.nonce),
                audience=audience,
                lifetime_seconds=lifetime_seconds,
                principal_inami=principal,
            ),
            timeout=10,
        )
        return session.token

    async def login_pharmacy(self) -> str:
        """The pharmacy's session, opened by its pharmacist (the pharmacy's key, then the pharmacist's
        signature of a second challenge, as the eID does: seed 003 §8.2.2.1-3)."""
        auth = auth_pb2_grpc.AuthServiceStub(self.ehealth_channel)
        pharmacist = self.people["pharmacist"]
        org = await auth.CreateChallenge(
            auth_pb2.CreateChallengeRequest(
                subject=auth_pb2.Subject(kind=auth_pb2.SUBJECT_KIND_ORGANISATION, id=PHARMACY)
            ),
            timeout=10,
        )
        user = await auth.CreateChallenge(
            auth_pb2.CreateChallengeRequest(
                subject=auth_pb2.Subject(kind=auth_pb2.SUBJECT_KIND_PROVIDER, id=pharmacist.inami)
            ),
            timeout=10,
        )
        session = await auth.CreateSession(
            auth_pb2.CreateSessionRequest(
                challenge_id=org.challenge_id,
                signature=PHARMACY_KEY.sign(org.nonce),
                user_challenge_id=user.challenge_id,
                user_signature=pharmacist.key.sign(user.nonce),
            ),
            timeout=10,
        )
        return session.token

    async def register_person(self, person: Person) -> str:
        """Register a person (no INAMI, e.g. a secretary) with its key, to act under a mandate (the admin
        binds a key to a person, as the eID does); the key's fingerprint."""
        auth = auth_pb2_grpc.AuthServiceStub(self.ehealth_admin)
        answer = await auth.RegisterCredential(
            auth_pb2.RegisterCredentialRequest(
                subject=auth_pb2.Subject(kind=auth_pb2.SUBJECT_KIND_PERSON, id=person.niss),
                public_key_pem=person.public_pem,
            ),
            timeout=10,
        )
        return answer.fingerprint

    async def logout(self, token: str) -> None:
        auth = auth_pb2_grpc.AuthServiceStub(self.ehealth_channel)
        await auth.Logout(auth_pb2.LogoutRequest(token=token), timeout=10)


GENEROUS = ThrottleConfig(rate=50, burst=500)  # tests other than throttling never meet it
FAST = HubTuning(
    calls=CallPolicy(max_deadline=5.0, default_deadline=5.0, connect_timeout=0.5, breaker_cooldown=1.0),
    lists=ListPolicy(retry_window=8.0, initial_backoff=0.1, max_backoff=0.5),
    key_refresh_seconds=0.0,
)


@contextlib.asynccontextmanager
async def running_mesh(
    tmp: Path,
    *,
    insurers: Sequence[str] = INSURER_CODES,
    throttle: ThrottleConfig | None = None,
    tuning: HubTuning = FAST,
    relations_for: Sequence[str] = (
        "gp_a",
        "gp_b",
        "trainee",
        "specialist",
        "dentist",
        "pharmacist",
        "gp_nonaccredited",
    ),
    telemetry: Telemetry | None = None,
) -> AsyncIterator[Mesh]:
    """Start eHealth, the hub and one OA node per insurer; seed them; stop everything on exit.

    With ``telemetry``, every app of the mesh is instrumented with it (one set of providers)."""
    mesh = Mesh(tmp, insurers, FixedClock(NOW))
    mesh.telemetry = telemetry
    try:
        await mesh.start_ehealth()
        await mesh.seed_ehealth()
        await mesh.start_hub(throttle or GENEROUS, tuning)
        for code in insurers:
            await mesh.start_oa(code)
        for code in insurers:
            await mesh.seed_oa(code)
        await mesh.relate_all(relations_for)
        assert mesh.hub is not None
        await mesh.hub.wait_until_synced(10)
        yield mesh
    finally:
        await mesh.close()
