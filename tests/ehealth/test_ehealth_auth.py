"""Authentication over gRPC: challenge → signed session token, every rejection, keys and revocations."""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ehealth_support import (
    GP,
    GP2,
    MEDICAL_HOUSE,
    NOW,
    SECRETARY,
    TODAY,
    Env,
    period,
    rpc_error,
)

from ehealth.tokens import Rejection, TokenError, public_pem, verify_token
from mycarenet_core.gen.mycarenet.ehealth.v1 import auth_pb2, mandate_pb2

HOUR = dt.timedelta(hours=1)


async def test_full_flow_challenge_session_verify_logout(env: Env) -> None:
    await env.provider(GP)
    await env.organisation(MEDICAL_HOUSE, [(GP, dt.date(2024, 1, 1), None)])
    challenge = await env.challenge(GP)
    assert len(challenge.nonce) == 32
    assert challenge.expire_time.ToDatetime(dt.UTC) == NOW + dt.timedelta(minutes=2)
    session = await env.client.auth.CreateSession(
        auth_pb2.CreateSessionRequest(
            challenge_id=challenge.challenge_id, signature=env.key(GP).sign(challenge.nonce)
        ),
        timeout=10,
    )
    assert session.expire_time.ToDatetime(dt.UTC) == NOW + 12 * HOUR
    keys = await env.published_keys()
    claims = verify_token(session.token, keys, audience="mycarenet", now=NOW)
    assert claims.session_id == session.session_id
    raw = jwt.decode(session.token, options={"verify_signature": False})
    assert raw["sub"] == GP
    assert raw["sub_kind"] == "SUBJECT_KIND_PROVIDER"
    assert raw["inami"] == GP
    assert raw["role"] == "general_practitioner"
    assert raw["org"] == MEDICAL_HOUSE
    assert raw["principal"] == ""
    assert raw["exp"] - raw["iat"] == 12 * 3600

    logout = await env.client.auth.Logout(auth_pb2.LogoutRequest(token=session.token), timeout=10)
    assert (logout.session_id, logout.revoked) == (session.session_id, True)
    again = await env.client.auth.Logout(auth_pb2.LogoutRequest(token=session.token), timeout=10)
    assert again.revoked is False
    listed = await env.hub.auth.ListRevocations(auth_pb2.ListRevocationsRequest(), timeout=10)
    revoked = {r.session_id for r in listed.revocations}
    assert revoked == {session.session_id}
    with pytest.raises(TokenError) as info:
        verify_token(session.token, keys, audience="mycarenet", now=NOW, revoked=revoked)
    assert info.value.reason is Rejection.REVOKED


async def test_challenge_rejections(env: Env) -> None:
    await env.provider(GP)
    unknown = await rpc_error(
        env.client.auth.CreateSession(
            auth_pb2.CreateSessionRequest(challenge_id="nope", signature=b"x"), timeout=10
        )
    )
    assert (unknown.status, unknown.reason) == (grpc.StatusCode.UNAUTHENTICATED, "CHALLENGE_UNKNOWN")

    challenge = await env.challenge(GP)
    bad = await rpc_error(
        env.client.auth.CreateSession(
            auth_pb2.CreateSessionRequest(
                challenge_id=challenge.challenge_id,
                signature=Ed25519PrivateKey.generate().sign(challenge.nonce),
            ),
            timeout=10,
        )
    )
    assert (bad.status, bad.reason) == (grpc.StatusCode.UNAUTHENTICATED, "BAD_SIGNATURE")
    # Any answer uses the challenge up, even with the right signature afterwards.
    used = await rpc_error(
        env.client.auth.CreateSession(
            auth_pb2.CreateSessionRequest(
                challenge_id=challenge.challenge_id, signature=env.key(GP).sign(challenge.nonce)
            ),
            timeout=10,
        )
    )
    assert used.reason == "CHALLENGE_USED"

    late = await env.challenge(GP)
    env.clock.advance(dt.timedelta(minutes=2))
    expired = await rpc_error(
        env.client.auth.CreateSession(
            auth_pb2.CreateSessionRequest(
                challenge_id=late.challenge_id, signature=env.key(GP).sign(late.nonce)
            ),
            timeout=10,
        )
    )
    assert expired.reason == "CHALLENGE_EXPIRED"


