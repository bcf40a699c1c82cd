"""Sessions end with what they were opened with (issue 12): revoking a mandate (or a new mandate closing it),
revoking a credential, ending a provider's validity ends the sessions opened with it on their very next
call (UNAUTHENTICATED REVOKED), each end is in the revocation feed the hub follows, and a token never
outlives the mandate or the validity it was issued under. A key rotation never breaks a login in progress:
the key that signs after a rotation was published before it."""

from __future__ import annotations

import datetime as dt

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ehealth_support import GP, GP2, NOW, SECRETARY, TODAY, Env, bearer, from_pdate, pdate, period, rpc_error

from ehealth.tokens import fingerprint, public_pem
from mycarenet_core.errors import MeshError
from mycarenet_core.gen.mycarenet.ehealth.v1 import auth_pb2, mandate_pb2
from mycarenet_core.sessions import TokenVerifier

D = dt.date
DAY = dt.timedelta(days=1)
CONSULT, MAILBOX = mandate_pb2.MANDATED_SERVICE_DMG_CONSULT, mandate_pb2.MANDATED_SERVICE_MAILBOX
PERSON = auth_pb2.SUBJECT_KIND_PERSON
# 2025-03-03 ends at midnight in Brussels (CET, UTC+1): 23:00 UTC.
END_OF_TODAY = dt.datetime(2025, 3, 3, 23, 0, tzinfo=dt.UTC)
Metadata = tuple[tuple[str, str], ...]


def mandate(
    principal: str,
    mandatee: str,
    services: list[int],
    start: D,
    end: D | None = None,
    *,
    kind: str = "PERSON",
) -> mandate_pb2.CreateMandateRequest:
    return mandate_pb2.CreateMandateRequest(
        mandate=mandate_pb2.Mandate(
            principal_inami=principal,
            mandatee_kind=f"SUBJECT_KIND_{kind}",
            mandatee_id=mandatee,
            services=services,  # type: ignore[arg-type]
            period=period(start, end),
        )
    )


async def probe(env: Env, metadata: Metadata) -> MeshError | None:
    """Make one call with a session: None when it passes, else its error. A session under a mandate is
    refused on eHealth's provider RPCs (PERMISSION_DENIED MANDATE_NOT_ALLOWED) — but only once its token
    verified: an ended session is UNAUTHENTICATED REVOKED before that."""
    try:
        await env.client.mandates.ListMandates(
            mandate_pb2.ListMandatesRequest(), metadata=metadata, timeout=10
        )
    except grpc.aio.AioRpcError:
        return await rpc_error(
            env.client.mandates.ListMandates(mandate_pb2.ListMandatesRequest(), metadata=metadata)
        )
    return None


def revoked(error: MeshError | None) -> bool:
    return error is not None and (error.status, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "REVOKED")


def alive_under_mandate(error: MeshError | None) -> bool:
    return error is not None and error.reason == "MANDATE_NOT_ALLOWED"


async def revoked_sessions(env: Env) -> set[str]:
    listed = await env.hub.auth.ListRevocations(auth_pb2.ListRevocationsRequest(), timeout=10)
    return {r.session_id for r in listed.revocations}


def expiry(session: auth_pb2.CreateSessionResponse) -> dt.datetime:
    claims = jwt.decode(session.token, options={"verify_signature": False})
    assert claims["exp"] == int(session.expire_time.ToDatetime(dt.UTC).timestamp())
    return dt.datetime.fromtimestamp(claims["exp"], dt.UTC)


