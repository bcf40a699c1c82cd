"""A small mesh under mutual TLS, as the cluster runs it: eHealth, the hub and insurers 100 and 200, and the
sandbox's server (the test clock, chaos), each with its own certificate from a private CA, and one channel per
kind of caller (every certificate of the trust table, a certificate the CA signed for an unknown party, and
no certificate at all).

Used by the authorization matrix test: every RPC of every service x every kind of caller.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from mycarenet_cluster import chaos, pki, sandbox, testclock
from mycarenet_cluster.supervisor import ClusterConfig

from ehealth.app import EhealthApp
from hub.app import HubApp, HubTuning
from hub.throttle import ThrottleConfig
from hub.upstream import CallPolicy
from mycarenet_core.channels import client_credentials, open_channel, server_credentials
from mycarenet_core.clock import FixedClock, OffsetClock
from mycarenet_core.dates import to_proto
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    cadastre_pb2,
    cadastre_pb2_grpc,
    mandate_pb2,
    mandate_pb2_grpc,
)
from mycarenet_core.identifiers import Profession, make_inami, make_niss
from mycarenet_core.server import MeshServer
from oa_node.app import OaNodeApp

NOW = dt.datetime(2025, 3, 4, 9, 0, tzinfo=dt.UTC)
D = dt.date
INSURERS = ("100", "200")
Service: TypeAlias = mandate_pb2.MandatedService.ValueType
# Every certificate the trust table knows, plus one the CA signed for a party it does not know.
IDENTITIES = ("client", "hub", "ehealth", "oa-100", "oa-200", "backoffice", "admin", "intruder")


@dataclass
class Person:
    """A provider or a person with the private key it logs in with."""

    name: str
    subject: str  # INAMI for providers, NISS for persons
    kind: auth_pb2.SubjectKind.ValueType = auth_pb2.SUBJECT_KIND_PROVIDER
    niss: str = ""
    supervisor: str = ""
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate, repr=False)

    @property
    def public_pem(self) -> str:
        return (
            self.key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )


def people() -> dict[str, Person]:
    gp = make_inami(Profession.PHYSICIAN, 20001, "004")
    out = [
        Person("gp", gp, niss=make_niss(D(1970, 1, 1), 11)),
        Person("trainee", make_inami(Profession.PHYSICIAN, 20002, "005"), niss=make_niss(D(1990, 1, 1), 13)),
        Person(
            "specialist", make_inami(Profession.PHYSICIAN, 20003, "580"), niss=make_niss(D(1971, 1, 1), 15)
        ),
        Person("dentist", make_inami(Profession.DENTIST, 20004, "000"), niss=make_niss(D(1972, 1, 1), 17)),
        Person(
            "pharmacist", make_inami(Profession.PHARMACIST, 20005, "000"), niss=make_niss(D(1973, 1, 1), 19)
        ),
        Person("secretary", make_niss(D(1980, 5, 5), 21), kind=auth_pb2.SUBJECT_KIND_PERSON),
        # The pharmacist's pharmacy: its session, opened by the pharmacist (seed 003 §8.2.2.1-3).
        Person(
            "pharmacy",
            make_inami(Profession.ORGANISATION, 20006, "300"),
            kind=auth_pb2.SUBJECT_KIND_ORGANISATION,
        ),
    ]
    out[1].supervisor = gp
    return {p.name: p for p in out}


@dataclass
class TlsMesh:
    """The running mesh: addresses, one channel per caller identity, and the people's session tokens."""

    pki: Path
    addresses: dict[str, str]
    people: dict[str, Person]
    tokens: dict[str, str] = field(default_factory=dict)
    channels: dict[tuple[str, str], grpc.aio.Channel] = field(default_factory=dict)

    def credentials(self, identity: str | None) -> grpc.ChannelCredentials:
        ca = self.pki / "ca.pem"
        if identity is None:  # TLS, but no client certificate
            return grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
        ident = pki.ensure_identity(self.pki, identity)
        return client_credentials(ident.ca, ident.cert, ident.key)

    def channel(self, process: str, identity: str | None) -> grpc.aio.Channel:
        key = (process, identity or "-")
        if key not in self.channels:
            self.channels[key] = open_channel(self.addresses[process], credentials=self.credentials(identity))
        return self.channels[key]

    async def login(self, person: Person, principal: str = "", user: Person | None = None) -> str:
        """A session of ``person`` (under ``principal``'s mandate when given; opened by ``user`` for a
        pharmacy, who signs a second challenge)."""
        auth = auth_pb2_grpc.AuthServiceStub(self.channel("ehealth", "client"))
        challenge = await auth.CreateChallenge(
            auth_pb2.CreateChallengeRequest(subject=auth_pb2.Subject(kind=person.kind, id=person.subject)),
            timeout=10,
        )
        request = auth_pb2.CreateSessionRequest(
            challenge_id=challenge.challenge_id,
            signature=person.key.sign(challenge.nonce),
            principal_inami=principal,
        )
        if user is not None:
            second = await auth.CreateChallenge(
                auth_pb2.CreateChallengeRequest(subject=auth_pb2.Subject(kind=user.kind, id=user.subject)),
                timeout=10,
            )
            request.user_challenge_id = second.challenge_id
            request.user_signature = user.key.sign(second.nonce)
        session = await auth.CreateSession(request, timeout=10)
        return session.token

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close(None)