async def test_subject_rejections(env: Env) -> None:
    unknown = await rpc_error(env.login(GP2))
    assert (unknown.status, unknown.reason) == (grpc.StatusCode.UNAUTHENTICATED, "SUBJECT_UNKNOWN")
    await env.provider(GP2, with_key=False)
    no_key = await rpc_error(env.login(GP2))
    assert no_key.reason == "NO_CREDENTIAL"
    person = await rpc_error(env.login(SECRETARY, auth_pb2.SUBJECT_KIND_PERSON))
    assert person.reason == "NO_CREDENTIAL"


async def test_provider_outside_cadastre_validity_is_permission_denied(env: Env) -> None:
    await env.provider(GP, start=dt.date(2020, 1, 1), end=TODAY - dt.timedelta(days=1))
    error = await rpc_error(env.login(GP))
    assert (error.status, error.reason, error.code) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "PROVIDER_NOT_VALID",
        140,
    )
    await env.provider(GP, start=TODAY + dt.timedelta(days=1))
    assert (await rpc_error(env.login(GP))).reason == "PROVIDER_NOT_VALID"
    await env.provider(GP, start=TODAY)
    assert (await env.login(GP)).token


async def test_under_a_mandate(env: Env) -> None:
    await env.provider(GP)
    await env.register_key(auth_pb2.SUBJECT_KIND_PERSON, SECRETARY)
    plain = await env.login(SECRETARY, auth_pb2.SUBJECT_KIND_PERSON)
    raw = jwt.decode(plain.token, options={"verify_signature": False})
    assert (raw["sub"], raw["niss"], raw["inami"], raw["role"]) == (SECRETARY, SECRETARY, "", "")

    missing = await rpc_error(env.login(SECRETARY, auth_pb2.SUBJECT_KIND_PERSON, principal=GP))
    assert (missing.status, missing.reason, missing.code) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "MANDATE_REQUIRED",
        140,
    )

    # The GP gives the mandate with its own session (provider software, client certificate).
    created = await env.client.mandates.CreateMandate(
        mandate_pb2.CreateMandateRequest(
            mandate=mandate_pb2.Mandate(
                principal_inami=GP,
                mandatee_kind="SUBJECT_KIND_PERSON",
                mandatee_id=SECRETARY,
                services=[mandate_pb2.MANDATED_SERVICE_DMG_CONSULT, mandate_pb2.MANDATED_SERVICE_MAILBOX],
                period=period(TODAY - dt.timedelta(days=10), TODAY + dt.timedelta(days=10)),
            )
        ),
        metadata=await env.own(GP),
        timeout=10,
    )
    session = await env.login(SECRETARY, auth_pb2.SUBJECT_KIND_PERSON, principal=GP)
    assert session.mandate.mandate_id == created.mandate.mandate_id
    claims = verify_token(session.token, await env.published_keys(), audience="mycarenet", now=NOW)
    assert claims.principal == GP
    assert claims.mandate_id == created.mandate.mandate_id
    assert claims.mandate_services == ("MANDATED_SERVICE_DMG_CONSULT", "MANDATED_SERVICE_MAILBOX")

    # Outside the mandate's period: refused.
    env.clock.advance(dt.timedelta(days=11))
    late = await rpc_error(env.login(SECRETARY, auth_pb2.SUBJECT_KIND_PERSON, principal=GP))
    assert late.reason == "MANDATE_REQUIRED"


async def test_lifetime_is_capped_at_12_hours_and_audience_is_carried(env: Env) -> None:
    await env.provider(GP)
    short = await env.login(GP, lifetime=600, audience="hub-test")
    assert short.expire_time.ToDatetime(dt.UTC) == NOW + dt.timedelta(minutes=10)
    long = await env.login(GP, lifetime=48 * 3600)
    assert long.expire_time.ToDatetime(dt.UTC) == NOW + 12 * HOUR
    keys = await env.published_keys()
    with pytest.raises(TokenError) as info:
        verify_token(short.token, keys, audience="mycarenet", now=NOW)
    assert info.value.reason is Rejection.WRONG_AUDIENCE
    assert verify_token(short.token, keys, audience="hub-test", now=NOW).audience == "hub-test"
    negative = await rpc_error(env.login(GP, lifetime=-1))
    assert (negative.status, negative.code) == (grpc.StatusCode.INVALID_ARGUMENT, 130)