async def test_revoking_a_mandate_ends_every_session_opened_under_it(env: Env) -> None:
    await env.provider(GP)
    await env.provider(GP2)
    await env.register_key(PERSON, SECRETARY)
    gp = await env.own(GP)
    given = await env.client.mandates.CreateMandate(
        mandate(GP, SECRETARY, [CONSULT], D(2025, 1, 1)), metadata=gp
    )
    await env.client.mandates.CreateMandate(
        mandate(GP, GP2, [MAILBOX], D(2025, 1, 1), kind="PROVIDER"), metadata=gp
    )
    first = await env.login(SECRETARY, PERSON, principal=GP)
    second = await env.login(SECRETARY, PERSON, principal=GP)
    other = await env.login(GP2, principal=GP)
    for session in (first, second, other):
        assert alive_under_mandate(await probe(env, bearer(session.token)))

    # A verifier elsewhere in the mesh (the hub) that already knows the keys and follows the feed.
    async def fetch() -> auth_pb2.GetSigningKeysResponse:
        return await env.hub.auth.GetSigningKeys(auth_pb2.GetSigningKeysRequest(), timeout=10)

    hub = TokenVerifier(fetch, env.clock)
    assert (await hub.verify(first.token)).mandate_id == given.mandate.mandate_id

    await env.client.mandates.RevokeMandate(
        mandate_pb2.RevokeMandateRequest(mandate_id=given.mandate.mandate_id), metadata=gp, timeout=10
    )
    assert revoked(await probe(env, bearer(first.token)))
    assert revoked(await probe(env, bearer(second.token)))
    assert alive_under_mandate(await probe(env, bearer(other.token)))  # another mandate
    assert await probe(env, gp) is None  # the principal's own session
    assert await revoked_sessions(env) == {first.session_id, second.session_id}
    listed = await env.hub.auth.ListRevocations(auth_pb2.ListRevocationsRequest(), timeout=10)
    for revocation in listed.revocations:
        hub.revoke(revocation)
    with pytest.raises(MeshError) as info:
        await hub.verify(first.token)
    assert (info.value.status, info.value.reason) == (grpc.StatusCode.UNAUTHENTICATED, "REVOKED")
    # The mandate now ends today: a new session under it lives until midnight at most.
    env.clock.set(NOW.replace(hour=15))
    again = await env.login(SECRETARY, PERSON, principal=GP)
    assert expiry(again) == END_OF_TODAY


async def test_a_new_mandate_that_closes_the_previous_one_ends_its_sessions(env: Env) -> None:
    await env.provider(GP)
    await env.register_key(PERSON, SECRETARY)
    gp = await env.own(GP)
    await env.client.mandates.CreateMandate(mandate(GP, SECRETARY, [CONSULT], D(2025, 1, 1)), metadata=gp)
    old = await env.login(SECRETARY, PERSON, principal=GP)
    wider = await env.client.mandates.CreateMandate(
        mandate(GP, SECRETARY, [CONSULT, MAILBOX], TODAY), metadata=gp, timeout=10
    )
    assert len(wider.closed) == 1
    assert revoked(await probe(env, bearer(old.token)))
    new = await env.login(SECRETARY, PERSON, principal=GP)
    assert new.mandate.mandate_id == wider.mandate.mandate_id
    assert alive_under_mandate(await probe(env, bearer(new.token)))


