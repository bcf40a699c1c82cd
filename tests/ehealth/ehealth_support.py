"""Helpers of the eHealth tests: identifiers, an Env over a running eHealth (stubs for each kind of caller,
cadastre filling, login by challenge signature), error parsing.

eHealth runs without TLS in these tests, so a channel declares the certificate kind it stands for
(``x-mcn-peer``, see :mod:`mycarenet_core.trust`): ``env.auth``/``cadastre``/``relations``/``mandates`` are
the administrator's (the sandbox tools: administrative writes), ``env.client`` is provider software (logins,
then calls with a provider's session token), ``env.hub`` the hub and ``env.oa`` insurer 300."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ehealth.app import EhealthApp
from ehealth.tokens import public_pem
from mycarenet_core.clock import FixedClock
from mycarenet_core.errors import MeshError, parse_rpc_error
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    cadastre_pb2,
    cadastre_pb2_grpc,
    mandate_pb2_grpc,
    therapeutic_relation_pb2_grpc,
)
from mycarenet_core.identifiers import Profession, make_inami, make_niss

NOW = dt.datetime(2025, 3, 3, 9, 0, tzinfo=dt.UTC)  # a Monday; Brussels date 2025-03-03
TODAY = dt.date(2025, 3, 3)

GP = make_inami(Profession.PHYSICIAN, 10001, "003")
GP2 = make_inami(Profession.PHYSICIAN, 10002, "004")
TRAINEE = make_inami(Profession.PHYSICIAN, 10003, "005")
SPECIALIST = make_inami(Profession.PHYSICIAN, 10004, "580")
DENTIST = make_inami(Profession.DENTIST, 20001, "000")
MEDICAL_HOUSE = make_inami(Profession.ORGANISATION, 30001, "100")
GROUP_PRACTICE = make_inami(Profession.ORGANISATION, 30002, "200")
PATIENT = make_niss(dt.date(1980, 5, 17), 123)
PATIENT2 = make_niss(dt.date(2001, 1, 2), 44)
SECRETARY = make_niss(dt.date(1990, 7, 1), 201)


def pdate(value: dt.date | None) -> common_pb2.Date | None:
    return None if value is None else common_pb2.Date(year=value.year, month=value.month, day=value.day)


def period(start: dt.date, end: dt.date | None = None) -> common_pb2.Period:
    return common_pb2.Period(start=pdate(start), end=pdate(end))


def from_pdate(value: common_pb2.Date) -> dt.date | None:
    return dt.date(value.year, value.month, value.day) if value.year else None


class Stubs:
    """The four eHealth stubs over one channel (one kind of caller)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.auth = auth_pb2_grpc.AuthServiceStub(channel)
        self.cadastre = cadastre_pb2_grpc.CadastreServiceStub(channel)
        self.relations = therapeutic_relation_pb2_grpc.TherapeuticRelationServiceStub(channel)
        self.mandates = mandate_pb2_grpc.MandateServiceStub(channel)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """The call metadata carrying a session token."""
    return (("authorization", f"Bearer {token}"),)


