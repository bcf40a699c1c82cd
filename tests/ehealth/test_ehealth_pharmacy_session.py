"""A pharmacy's session at eHealth, on SQLite and PostgreSQL (seed 003 §8.2.2.1-3, issue 16): opened with the
pharmacy's key and a second challenge signed by one of its pharmacists today; the token names the pharmacy as
its subject and the pharmacist as its user, and lives no longer than the pharmacist's validity. Every other
way in is refused with its reason, and a refusal opens no session."""

from __future__ import annotations

import datetime as dt

import jwt
from ehealth_support import GP, NOW, TODAY, Env, period, rpc_error
from sqlmodel import select

from ehealth.models import SessionRow
from ehealth.tokens import fingerprint
from mycarenet_core.gen.mycarenet.ehealth.v1 import auth_pb2, cadastre_pb2
from mycarenet_core.identifiers import Profession, make_inami, make_niss

PHARMACY = make_inami(Profession.ORGANISATION, 30_003, "300")
TITULAR = make_inami(Profession.PHARMACIST, 40_001, "001")
LEFT = make_inami(Profession.PHARMACIST, 40_002, "002")  # a member until yesterday
STRANGER = make_inami(Profession.PHARMACIST, 40_003, "001")  # another pharmacy's
ORG, PROVIDER, PERSON = (
    auth_pb2.SUBJECT_KIND_ORGANISATION,
    auth_pb2.SUBJECT_KIND_PROVIDER,
    auth_pb2.SUBJECT_KIND_PERSON,
)
CLERK = make_niss(dt.date(1992, 2, 2), 61)
# The titular's validity ends today: 2025-03-03 ends at midnight in Brussels (CET), 23:00 UTC.
END_OF_TODAY = dt.datetime(2025, 3, 3, 23, 0, tzinfo=dt.UTC)


async def _setup(env: Env) -> None:
    await env.provider(TITULAR, end=TODAY, niss=make_niss(dt.date(1970, 1, 1), 11))
    await env.provider(LEFT, niss=make_niss(dt.date(1971, 1, 1), 13))
    await env.provider(STRANGER, niss=make_niss(dt.date(1972, 1, 1), 15))
    await env.provider(GP, niss=make_niss(dt.date(1973, 1, 1), 17))
    since = dt.date(2020, 1, 1)
    members = [(TITULAR, since, None), (LEFT, since, TODAY - dt.timedelta(days=1)), (GP, since, None)]
    await env.cadastre.UpsertOrganisation(
        cadastre_pb2.UpsertOrganisationRequest(
            organisation=cadastre_pb2.Organisation(
                inami=PHARMACY,
                kind=cadastre_pb2.ORGANISATION_KIND_PHARMACY,
                name="Pharmacie du Midi",
                validity=period(since),
                members=[
                    cadastre_pb2.OrganisationMember(inami=m, period=period(s, e)) for m, s, e in members
                ],
            )
        ),
        timeout=10,
    )
    await env.register_key(ORG, PHARMACY)
    await env.register_key(PERSON, CLERK)


async def _open(
    env: Env,
    subject: str = PHARMACY,
    kind: int = ORG,
    *,
    user: str | None = TITULAR,
    user_kind: int = PROVIDER,
    signer: str | None = None,
    user_challenge: auth_pb2.CreateChallengeResponse | None = None,
    user_signature: bytes | None = None,
) -> auth_pb2.CreateSessionResponse:
    challenge = await env.challenge(subject, kind)
    request = auth_pb2.CreateSessionRequest(
        challenge_id=challenge.challenge_id, signature=env.key(subject).sign(challenge.nonce)
    )
    if user is not None:
        user_challenge = user_challenge or await env.challenge(user, user_kind)
        request.user_challenge_id = user_challenge.challenge_id
        request.user_signature = (
            user_signature
            if user_signature is not None
            else env.key(signer or user).sign(user_challenge.nonce)
        )
    reply: auth_pb2.CreateSessionResponse = await env.client.auth.CreateSession(request, timeout=10)
    return reply