async def seed(mesh: TlsMesh, mandated_services: Sequence[Service]) -> None:
    """Providers and the secretary's credential through the administrator; a mandate the GP gives the
    secretary for ``mandated_services``; a session for each person (and one under the mandate)."""
    admin = mesh.channel("ehealth", "admin")
    cadastre = cadastre_pb2_grpc.CadastreServiceStub(admin)
    auth = auth_pb2_grpc.AuthServiceStub(admin)
    since = common_pb2.Period(start=to_proto(D(2000, 1, 1)))
    for person in mesh.people.values():
        if person.kind == auth_pb2.SUBJECT_KIND_PROVIDER:
            await cadastre.UpsertProvider(
                cadastre_pb2.UpsertProviderRequest(
                    provider=cadastre_pb2.CadastreProvider(
                        inami=person.subject,
                        niss=person.niss,
                        first_name=person.name,
                        last_name="Matrix",
                        validity=since,
                        supervisor_inami=person.supervisor,
                        public_key_pem=person.public_pem,
                    )
                ),
                timeout=10,
            )
        else:
            if person.kind == auth_pb2.SUBJECT_KIND_ORGANISATION:
                await cadastre.UpsertOrganisation(
                    cadastre_pb2.UpsertOrganisationRequest(
                        organisation=cadastre_pb2.Organisation(
                            inami=person.subject,
                            kind=cadastre_pb2.ORGANISATION_KIND_PHARMACY,
                            name=person.name,
                            validity=since,
                            members=[
                                cadastre_pb2.OrganisationMember(
                                    inami=mesh.people["pharmacist"].subject, period=since
                                )
                            ],
                        )
                    ),
                    timeout=10,
                )
            await auth.RegisterCredential(
                auth_pb2.RegisterCredentialRequest(
                    subject=auth_pb2.Subject(kind=person.kind, id=person.subject),
                    public_key_pem=person.public_pem,
                ),
                timeout=10,
            )
    gp, secretary = mesh.people["gp"], mesh.people["secretary"]
    mandates = mandate_pb2_grpc.MandateServiceStub(mesh.channel("ehealth", "admin"))
    await mandates.CreateMandate(
        mandate_pb2.CreateMandateRequest(
            mandate=mandate_pb2.Mandate(
                principal_inami=gp.subject,
                mandatee_kind="SUBJECT_KIND_PERSON",
                mandatee_id=secretary.subject,
                services=mandated_services,
                period=common_pb2.Period(start=to_proto(D(2024, 1, 1))),
            )
        ),
        timeout=10,
    )
    for person in mesh.people.values():
        user = mesh.people["pharmacist"] if person.kind == auth_pb2.SUBJECT_KIND_ORGANISATION else None
        mesh.tokens[person.name] = await mesh.login(person, user=user)
    mesh.tokens["secretary_for_gp"] = await mesh.login(secretary, principal=gp.subject)