async def test_revoking_a_credential_ends_the_sessions_opened_with_it(env: Env) -> None:
    await env.provider(GP)
    await env.register_key(PERSON, SECRETARY)
    first_key = fingerprint(env.key(GP).public_key())
    a, b = await env.login(GP), await env.login(GP)
    await env.client.mandates.CreateMandate(
        mandate(GP, SECRETARY, [CONSULT], D(2025, 1, 1)), metadata=bearer(a.token)
    )
    secretary = await env.login(SECRETARY, PERSON, principal=GP)

    done = await env.client.auth.RevokeCredential(
        auth_pb2.RevokeCredentialRequest(
            subject=auth_pb2.Subject(kind=auth_pb2.SUBJECT_KIND_PROVIDER, id=GP), fingerprint=first_key
        ),
        metadata=bearer(a.token),
        timeout=10,
    )
    assert (done.revoked, done.ended_sessions) == (True, 2)
    assert revoked(await probe(env, bearer(a.token)))
    assert revoked(await probe(env, bearer(b.token)))
    assert alive_under_mandate(await probe(env, bearer(secretary.token)))  # the secretary's own key
    assert await revoked_sessions(env) == {a.session_id, b.session_id}
    locked = await rpc_error(env.login(GP))
    assert (locked.status, locked.reason) == (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIAL_REVOKED")

    subject = auth_pb2.Subject(kind=auth_pb2.SUBJECT_KIND_PROVIDER, id=GP)
    twice = await env.auth.RevokeCredential(auth_pb2.RevokeCredentialRequest(subject=subject), timeout=10)
    assert (twice.revoked, twice.ended_sessions) == (False, 0)
    unknown = await rpc_error(
        env.auth.RevokeCredential(auth_pb2.RevokeCredentialRequest(subject=subject, fingerprint="ab" * 32))
    )
    assert (unknown.status, unknown.reason) == (grpc.StatusCode.NOT_FOUND, "CREDENTIAL_UNKNOWN")
    bad = await rpc_error(
        env.auth.RevokeCredential(auth_pb2.RevokeCredentialRequest(subject=subject, fingerprint="xyz"))
    )
    assert [(v.field, v.code) for v in bad.violations] == [("fingerprint", 111)]

    # The revoked key is never bound again, neither registered nor written with the provider's entry.
    again = await rpc_error(
        env.auth.RegisterCredential(
            auth_pb2.RegisterCredentialRequest(
                subject=subject, public_key_pem=public_pem(env.key(GP).public_key())
            )
        )
    )
    assert (again.status, again.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CREDENTIAL_REVOKED")
    assert [(v.field, v.code) for v in again.violations] == [("public_key_pem", 130)]
    await env.provider(GP)  # the same key in the provider's entry
    assert (await rpc_error(env.login(GP))).reason == "CREDENTIAL_REVOKED"
    # The administrator binds a new key (the eID): the provider logs in again; the old sessions stay ended.
    env.keys[GP] = Ed25519PrivateKey.generate()
    await env.register_key(auth_pb2.SUBJECT_KIND_PROVIDER, GP)
    second_key = fingerprint(env.key(GP).public_key())
    c = await env.login(GP)
    assert await probe(env, bearer(c.token)) is None
    assert revoked(await probe(env, bearer(a.token)))
    # Replaced by a third key, the second one no longer logs in; revoking it ends what it opened.
    third = Ed25519PrivateKey.generate()
    await env.auth.RegisterCredential(
        auth_pb2.RegisterCredentialRequest(subject=subject, public_key_pem=public_pem(third.public_key()))
    )
    assert await probe(env, bearer(c.token)) is None
    replaced = await env.auth.RevokeCredential(
        auth_pb2.RevokeCredentialRequest(subject=subject, fingerprint=second_key), timeout=10
    )
    assert (replaced.revoked, replaced.ended_sessions) == (False, 1)
    assert revoked(await probe(env, bearer(c.token)))


async def test_ending_a_provider_validity_ends_its_sessions_and_those_under_its_mandates(env: Env) -> None:
    await env.provider(GP)
    await env.provider(GP2)
    await env.register_key(PERSON, SECRETARY)
    gp, gp2 = await env.own(GP), await env.own(GP2)
    await env.client.mandates.CreateMandate(mandate(GP, SECRETARY, [CONSULT], D(2025, 1, 1)), metadata=gp)
    secretary = bearer((await env.login(SECRETARY, PERSON, principal=GP)).token)

    again = await env.provider(GP)  # the same data again (a seeder's restart): nothing ends
    assert again.change_sequence == 0
    assert await probe(env, gp) is None
    assert alive_under_mandate(await probe(env, secretary))

    await env.provider(GP, end=TODAY - DAY)
    assert revoked(await probe(env, gp))
    assert revoked(await probe(env, secretary))
    assert await probe(env, gp2) is None
    refused = await rpc_error(env.login(GP))
    assert (refused.status, refused.reason, refused.code) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "PROVIDER_NOT_VALID",
        140,
    )
    assert len(await revoked_sessions(env)) == 2


async def test_a_token_never_outlives_its_mandate_or_validity(env: Env) -> None:
    env.clock.set(NOW.replace(hour=15))  # 12 h from now is past midnight in Brussels
    await env.provider(GP)
    await env.provider(GP2, end=TODAY)
    await env.register_key(PERSON, SECRETARY)
    gp, gp2 = await env.own(GP), await env.own(GP2)
    assert expiry(await env.login(GP)) == NOW.replace(hour=15) + dt.timedelta(hours=12)
    assert expiry(await env.login(GP2)) == END_OF_TODAY  # the provider's validity ends today

    # A mandate that ends today.
    await env.client.mandates.CreateMandate(
        mandate(GP, SECRETARY, [CONSULT], D(2025, 1, 1), TODAY), metadata=gp, timeout=10
    )
    under = await env.login(SECRETARY, PERSON, principal=GP)
    assert expiry(under) == END_OF_TODAY
    assert expiry(
        await env.login(SECRETARY, PERSON, principal=GP, lifetime=600)
    ) == env.clock.now() + dt.timedelta(minutes=10)
    # An open mandate from a principal whose validity ends today.
    await env.client.mandates.CreateMandate(mandate(GP2, SECRETARY, [CONSULT], D(2025, 1, 1)), metadata=gp2)
    assert expiry(await env.login(SECRETARY, PERSON, principal=GP2)) == END_OF_TODAY

    # A validity shortened to today ends the sessions that would outlive it, not the others.
    long = await env.login(GP)
    short = await env.login(GP, lifetime=3600)
    await env.provider(GP, end=TODAY)
    assert revoked(await probe(env, bearer(long.token)))
    assert await probe(env, bearer(short.token)) is None
    assert expiry(await env.login(GP)) == END_OF_TODAY


async def test_a_rotation_publishes_the_next_key_before_signing_with_it(env: Env) -> None:
    await env.provider(GP)
    fetched = 0

    async def fetch() -> auth_pb2.GetSigningKeysResponse:
        nonlocal fetched
        fetched += 1
        return await env.hub.auth.GetSigningKeys(auth_pb2.GetSigningKeysRequest(), timeout=10)

    # A verifier (the hub) fetched the keys before the rotation and will not fetch them again for an hour.
    verifier = TokenVerifier(fetch, env.clock, refresh_interval=3600)
    await verifier.refresh_keys(force=True)
    before = await env.login(GP)
    await env.auth.RotateSigningKey(auth_pb2.RotateSigningKeyRequest(), timeout=10)
    after = await env.login(GP)
    assert jwt.get_unverified_header(after.token)["kid"] != jwt.get_unverified_header(before.token)["kid"]
    assert (await verifier.verify(after.token)).inami == GP  # signed with a key it already knew
    assert (await verifier.verify(before.token)).inami == GP
    assert fetched == 1
    # eHealth itself accepts both at once (its verifier follows its own keys).
    assert await probe(env, bearer(after.token)) is None
    assert await probe(env, bearer(before.token)) is None


async def test_death_bankruptcy_or_liquidation_ends_every_mandate_at_once(env: Env) -> None:
    """Seed 001 §4: on the death, bankruptcy or liquidation of the principal or of the mandatee every
    mandate between them ends at once, and the sessions opened under them end; a new mandate may follow."""
    await env.provider(GP)
    await env.provider(GP2)
    await env.register_key(PERSON, SECRETARY)
    gp = await env.own(GP)
    by_gp = await env.client.mandates.CreateMandate(
        mandate(GP, SECRETARY, [CONSULT], D(2025, 1, 1)), metadata=gp
    )
    later = await env.client.mandates.CreateMandate(
        mandate(GP, GP2, [MAILBOX], TODAY + dt.timedelta(days=10), kind="PROVIDER"), metadata=gp
    )
    to_gp = await env.client.mandates.CreateMandate(
        mandate(GP2, GP, [MAILBOX], D(2025, 1, 1), kind="PROVIDER"), metadata=await env.own(GP2)
    )
    under = await env.login(SECRETARY, PERSON, principal=GP)
    assert alive_under_mandate(await probe(env, bearer(under.token)))

    ended = await env.mandates.EndMandatesOnCessation(
        mandate_pb2.EndMandatesOnCessationRequest(
            subject_id=GP, cause=mandate_pb2.CESSATION_CAUSE_BANKRUPTCY, date=pdate(TODAY)
        ),
        timeout=10,
    )
    # Given by GP (running, and one not yet started: cancelled) and given to GP: all three end.
    ends = {m.mandate_id: from_pdate(m.period.end) for m in ended.ended}
    assert ends == {
        by_gp.mandate.mandate_id: TODAY - dt.timedelta(days=1),
        later.mandate.mandate_id: TODAY + dt.timedelta(days=9),  # cancelled
        to_gp.mandate.mandate_id: TODAY - dt.timedelta(days=1),
    }
    assert ended.sessions_ended == 1
    assert revoked(await probe(env, bearer(under.token)))
    listed = await env.mandates.ListMandates(
        mandate_pb2.ListMandatesRequest(valid_on=pdate(TODAY)), timeout=10
    )
    assert list(listed.mandates) == []
    # Nothing is left to end; a new mandate (given with the curator) may follow.
    again = await env.mandates.EndMandatesOnCessation(
        mandate_pb2.EndMandatesOnCessationRequest(
            subject_id=GP, cause=mandate_pb2.CESSATION_CAUSE_BANKRUPTCY
        ),
        timeout=10,
    )
    assert (list(again.ended), again.sessions_ended) == ([], 0)
    renewed = await env.client.mandates.CreateMandate(
        mandate(GP, SECRETARY, [CONSULT], TODAY), metadata=gp, timeout=10
    )
    assert list(renewed.closed) == []
    # Only the authentic source records it; bad input changes nothing.
    refused = await rpc_error(
        env.client.mandates.EndMandatesOnCessation(
            mandate_pb2.EndMandatesOnCessationRequest(subject_id=GP, cause=mandate_pb2.CESSATION_CAUSE_DEATH),
            metadata=gp,
        )
    )
    assert refused.status == grpc.StatusCode.PERMISSION_DENIED
    bad = await rpc_error(
        env.mandates.EndMandatesOnCessation(mandate_pb2.EndMandatesOnCessationRequest(subject_id="12x"))
    )
    assert bad.status == grpc.StatusCode.INVALID_ARGUMENT
    assert {(v.field, v.code) for v in bad.violations} == {("subject_id", 111), ("cause", 100)}