async def test_key_rotation_old_tokens_verify_until_expiry(env: Env) -> None:
    await env.provider(GP)
    first = await env.hub.auth.GetSigningKeys(auth_pb2.GetSigningKeysRequest(), timeout=10)
    states = [k.state for k in first.keys]
    assert states == [auth_pb2.SIGNING_KEY_STATE_CURRENT, auth_pb2.SIGNING_KEY_STATE_NEXT]
    before = await env.login(GP)
    old_kid = jwt.get_unverified_header(before.token)["kid"]
    assert old_kid == first.keys[0].key_id
    rotated = await env.auth.RotateSigningKey(auth_pb2.RotateSigningKeyRequest(), timeout=10)
    new_kid = rotated.key.key_id
    assert new_kid == first.keys[1].key_id  # the key published ahead now signs
    assert rotated.key.state == auth_pb2.SIGNING_KEY_STATE_CURRENT
    after = await env.login(GP)
    assert jwt.get_unverified_header(after.token)["kid"] == new_kid

    reply = await env.hub.auth.GetSigningKeys(auth_pb2.GetSigningKeysRequest(), timeout=10)
    assert [k.state for k in reply.keys] == [
        auth_pb2.SIGNING_KEY_STATE_CURRENT,
        auth_pb2.SIGNING_KEY_STATE_NEXT,
        auth_pb2.SIGNING_KEY_STATE_RETIRED,
    ]
    upcoming = reply.keys[1].key_id
    assert [k.key_id for k in reply.keys] == [new_kid, upcoming, old_kid]  # current first
    assert upcoming not in (new_kid, old_kid)
    assert reply.keys[0].algorithm == "EdDSA"
    assert not reply.keys[0].HasField("retire_time")
    assert reply.keys[2].retire_time.ToDatetime(dt.UTC) == NOW
    keys = {k.key_id: k.public_key_pem for k in reply.keys}
    assert verify_token(before.token, keys, audience="mycarenet", now=NOW).session_id
    assert verify_token(after.token, keys, audience="mycarenet", now=NOW).session_id

    # Once every token of the old key has expired, the old key is no longer published.
    env.clock.advance(12 * HOUR + dt.timedelta(seconds=1))
    keys = await env.published_keys()
    assert list(keys) == [new_kid, upcoming]
    with pytest.raises(TokenError) as info:
        verify_token(before.token, keys, audience="mycarenet", now=env.clock.now())
    assert info.value.reason is Rejection.UNKNOWN_KEY


