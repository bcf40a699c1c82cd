"""The token contract (pure): minting and every rejection reason of the reference verifier."""

from __future__ import annotations

import base64
import datetime as dt
import json

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ehealth.tokens import (
    Rejection,
    TokenClaims,
    TokenError,
    generate_signing_key,
    load_private_key,
    mint_token,
    private_pem,
    verify_token,
)

T0 = dt.datetime(2025, 3, 3, 9, 0, tzinfo=dt.UTC)
KEY = generate_signing_key()
OTHER = generate_signing_key()


def claims(**overrides: object) -> TokenClaims:
    values: dict[str, object] = {
        "subject_kind": "SUBJECT_KIND_PROVIDER",
        "subject_id": "11000167003",
        "session_id": "s-1",
        "audience": "mycarenet",
        "issued_at": T0,
        "expires_at": T0 + dt.timedelta(hours=1),
        "inami": "11000167003",
        "niss": "80051712315",
        "role": "general_practitioner",
    }
    values.update(overrides)
    return TokenClaims(**values)  # type: ignore[arg-type]


def verify(token: str, **kwargs: object) -> TokenClaims:
    options: dict[str, object] = {"audience": "mycarenet", "now": T0 + dt.timedelta(minutes=5)}
    options.update(kwargs)
    return verify_token(token, [KEY], **options)  # type: ignore[arg-type]


def reason_of(token: str, **kwargs: object) -> Rejection:
    with pytest.raises(TokenError) as info:
        verify(token, **kwargs)
    return info.value.reason


def test_a_good_token_verifies_and_carries_every_claim() -> None:
    token = mint_token(claims(principal="12", mandate_id="m", mandate_services=("A",)), KEY)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "EdDSA", "typ": "JWT", "kid": KEY.key_id}
    raw = jwt.decode(token, options={"verify_signature": False})
    assert set(raw) == {
        "iss", "aud", "sub", "sub_kind", "sid", "iat", "nbf", "exp", "inami", "niss", "role", "org",
        "principal", "mandate_id", "mandate_services", "user",
    }  # fmt: skip
    assert raw["iss"] == "ehealth"
    assert raw["nbf"] == raw["iat"] == int(T0.timestamp())
    got = verify(token)
    assert got.principal == "12"
    assert got.mandate_services == ("A",)
    assert got.role == "general_practitioner"


def test_forged_signature_is_bad_signature() -> None:
    forged = jwt.encode(
        claims().to_jwt_claims(),
        Ed25519PrivateKey.generate(),
        algorithm="EdDSA",
        headers={"kid": KEY.key_id},
    )
    assert reason_of(forged) is Rejection.BAD_SIGNATURE


def test_tampered_payload_is_bad_signature() -> None:
    head, _, sig = mint_token(claims(), KEY).split(".")
    payload = claims(subject_id="someone-else").to_jwt_claims()
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    assert reason_of(f"{head}.{body}.{sig}") is Rejection.BAD_SIGNATURE


def test_unknown_key_id() -> None:
    assert reason_of(mint_token(claims(), OTHER)) is Rejection.UNKNOWN_KEY


def test_expired_at_exp_exactly_and_after() -> None:
    token = mint_token(claims(), KEY)
    assert verify(token, now=T0 + dt.timedelta(minutes=59, seconds=59)).session_id == "s-1"
    assert reason_of(token, now=T0 + dt.timedelta(hours=1)) is Rejection.EXPIRED
    assert reason_of(token, now=T0 + dt.timedelta(days=1)) is Rejection.EXPIRED


def test_not_yet_valid_before_nbf() -> None:
    token = mint_token(claims(), KEY)
    assert reason_of(token, now=T0 - dt.timedelta(seconds=1)) is Rejection.NOT_YET_VALID


def test_wrong_audience() -> None:
    token = mint_token(claims(audience="other-service"), KEY)
    assert reason_of(token) is Rejection.WRONG_AUDIENCE
    assert verify(token, audience=None).audience == "other-service"


def test_revoked_session() -> None:
    token = mint_token(claims(), KEY)
    assert reason_of(token, revoked={"s-1"}) is Rejection.REVOKED
    assert verify(token, revoked={"s-2"}).session_id == "s-1"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-a-jwt",
        "a.b.c",
        jwt.encode(
            {"sub": "x"},
            "a-shared-secret-of-at-least-32-bytes!",
            algorithm="HS256",
            headers={"kid": KEY.key_id},
        ),
    ],
)
def test_malformed(token: str) -> None:
    assert reason_of(token) is Rejection.MALFORMED


def test_missing_claims_or_wrong_issuer_are_malformed() -> None:
    raw = claims().to_jwt_claims()
    del raw["sid"]
    no_sid = jwt.encode(raw, load_private_key(KEY.private_key_pem), "EdDSA", {"kid": KEY.key_id})
    assert reason_of(no_sid) is Rejection.MALFORMED
    raw = claims().to_jwt_claims() | {"iss": "someone"}
    other_issuer = jwt.encode(raw, load_private_key(KEY.private_key_pem), "EdDSA", {"kid": KEY.key_id})
    assert reason_of(other_issuer) is Rejection.MALFORMED


def test_lifetime_is_capped_at_12_hours() -> None:
    with pytest.raises(ValueError, match="12 hours"):
        mint_token(claims(expires_at=T0 + dt.timedelta(hours=12, seconds=1)), KEY)
    assert mint_token(claims(expires_at=T0 + dt.timedelta(hours=12)), KEY)
    # A token made elsewhere with a longer life is refused by the verifier.
    raw = claims().to_jwt_claims() | {"exp": int((T0 + dt.timedelta(hours=13)).timestamp())}
    long_lived = jwt.encode(raw, load_private_key(KEY.private_key_pem), "EdDSA", {"kid": KEY.key_id})
    assert reason_of(long_lived) is Rejection.MALFORMED


def test_key_pair_pem_round_trip() -> None:
    key = Ed25519PrivateKey.generate()
    assert "PRIVATE KEY" in private_pem(key)