@dataclass
class Env:
    """A running eHealth with its clock, a channel per kind of caller, stubs and helpers."""

    app: EhealthApp
    clock: FixedClock
    channels: dict[str, grpc.aio.Channel]
    keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)
    sessions: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        admin = Stubs(self.channels["admin"])
        self.auth, self.cadastre, self.relations, self.mandates = (
            admin.auth,
            admin.cadastre,
            admin.relations,
            admin.mandates,
        )
        self.client = Stubs(self.channels["client"])
        self.hub = Stubs(self.channels["hub"])
        self.oa = Stubs(self.channels["oa-300"])

    def as_(self, identity: str) -> Stubs:
        return Stubs(self.channels[identity])

    def key(self, subject_id: str) -> Ed25519PrivateKey:
        return self.keys.setdefault(subject_id, Ed25519PrivateKey.generate())

    async def provider(
        self,
        inami: str,
        *,
        start: dt.date = dt.date(2020, 1, 1),
        end: dt.date | None = None,
        supervisor: str = "",
        with_key: bool = True,
        niss: str = PATIENT2,
    ) -> cadastre_pb2.UpsertProviderResponse:
        provider = cadastre_pb2.CadastreProvider(
            inami=inami,
            niss=niss,
            first_name="Ann",
            last_name=f"Doc {inami[:6]}",
            validity=period(start, end),
            supervisor_inami=supervisor,
            public_key_pem=public_pem(self.key(inami).public_key()) if with_key else "",
        )
        reply: cadastre_pb2.UpsertProviderResponse = await self.cadastre.UpsertProvider(
            cadastre_pb2.UpsertProviderRequest(provider=provider), timeout=10
        )
        return reply

    async def organisation(
        self, inami: str, members: list[tuple[str, dt.date, dt.date | None]], *, name: str = "MM Zuid"
    ) -> cadastre_pb2.UpsertOrganisationResponse:
        organisation = cadastre_pb2.Organisation(
            inami=inami,
            name=name,
            validity=period(dt.date(2020, 1, 1)),
            members=[cadastre_pb2.OrganisationMember(inami=m, period=period(s, e)) for m, s, e in members],
        )
        reply: cadastre_pb2.UpsertOrganisationResponse = await self.cadastre.UpsertOrganisation(
            cadastre_pb2.UpsertOrganisationRequest(organisation=organisation), timeout=10
        )
        return reply

    async def register_key(self, kind: int, subject_id: str) -> None:
        await self.auth.RegisterCredential(
            auth_pb2.RegisterCredentialRequest(
                subject=auth_pb2.Subject(kind=kind, id=subject_id),  # type: ignore[arg-type]
                public_key_pem=public_pem(self.key(subject_id).public_key()),
            ),
            timeout=10,
        )

    async def challenge(
        self, subject_id: str, kind: int = auth_pb2.SUBJECT_KIND_PROVIDER
    ) -> auth_pb2.CreateChallengeResponse:
        reply: auth_pb2.CreateChallengeResponse = await self.client.auth.CreateChallenge(
            auth_pb2.CreateChallengeRequest(subject=auth_pb2.Subject(kind=kind, id=subject_id)),  # type: ignore[arg-type]
            timeout=10,
        )
        return reply

    async def login(
        self,
        subject_id: str,
        kind: int = auth_pb2.SUBJECT_KIND_PROVIDER,
        *,
        principal: str = "",
        lifetime: int = 0,
        audience: str = "",
    ) -> auth_pb2.CreateSessionResponse:
        challenge = await self.challenge(subject_id, kind)
        reply: auth_pb2.CreateSessionResponse = await self.client.auth.CreateSession(
            auth_pb2.CreateSessionRequest(
                challenge_id=challenge.challenge_id,
                signature=self.key(subject_id).sign(challenge.nonce),
                principal_inami=principal,
                lifetime_seconds=lifetime,
                audience=audience,
            ),
            timeout=10,
        )
        return reply

    async def session(self, subject_id: str, **login: object) -> tuple[tuple[str, str], ...]:
        """Log in (see :meth:`login`) and answer the metadata of calls made with that session."""
        reply = await self.login(subject_id, **login)  # type: ignore[arg-type]
        return bearer(reply.token)

    async def own(
        self, subject_id: str, kind: int = auth_pb2.SUBJECT_KIND_PROVIDER
    ) -> tuple[tuple[str, str], ...]:
        """The metadata of the subject's own session (opened on first use, then reused)."""
        if subject_id not in self.sessions:
            self.sessions[subject_id] = await self.session(subject_id, kind=kind)
        return self.sessions[subject_id]

    async def published_keys(self) -> dict[str, str]:
        reply = await self.hub.auth.GetSigningKeys(auth_pb2.GetSigningKeysRequest(), timeout=10)
        return {k.key_id: k.public_key_pem for k in reply.keys}


async def rpc_error(call: object) -> MeshError:
    """Await a call that must fail; its parsed error."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return parse_rpc_error(info.value)