async def test_a_pharmacy_session_and_every_other_way_in(env: Env) -> None:
    await _setup(env)
    env.clock.set(NOW + dt.timedelta(hours=6))  # 15:00 UTC: twelve hours would run past the day's end
    opened = await _open(env)
    claims = jwt.decode(opened.token, options={"verify_signature": False})
    assert (claims["sub"], claims["role"], claims["user"], claims["inami"]) == (
        PHARMACY,
        "pharmacy",
        TITULAR,
        PHARMACY,
    )
    assert opened.expire_time.ToDatetime(tzinfo=dt.UTC) == END_OF_TODAY  # the pharmacist's validity

    reused = await env.challenge(TITULAR)
    await _open(env, user_challenge=reused)
    refusals = []
    for attempt in (
        _open(env, user=None),
        _open(env, user=LEFT),
        _open(env, user=STRANGER),
        _open(env, user=GP),
        _open(env, signer=STRANGER),
        _open(env, user=CLERK, user_kind=PERSON),
        _open(env, GP, PROVIDER),
        _open(env, user_signature=b""),
        _open(env, user_signature=b"x" * 2000),
        _open(env, user_challenge=reused),
    ):
        error = await rpc_error(attempt)
        refusals.append((error.status.name, error.reason, [v.field for v in error.violations]))
    assert refusals == [
        ("INVALID_ARGUMENT", "PHARMACIST_REQUIRED", ["user_challenge_id"]),
        ("PERMISSION_DENIED", "NOT_A_PHARMACIST_OF_THE_PHARMACY", []),
        ("PERMISSION_DENIED", "NOT_A_PHARMACIST_OF_THE_PHARMACY", []),
        ("PERMISSION_DENIED", "NOT_A_PHARMACIST_OF_THE_PHARMACY", []),
        ("UNAUTHENTICATED", "USER_BAD_SIGNATURE", []),
        ("UNAUTHENTICATED", "USER_NOT_A_PROVIDER", []),
        ("INVALID_ARGUMENT", "USER_NOT_ALLOWED", ["user_challenge_id"]),
        ("INVALID_ARGUMENT", "INVALID_REQUEST", ["user_signature"]),
        ("INVALID_ARGUMENT", "INVALID_REQUEST", ["user_signature"]),
        ("UNAUTHENTICATED", "CHALLENGE_USED", []),
    ]
    async with env.app.db.read() as session:
        opened_sessions = (await session.execute(select(SessionRow.subject_id))).scalars().all()
    assert sorted(opened_sessions) == [PHARMACY, PHARMACY]  # the two that were let in, nothing else


async def test_a_pharmacy_session_ends_with_its_pharmacist(env: Env) -> None:
    """Revoking the pharmacist's key, ending their validity or their membership of the pharmacy ends the
    pharmacy sessions they opened (in the revocation feed the hub follows), and only those."""
    await _setup(env)
    other = make_inami(Profession.PHARMACIST, 40_004, "002")
    await env.provider(other, niss=make_niss(dt.date(1974, 1, 1), 19))
    since = dt.date(2020, 1, 1)

    async def pharmacy(members: list[str]) -> None:
        await env.cadastre.UpsertOrganisation(
            cadastre_pb2.UpsertOrganisationRequest(
                organisation=cadastre_pb2.Organisation(
                    inami=PHARMACY,
                    kind=cadastre_pb2.ORGANISATION_KIND_PHARMACY,
                    name="Pharmacie du Midi",
                    validity=period(since),
                    members=[cadastre_pb2.OrganisationMember(inami=m, period=period(since)) for m in members],
                )
            ),
            timeout=10,
        )

    async def revoked() -> set[str]:
        listed = await env.hub.auth.ListRevocations(auth_pb2.ListRevocationsRequest(), timeout=10)
        return {r.session_id for r in listed.revocations}

    await pharmacy([TITULAR, other])
    by_titular, by_other = await _open(env), await _open(env, user=other)
    own = await env.login(TITULAR)  # the titular's own session
    print_ = fingerprint(env.key(TITULAR).public_key())
    done = await env.auth.RevokeCredential(
        auth_pb2.RevokeCredentialRequest(
            subject=auth_pb2.Subject(kind=PROVIDER, id=TITULAR), fingerprint=print_
        ),
        timeout=10,
    )
    assert done.ended_sessions == 2
    assert await revoked() == {by_titular.session_id, own.session_id}

    # The other pharmacist leaves the pharmacy: the session they opened ends.
    await pharmacy([TITULAR])
    assert await revoked() == {by_titular.session_id, own.session_id, by_other.session_id}

    # A pharmacist's validity ends: the sessions they opened end.
    await pharmacy([TITULAR, other])
    again = await _open(env, user=other)
    await env.provider(other, end=TODAY - dt.timedelta(days=1), niss=make_niss(dt.date(1974, 1, 1), 19))
    assert again.session_id in await revoked()