FAST = HubTuning(
    calls=CallPolicy(max_deadline=3.0, default_deadline=3.0, connect_timeout=0.5, breaker_cooldown=1.0),
    key_refresh_seconds=0.0,
)


@contextlib.asynccontextmanager
async def tls_mesh(
    tmp: Path, mandated_services: Sequence[mandate_pb2.MandatedService.ValueType]
) -> AsyncIterator[TlsMesh]:
    """Start eHealth, two insurers and the hub under mutual TLS; seed; stop everything on exit."""
    folder = tmp / "pki"
    for name in IDENTITIES:
        pki.ensure_identity(folder, name)

    def server(name: str) -> grpc.ServerCredentials:
        ident = pki.ensure_identity(folder, name)
        return server_credentials(ident.ca, ident.cert, ident.key)

    def client(name: str) -> grpc.ChannelCredentials:
        ident = pki.ensure_identity(folder, name)
        return client_credentials(ident.ca, ident.cert, ident.key)

    clock = FixedClock(NOW)
    ehealth: EhealthApp | None = None
    hub: HubApp | None = None
    oas: list[OaNodeApp] = []
    mesh: TlsMesh | None = None
    sandbox_server: MeshServer | None = None
    try:
        ehealth = await EhealthApp.create(
            database_url=f"sqlite+aiosqlite:///{tmp / 'ehealth.db'}",
            clock=clock,
            credentials=server("ehealth"),
        )
        ehealth_port = await ehealth.start("127.0.0.1:0")
        addresses = {"ehealth": f"localhost:{ehealth_port}"}
        oa_ports: dict[str, int] = {}
        for code in INSURERS:
            oa = await OaNodeApp.create(
                insurer_code=code,
                database_url=f"sqlite+aiosqlite:///{tmp / f'oa-{code}.db'}",
                # Insurer 100 runs on the sandbox's movable clock (it serves ProcessClockService).
                clock=OffsetClock(offset=NOW - dt.datetime.now(dt.UTC)) if code == "100" else clock,
                channel_credentials=client(f"oa-{code}"),
                server_credentials=server(f"oa-{code}"),
            )
            oa_ports[code] = await oa.start("127.0.0.1:0")
            oas.append(oa)
            addresses[f"oa-{code}"] = f"localhost:{oa_ports[code]}"
        hub = await HubApp.create(
            database_url=f"sqlite+aiosqlite:///{tmp / 'hub.db'}",
            clock=clock,
            ehealth_target=addresses["ehealth"],
            oa_targets={code: f"localhost:{port}" for code, port in oa_ports.items()},
            channel_credentials=client("hub"),
            server_credentials=server("hub"),
            throttle=ThrottleConfig(rate=1000, burst=10_000),
            tuning=FAST,
        )
        addresses["hub"] = f"localhost:{await hub.start('127.0.0.1:0')}"
        # The sandbox's server, as the cluster supervisor runs it (its test clock over the processes above).
        clock_servicer = testclock.SandboxClockServicer(
            testclock.ClockState(tmp, None), lambda: sorted(addresses.items()), client("admin")
        )
        # Chaos there: link faults on the processes above (not its own processes: no process faults).
        engine = chaos.ChaosEngine(chaos.LinkOnly(lambda: dict(addresses), client("admin")))
        sandbox_server = sandbox.build_server(
            [testclock.service(clock_servicer), chaos.service(engine)], ClusterConfig(data=tmp)
        )
        addresses["sandbox"] = f"localhost:{await sandbox_server.start('127.0.0.1:0')}"
        mesh = TlsMesh(folder, addresses, people())
        await seed(mesh, mandated_services)
        await hub.wait_until_synced(10)
        yield mesh
    finally:
        if mesh is not None:
            await mesh.close()
        if sandbox_server is not None:
            await sandbox_server.stop(0)
        if hub is not None:
            await hub.stop(0)
        for oa in oas:
            await oa.stop(0)
        if ehealth is not None:
            await ehealth.stop(0)
