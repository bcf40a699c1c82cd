"""eHealth's audit trail (seed 001 art. 3, issue 12): every login with its outcome, every write, every
refusal — with the certificate, the executor, the requester of record, whom it was about, eHealth's time,
the method and the outcome with its reason. Rows are written in batches, and a clean stop writes the last
ones."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ehealth_support import GP, GP2, NOW, PATIENT, SECRETARY, Env, Stubs, period, rpc_error

from ehealth.app import EhealthApp
from ehealth.models import AuditRow
from ehealth.tokens import public_pem
from mycarenet_core.channels import open_channel
from mycarenet_core.clock import FixedClock
from mycarenet_core.db import create_engine, session_factory
from mycarenet_core.gen.mycarenet.ehealth.v1 import auth_pb2, mandate_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import therapeutic_relation_pb2 as tr

REGISTER = "TherapeuticRelationService/RegisterRelation"
DENIED_CERT = "CERTIFICATE_NOT_ALLOWED"
COLUMNS = (
    "method",
    "certificate",
    "executor_id",
    "requester_inami",
    "mandate_id",
    "subject",
    "outcome",
    "reason",
)


async def audit_rows(database_url: str) -> list[AuditRow]:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            return list((await session.scalars(sa.select(AuditRow).order_by(sa.column("id")))).all())
    finally:
        await engine.dispose()


def relation(provider: str) -> tr.RegisterRelationRequest:
    return tr.RegisterRelationRequest(
        provider_inami=provider, patient_niss=PATIENT, proof=tr.RELATION_PROOF_EID_READ
    )


async def test_logins_writes_and_refusals_are_audited(env: Env, database_url: str) -> None:
    await env.provider(GP)
    await env.provider(GP2)
    await env.register_key(auth_pb2.SUBJECT_KIND_PERSON, SECRETARY)
    gp_session = await env.login(GP)
    gp = (("authorization", f"Bearer {gp_session.token}"),)
    challenge = await env.challenge(GP)
    await rpc_error(
        env.client.auth.CreateSession(
            auth_pb2.CreateSessionRequest(
                challenge_id=challenge.challenge_id,
                signature=Ed25519PrivateKey.generate().sign(challenge.nonce),
            )
        )
    )
    made = await env.client.mandates.CreateMandate(
        mandate_pb2.CreateMandateRequest(
            mandate=mandate_pb2.Mandate(
                principal_inami=GP,
                mandatee_kind="SUBJECT_KIND_PERSON",
                mandatee_id=SECRETARY,
                services=[mandate_pb2.MANDATED_SERVICE_MAILBOX],
                period=period(dt.date(2025, 1, 1)),
            )
        ),
        metadata=gp,
    )
    secretary = await env.login(SECRETARY, auth_pb2.SUBJECT_KIND_PERSON, principal=GP)
    await env.client.relations.RegisterRelation(relation(GP), metadata=gp)
    await rpc_error(env.client.relations.RegisterRelation(relation(GP2), metadata=gp))
    await rpc_error(
        env.client.auth.RegisterCredential(
            auth_pb2.RegisterCredentialRequest(
                subject=auth_pb2.Subject(kind=auth_pb2.SUBJECT_KIND_PROVIDER, id=GP),
                public_key_pem=public_pem(Ed25519PrivateKey.generate().public_key()),
            )
        )
    )
    await env.hub.auth.GetSigningKeys(auth_pb2.GetSigningKeysRequest())  # a read: not audited
    await env.client.relations.ListRelations(tr.ListRelationsRequest(), metadata=gp)  # nor this one

    await env.app.audit.flush()  # whatever the writer has not written yet
    rows = await audit_rows(database_url)
    seen = [tuple(getattr(row, c) for c in COLUMNS) for row in rows]
    mandate_id = made.mandate.mandate_id
    assert seen == [
        ("CadastreService/UpsertProvider", "admin", "", "", "", GP, "OK", ""),
        ("CadastreService/UpsertProvider", "admin", "", "", "", GP2, "OK", ""),
        ("AuthService/RegisterCredential", "admin", "", "", "", SECRETARY, "OK", ""),
        ("AuthService/CreateSession", "client", GP, GP, "", GP, "OK", ""),
        ("AuthService/CreateSession", "client", GP, GP, "", GP, "UNAUTHENTICATED", "BAD_SIGNATURE"),
        ("MandateService/CreateMandate", "client", GP, GP, "", GP, "OK", ""),
        ("AuthService/CreateSession", "client", SECRETARY, GP, mandate_id, GP, "OK", ""),
        (REGISTER, "client", GP, GP, "", GP, "OK", ""),
        (REGISTER, "client", GP, GP, "", GP2, "PERMISSION_DENIED", "NOT_OWN_RELATION"),
        ("AuthService/RegisterCredential", "client", "", "", "", "", "PERMISSION_DENIED", DENIED_CERT),
    ]  # fmt: skip
    assert {row.time for row in rows} == {NOW}  # eHealth's clock
    login, under = rows[3], rows[6]
    assert (login.executor_kind, login.session_id) == ("SUBJECT_KIND_PROVIDER", gp_session.session_id)
    assert (under.executor_kind, under.session_id) == ("SUBJECT_KIND_PERSON", secretary.session_id)
    assert rows[7].session_id == gp_session.session_id  # a write made with a session names it


async def test_a_call_answers_once_its_row_is_written(database_url: str, pg_admin_url: str) -> None:
    # Issue 17: nothing answered is missing from the audit, whatever happens to the process afterwards.
    app = await EhealthApp.create(database_url=database_url, clock=FixedClock(NOW))
    try:
        port = await app.start()
        async with open_channel(f"127.0.0.1:{port}") as channel:
            client = Stubs(channel)
            await rpc_error(client.auth.RotateSigningKey(auth_pb2.RotateSigningKeyRequest()))
            await rpc_error(
                client.auth.CreateSession(auth_pb2.CreateSessionRequest(challenge_id="x", signature=b"y"))
            )
        assert app.audit.pending == 0
        rows = await audit_rows(database_url)
    finally:
        await app.stop(0)
    assert [(r.method, r.outcome, r.reason) for r in rows] == [
        ("AuthService/RotateSigningKey", "PERMISSION_DENIED", "CERTIFICATE_NOT_ALLOWED"),
        ("AuthService/CreateSession", "UNAUTHENTICATED", "CHALLENGE_UNKNOWN"),
    ]
