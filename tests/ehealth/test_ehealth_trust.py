"""Who may do what at eHealth (issue 12): the shared ``client`` certificate proves no person, so without a
session it can only log in; with a provider's own session it reaches only that provider's relations,
mandates, cadastre entry and credential; a person acting under a mandate can never widen it; the
administrator may do everything administrative for anyone. Under TLS the certificate decides, not what the
caller declares. Every test here fails on the code before the trust model."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ehealth_support import (
    GP,
    GP2,
    MEDICAL_HOUSE,
    PATIENT,
    PATIENT2,
    SECRETARY,
    TODAY,
    Env,
    Stubs,
    bearer,
    pdate,
    period,
    rpc_error,
)

from deploy.mycarenet_cluster import pki
from ehealth.app import EhealthApp
from ehealth.tokens import public_pem
from mycarenet_core.channels import client_credentials, open_channel, server_credentials
from mycarenet_core.clock import FixedClock
from mycarenet_core.gen.mycarenet.ehealth.v1 import auth_pb2, cadastre_pb2, mandate_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import therapeutic_relation_pb2 as tr
from mycarenet_core.trust import declare_peer

D = dt.date
DENIED, UNAUTH = grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED
CONSULT, MAILBOX = mandate_pb2.MANDATED_SERVICE_DMG_CONSULT, mandate_pb2.MANDATED_SERVICE_MAILBOX
ATTACKER = Ed25519PrivateKey.generate()
JAN_1 = D(2025, 1, 1)


def mandate(
    principal: str,
    mandatee: str,
    services: list[int],
    start: D = JAN_1,
    end: D | None = None,
    kind: str = "SUBJECT_KIND_PERSON",
) -> mandate_pb2.CreateMandateRequest:
    return mandate_pb2.CreateMandateRequest(
        mandate=mandate_pb2.Mandate(
            principal_inami=principal,
            mandatee_kind=kind,
            mandatee_id=mandatee,
            services=services,  # type: ignore[arg-type]
            period=period(start, end),
        )
    )


def relation(provider: str, patient: str = PATIENT) -> tr.RegisterRelationRequest:
    return tr.RegisterRelationRequest(
        provider_inami=provider, patient_niss=patient, proof=tr.RELATION_PROOF_EID_READ
    )


def gp_subject() -> auth_pb2.Subject:
    return auth_pb2.Subject(kind=auth_pb2.SUBJECT_KIND_PROVIDER, id=GP)


Call = Callable[[Stubs], Any]
NO_CERT = ("CERTIFICATE_NOT_ALLOWED", DENIED)  # the client certificate has no grant at all
NO_TOKEN = ("MISSING_TOKEN", UNAUTH)  # provider software may call it, with a provider's session

# What provider software could do with the shared certificate and no token before the trust model.
ATTACKS: list[tuple[str, Call, tuple[str, grpc.StatusCode]]] = [
    (
        "RegisterCredential",
        lambda s: s.auth.RegisterCredential(
            auth_pb2.RegisterCredentialRequest(
                subject=gp_subject(), public_key_pem=public_pem(ATTACKER.public_key())
            ),
            timeout=10,
        ),
        NO_CERT,
    ),
    (
        "UpsertProvider",
        lambda s: s.cadastre.UpsertProvider(
            cadastre_pb2.UpsertProviderRequest(
                provider=cadastre_pb2.CadastreProvider(
                    inami=GP,
                    niss=PATIENT2,
                    first_name="X",
                    last_name="Y",
                    validity=period(D(2020, 1, 1), D(2020, 1, 2)),
                )
            ),
            timeout=10,
        ),
        NO_CERT,
    ),
    (
        "UpsertOrganisation",
        lambda s: s.cadastre.UpsertOrganisation(
            cadastre_pb2.UpsertOrganisationRequest(
                organisation=cadastre_pb2.Organisation(
                    inami=MEDICAL_HOUSE, name="x", validity=period(D(2020, 1, 1))
                )
            ),
            timeout=10,
        ),
        NO_CERT,
    ),
    (
        "RotateSigningKey",
        lambda s: s.auth.RotateSigningKey(auth_pb2.RotateSigningKeyRequest(), timeout=10),
        NO_CERT,
    ),
    (
        "CreateMandate",
        lambda s: s.mandates.CreateMandate(mandate(GP, SECRETARY, [CONSULT, MAILBOX]), timeout=10),
        NO_TOKEN,
    ),
    (
        "RevokeMandate",
        lambda s: s.mandates.RevokeMandate(mandate_pb2.RevokeMandateRequest(mandate_id="m"), timeout=10),
        NO_TOKEN,
    ),
    ("RegisterRelation", lambda s: s.relations.RegisterRelation(relation(GP), timeout=10), NO_TOKEN),
    (
        "RevokeRelation",
        lambda s: s.relations.RevokeRelation(tr.RevokeRelationRequest(relation_id="r"), timeout=10),
        NO_TOKEN,
    ),
    (
        "ListRelations",
        lambda s: s.relations.ListRelations(tr.ListRelationsRequest(patient_niss=PATIENT), timeout=10),
        NO_TOKEN,
    ),
    (
        "ListMandates",
        lambda s: s.mandates.ListMandates(mandate_pb2.ListMandatesRequest(principal_inami=GP), timeout=10),
        NO_TOKEN,
    ),
    (
        "ListProviders",
        lambda s: s.cadastre.ListProviders(cadastre_pb2.ListProvidersRequest(), timeout=10),
        NO_CERT,
    ),
    (
        "ListOrganisations",
        lambda s: s.cadastre.ListOrganisations(cadastre_pb2.ListOrganisationsRequest(), timeout=10),
        NO_CERT,
    ),
    (
        "GetProvider",
        lambda s: s.cadastre.GetProvider(cadastre_pb2.GetProviderRequest(inami=GP), timeout=10),
        NO_TOKEN,
    ),
    (
        "RevokeCredential",
        lambda s: s.auth.RevokeCredential(auth_pb2.RevokeCredentialRequest(subject=gp_subject()), timeout=10),
        NO_TOKEN,
    ),
    (
        "ListRevocations",
        lambda s: s.auth.ListRevocations(auth_pb2.ListRevocationsRequest(), timeout=10),
        NO_CERT,
    ),
    (
        "CheckRelation",
        lambda s: s.relations.CheckRelation(
            tr.CheckRelationRequest(provider_inami=GP, patient_niss=PATIENT), timeout=10
        ),
        NO_CERT,
    ),
    (
        "TransferDmgRelation",
        lambda s: s.relations.TransferDmgRelation(
            tr.TransferDmgRelationRequest(
                patient_niss=PATIENT, new_holder_inami=GP, start_date=pdate(TODAY), source_reference="x"
            ),
            timeout=10,
        ),
        NO_CERT,
    ),
    (
        "ListCadastreChanges",
        lambda s: s.cadastre.ListCadastreChanges(cadastre_pb2.ListCadastreChangesRequest(), timeout=10),
        NO_CERT,
    ),
]  # fmt: skip


@pytest.mark.parametrize(("method", "call", "expected"), ATTACKS, ids=[a[0] for a in ATTACKS])
async def test_the_client_certificate_without_a_token_is_refused(
    env: Env, method: str, call: Call, expected: tuple[str, grpc.StatusCode]
) -> None:
    await env.provider(GP)
    keys_before = await env.published_keys()
    error = await rpc_error(call(env.client))
    assert (error.status, error.reason) == (expected[1], expected[0]), method
    # Nothing changed: the GP logs in with its own key only, its validity is intact, nobody holds a mandate
    # or a relation for it, and the keys were not rotated.
    assert await env.published_keys() == keys_before
    assert (await env.login(GP)).token
    env.keys["attacker"] = ATTACKER
    challenge = await env.challenge(GP)
    stolen = await rpc_error(
        env.client.auth.CreateSession(
            auth_pb2.CreateSessionRequest(
                challenge_id=challenge.challenge_id, signature=ATTACKER.sign(challenge.nonce)
            ),
            timeout=10,
        )
    )
    assert stolen.reason == "BAD_SIGNATURE"
    mandates = await env.mandates.ListMandates(
        mandate_pb2.ListMandatesRequest(principal_inami=GP), timeout=10
    )
    assert list(mandates.mandates) == []
    relations = await env.relations.ListRelations(tr.ListRelationsRequest(provider_inami=GP), timeout=10)
    assert list(relations.relations) == []


async def test_the_administrator_may_do_every_administrative_write_for_anyone(env: Env) -> None:
    await env.provider(GP)
    await env.register_key(auth_pb2.SUBJECT_KIND_PERSON, SECRETARY)
    await env.auth.RotateSigningKey(auth_pb2.RotateSigningKeyRequest(), timeout=10)
    made = await env.mandates.CreateMandate(mandate(GP, SECRETARY, [CONSULT]), timeout=10)
    rel = await env.relations.RegisterRelation(relation(GP), timeout=10)
    await env.relations.RevokeRelation(
        tr.RevokeRelationRequest(relation_id=rel.relation.relation_id), timeout=10
    )
    await env.mandates.RevokeMandate(
        mandate_pb2.RevokeMandateRequest(mandate_id=made.mandate.mandate_id), timeout=10
    )
    got = await env.cadastre.GetProvider(cadastre_pb2.GetProviderRequest(inami=GP), timeout=10)
    assert got.provider.niss == PATIENT2


async def test_a_provider_registers_revokes_and_lists_only_its_own_relations(env: Env) -> None:
    await env.provider(GP)
    await env.provider(GP2)
    gp, gp2 = await env.own(GP), await env.own(GP2)
    other = await rpc_error(env.client.relations.RegisterRelation(relation(GP2), metadata=gp, timeout=10))
    assert (other.status, other.reason, other.code) == (DENIED, "NOT_OWN_RELATION", 140)

    own = await env.client.relations.RegisterRelation(relation(GP), metadata=gp, timeout=10)
    assert own.relation.provider_inami == GP
    revoke = tr.RevokeRelationRequest(relation_id=own.relation.relation_id)
    theirs = await rpc_error(env.client.relations.RevokeRelation(revoke, metadata=gp2, timeout=10))
    assert (theirs.status, theirs.reason, theirs.code) == (DENIED, "NOT_OWN_RELATION", 140)
    listing = await rpc_error(
        env.client.relations.ListRelations(
            tr.ListRelationsRequest(provider_inami=GP), metadata=gp2, timeout=10
        )
    )
    assert (listing.status, listing.reason, listing.code) == (DENIED, "NOT_OWN_RELATION", 140)
    # By patient, a provider sees its own relations with that patient only.
    by_patient = tr.ListRelationsRequest(patient_niss=PATIENT)
    assert (
        list((await env.client.relations.ListRelations(by_patient, metadata=gp2, timeout=10)).relations) == []
    )
    mine = await env.client.relations.ListRelations(by_patient, metadata=gp, timeout=10)
    assert [r.relation_id for r in mine.relations] == [own.relation.relation_id]
    # The relation is intact.
    check = tr.CheckRelationRequest(provider_inami=GP, patient_niss=PATIENT)
    assert (await env.hub.relations.CheckRelation(check, timeout=10)).exists


async def test_a_provider_gives_revokes_and_lists_only_the_mandates_it_gives(env: Env) -> None:
    await env.provider(GP)
    await env.provider(GP2)
    gp, gp2 = await env.own(GP), await env.own(GP2)
    forged = await rpc_error(
        env.client.mandates.CreateMandate(
            mandate(GP, GP2, [MAILBOX], kind="SUBJECT_KIND_PROVIDER"), metadata=gp2
        )
    )
    assert (forged.status, forged.reason, forged.code) == (DENIED, "NOT_OWN_MANDATE", 140)

    given = await env.client.mandates.CreateMandate(
        mandate(GP, SECRETARY, [CONSULT]), metadata=gp, timeout=10
    )
    revoke = mandate_pb2.RevokeMandateRequest(mandate_id=given.mandate.mandate_id)
    theirs = await rpc_error(env.client.mandates.RevokeMandate(revoke, metadata=gp2, timeout=10))
    assert (theirs.status, theirs.reason, theirs.code) == (DENIED, "NOT_OWN_MANDATE", 140)
    spy = await rpc_error(
        env.client.mandates.ListMandates(mandate_pb2.ListMandatesRequest(principal_inami=GP), metadata=gp2)
    )
    assert (spy.status, spy.reason, spy.code) == (DENIED, "NOT_OWN_MANDATE", 140)
    by_mandatee = mandate_pb2.ListMandatesRequest(mandatee_id=SECRETARY)
    assert list((await env.client.mandates.ListMandates(by_mandatee, metadata=gp2)).mandates) == []
    mine = await env.client.mandates.ListMandates(by_mandatee, metadata=gp)
    assert [m.mandate_id for m in mine.mandates] == [given.mandate.mandate_id]
    # Still in force: the refused revocation changed nothing.
    assert mine.mandates[0].period.end.year == 0


async def test_a_provider_reads_only_its_own_cadastre_entry(env: Env) -> None:
    await env.provider(GP, niss=PATIENT2)
    await env.provider(GP2, niss=PATIENT)
    await env.organisation(MEDICAL_HOUSE, [(GP, D(2024, 1, 1), None)])
    gp, gp2 = await env.own(GP), await env.own(GP2)
    own = await env.client.cadastre.GetProvider(cadastre_pb2.GetProviderRequest(inami=GP), metadata=gp)
    assert (own.provider.niss, list(own.organisation_inamis)) == (PATIENT2, [MEDICAL_HOUSE])
    other = await rpc_error(
        env.client.cadastre.GetProvider(cadastre_pb2.GetProviderRequest(inami=GP2), metadata=gp)
    )
    assert (other.status, other.reason, other.code) == (DENIED, "NOT_OWN_ENTRY", 140)
    house = cadastre_pb2.GetOrganisationRequest(inami=MEDICAL_HOUSE)
    member = await env.client.cadastre.GetOrganisation(house, metadata=gp)
    assert member.organisation.inami == MEDICAL_HOUSE
    outsider = await rpc_error(env.client.cadastre.GetOrganisation(house, metadata=gp2))
    assert (outsider.status, outsider.reason, outsider.code) == (DENIED, "NOT_OWN_ENTRY", 140)
    listing = await rpc_error(
        env.client.cadastre.ListProviders(cadastre_pb2.ListProvidersRequest(), metadata=gp)
    )
    assert (listing.status, listing.reason) == (DENIED, "CERTIFICATE_NOT_ALLOWED")
    # The hub reads any entry (it resolves providers for the insurers).
    assert (
        await env.hub.cadastre.GetProvider(cadastre_pb2.GetProviderRequest(inami=GP2))
    ).provider.inami == GP2


async def test_a_person_under_a_mandate_can_never_widen_it(env: Env) -> None:
    await env.provider(GP)
    await env.provider(GP2)
    await env.register_key(auth_pb2.SUBJECT_KIND_PERSON, SECRETARY)
    gp = await env.own(GP)
    consult = await env.client.mandates.CreateMandate(
        mandate(GP, SECRETARY, [CONSULT], start=D(2025, 1, 1)), metadata=gp
    )
    mailbox = await env.client.mandates.CreateMandate(
        mandate(GP, SECRETARY, [MAILBOX], start=D(2025, 2, 1)), metadata=gp
    )
    # A session under a mandate carries exactly that mandate's services (the latest started), never the
    # union of what the principal gave.
    session = await env.login(SECRETARY, auth_pb2.SUBJECT_KIND_PERSON, principal=GP)
    claims = jwt.decode(session.token, options={"verify_signature": False})
    assert claims["mandate_id"] == mailbox.mandate.mandate_id != consult.mandate.mandate_id
    assert claims["mandate_services"] == ["MANDATED_SERVICE_MAILBOX"]
    under = bearer(session.token)
    attempts = [
        env.client.mandates.CreateMandate(
            mandate(GP, SECRETARY, [CONSULT, MAILBOX], D(2025, 3, 3)), metadata=under
        ),
        env.client.mandates.RevokeMandate(
            mandate_pb2.RevokeMandateRequest(mandate_id=consult.mandate.mandate_id), metadata=under
        ),
        env.client.mandates.ListMandates(mandate_pb2.ListMandatesRequest(), metadata=under),
        env.client.relations.RegisterRelation(relation(GP), metadata=under),
        env.client.auth.RevokeCredential(
            auth_pb2.RevokeCredentialRequest(subject=gp_subject()), metadata=under
        ),
        env.client.cadastre.GetProvider(cadastre_pb2.GetProviderRequest(inami=GP), metadata=under),
    ]
    for attempt in attempts:
        error = await rpc_error(attempt)
        assert (error.status, error.reason, error.code) == (DENIED, "MANDATE_NOT_ALLOWED", 140)
    # A provider mandatee's own session gives mandates from itself only.
    await env.client.mandates.CreateMandate(
        mandate(GP, GP2, [CONSULT], D(2025, 3, 3), kind="SUBJECT_KIND_PROVIDER"), metadata=gp
    )
    gp2 = await env.own(GP2)
    widened = await rpc_error(
        env.client.mandates.CreateMandate(
            mandate(GP, SECRETARY, [MAILBOX, CONSULT], D(2025, 3, 4)), metadata=gp2
        )
    )
    assert (widened.status, widened.reason) == (DENIED, "NOT_OWN_MANDATE")
    # A person's session without a mandate names no provider at all.
    plain = await env.session(SECRETARY, kind=auth_pb2.SUBJECT_KIND_PERSON)
    nobody = await rpc_error(env.client.relations.ListRelations(tr.ListRelationsRequest(), metadata=plain))
    assert (nobody.status, nobody.reason, nobody.code) == (DENIED, "MANDATE_REQUIRED", 140)
    # Nothing was widened: the principal holds exactly the three mandates it gave itself.
    listed = await env.client.mandates.ListMandates(mandate_pb2.ListMandatesRequest(), metadata=gp)
    assert len(listed.mandates) == 3


async def test_a_provider_revokes_only_its_own_credential(env: Env) -> None:
    await env.provider(GP)
    await env.provider(GP2)
    gp2 = await env.own(GP2)
    error = await rpc_error(
        env.client.auth.RevokeCredential(auth_pb2.RevokeCredentialRequest(subject=gp_subject()), metadata=gp2)
    )
    assert (error.status, error.reason, error.code) == (DENIED, "NOT_OWN_CREDENTIAL", 140)
    assert (await env.login(GP)).token  # untouched


@pytest.fixture
async def tls_ehealth(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """An eHealth under mutual TLS with the cluster's PKI (SQLite: this is about the transport)."""
    folder = tmp_path / "pki"
    ident = pki.ensure_identity(folder, "ehealth")
    app = await EhealthApp.create(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'ehealth.db'}",
        clock=FixedClock(dt.datetime(2025, 3, 3, 9, tzinfo=dt.UTC)),
        credentials=server_credentials(ident.ca, ident.cert, ident.key),
    )
    try:
        port = await app.start("127.0.0.1:0")
        yield f"localhost:{port}", folder
    finally:
        await app.stop(0)


async def test_under_tls_the_certificate_decides_not_what_the_caller_declares(
    tls_ehealth: tuple[str, Path],
) -> None:
    target, folder = tls_ehealth
    request = auth_pb2.RegisterCredentialRequest(
        subject=auth_pb2.Subject(kind=auth_pb2.SUBJECT_KIND_PERSON, id=SECRETARY),
        public_key_pem=public_pem(ATTACKER.public_key()),
    )

    def credentials(name: str) -> grpc.ChannelCredentials:
        ident = pki.ensure_identity(folder, name)
        return client_credentials(ident.ca, ident.cert, ident.key)

    # Provider software declaring itself the administrator: the certificate says "client".
    async with open_channel(
        target, credentials=credentials("client"), interceptors=declare_peer("admin")
    ) as channel:
        error = await rpc_error(Stubs(channel).auth.RegisterCredential(request, timeout=10))
        assert (error.status, error.reason) == (DENIED, "CERTIFICATE_NOT_ALLOWED")
    async with open_channel(target, credentials=credentials("admin")) as channel:
        reply = await Stubs(channel).auth.RegisterCredential(request, timeout=10)
        assert len(reply.fingerprint) == 64