async def test_logout_rejections(env: Env) -> None:
    await env.provider(GP)
    session = await env.login(GP, lifetime=60)
    env.clock.advance(dt.timedelta(minutes=2))
    logout = env.client.auth.Logout
    expired = await rpc_error(logout(auth_pb2.LogoutRequest(token=session.token), timeout=10))
    assert (expired.status, expired.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED")
    malformed = await rpc_error(logout(auth_pb2.LogoutRequest(token="x.y.z"), timeout=10))
    assert malformed.reason == "TOKEN_MALFORMED"
    missing = await rpc_error(logout(auth_pb2.LogoutRequest(), timeout=10))
    assert (missing.status, missing.code) == (grpc.StatusCode.INVALID_ARGUMENT, 100)


async def test_revocations_are_paginated_and_watched(env: Env) -> None:
    await env.provider(GP)
    sessions = [await env.login(GP) for _ in range(3)]
    for s in sessions[:2]:
        await env.client.auth.Logout(auth_pb2.LogoutRequest(token=s.token), timeout=10)

    first = await env.hub.auth.ListRevocations(auth_pb2.ListRevocationsRequest(page_size=1), timeout=10)
    assert [r.session_id for r in first.revocations] == [sessions[0].session_id]
    second = await env.hub.auth.ListRevocations(
        auth_pb2.ListRevocationsRequest(page_size=1, page_token=first.next_page_token), timeout=10
    )
    assert [r.session_id for r in second.revocations] == [sessions[1].session_id]
    assert second.next_page_token == ""
    after = await env.hub.auth.ListRevocations(
        auth_pb2.ListRevocationsRequest(after_sequence=first.revocations[0].sequence), timeout=10
    )
    assert [r.session_id for r in after.revocations] == [sessions[1].session_id]

    stream = env.hub.auth.WatchRevocations(auth_pb2.WatchRevocationsRequest(after_sequence=0), timeout=20)
    seen = [(await stream.read()).revocation.session_id for _ in range(2)]
    assert seen == [s.session_id for s in sessions[:2]]
    # A new logout reaches the watcher without polling.
    await env.client.auth.Logout(auth_pb2.LogoutRequest(token=sessions[2].token), timeout=10)
    live = await asyncio.wait_for(stream.read(), timeout=5)
    assert live.revocation.session_id == sessions[2].session_id
    assert live.revocation.sequence > second.revocations[0].sequence
    stream.cancel()

    # Expired revocations are forgotten.
    env.clock.advance(12 * HOUR + dt.timedelta(seconds=1))
    gone = await env.hub.auth.ListRevocations(auth_pb2.ListRevocationsRequest(), timeout=10)
    assert list(gone.revocations) == []


async def test_watch_ends_cleanly_when_the_server_stops(env: Env) -> None:
    stream = env.hub.auth.WatchRevocations(auth_pb2.WatchRevocationsRequest(), timeout=20)
    await asyncio.sleep(0.1)  # the watcher is now waiting for news
    # With a 5 s grace period the stop is still quick: the watcher ends its stream cleanly (OK) instead
    # of holding the server until the grace period runs out and it is cancelled.
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(env.app.stop(5), timeout=5)
    assert loop.time() - started < 2
    assert await asyncio.wait_for(stream.read(), timeout=5) is grpc.aio.EOF
    assert await stream.code() == grpc.StatusCode.OK


async def test_register_credential_and_organisation_login(env: Env) -> None:
    await env.organisation(MEDICAL_HOUSE, [(GP, dt.date(2024, 1, 1), None)])
    key = env.key(MEDICAL_HOUSE)
    reply = await env.auth.RegisterCredential(
        auth_pb2.RegisterCredentialRequest(
            subject=auth_pb2.Subject(kind=auth_pb2.SUBJECT_KIND_ORGANISATION, id=MEDICAL_HOUSE),
            public_key_pem=public_pem(key.public_key()),
        ),
        timeout=10,
    )
    assert len(reply.fingerprint) == 64
    session = await env.login(MEDICAL_HOUSE, auth_pb2.SUBJECT_KIND_ORGANISATION)
    raw = jwt.decode(session.token, options={"verify_signature": False})
    assert (raw["role"], raw["org"], raw["inami"]) == ("medical_house", MEDICAL_HOUSE, MEDICAL_HOUSE)


@pytest.mark.parametrize(
    ("kind", "subject_id", "field", "code"),
    [
        (0, GP, "subject.kind", 100),
        (auth_pb2.SUBJECT_KIND_PROVIDER, "", "subject.id", 100),
        (auth_pb2.SUBJECT_KIND_PROVIDER, "1234", "subject.id", 111),
        (auth_pb2.SUBJECT_KIND_PROVIDER, GP[:6] + "00" + GP[8:], "subject.id", 112),
        (auth_pb2.SUBJECT_KIND_PROVIDER, MEDICAL_HOUSE, "subject.id", 130),
        (auth_pb2.SUBJECT_KIND_PERSON, "80051712399", "subject.id", 112),
        (auth_pb2.SUBJECT_KIND_COMPANY, "0123456700", "subject.id", 112),
    ],
)
async def test_bad_subjects_are_invalid_argument(
    env: Env, kind: int, subject_id: str, field: str, code: int
) -> None:
    error = await rpc_error(env.challenge(subject_id, kind))
    assert error.status == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.code) for v in error.violations] == [(field, code)]


async def test_rotations_stop_at_sixteen_published_keys_until_old_tokens_expire(env: Env) -> None:
    """GetSigningKeys answers at most 16 keys: a rotation that would publish a 17th is refused (and changes
    nothing) until the oldest retired key's tokens have expired."""
    for _ in range(14):  # current + next + 14 retired = 16
        await env.auth.RotateSigningKey(auth_pb2.RotateSigningKeyRequest(), timeout=10)
    before = await env.published_keys()
    assert len(before) == 16
    error = await rpc_error(env.auth.RotateSigningKey(auth_pb2.RotateSigningKeyRequest(), timeout=10))
    assert (error.status, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "TOO_MANY_SIGNING_KEYS")
    assert await env.published_keys() == before
    env.clock.advance(12 * HOUR + dt.timedelta(seconds=1))  # every retired key's tokens have expired
    rotated = await env.auth.RotateSigningKey(auth_pb2.RotateSigningKeyRequest(), timeout=10)
    assert rotated.key.state == auth_pb2.SIGNING_KEY_STATE_CURRENT
    assert len(await env.published_keys()) == 3
