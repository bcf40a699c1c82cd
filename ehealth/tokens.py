"""Session tokens: compact JWTs signed with EdDSA (Ed25519), as specified in ``auth.proto``.

Pure functions, no I/O and no clock reads (instants are parameters):

* key material: :func:`generate_signing_key`, :func:`load_public_key`, :func:`fingerprint`;
* :func:`mint_token` signs :class:`TokenClaims` with a key id in the header;
* :func:`verify_token` is the reference verifier: every rejection is a :class:`TokenError` with a
  :class:`Rejection` reason. Verifiers elsewhere in the mesh implement the same contract themselves.

Claims, exactly as emitted (every one always present; "" or [] when not applicable)::

    iss "ehealth" · aud · sub · sub_kind (SubjectKind name, e.g. "SUBJECT_KIND_PROVIDER") · sid
    iat · nbf (= iat) · exp (≤ iat + 12 h) · inami · niss · role (mycarenet_core Role value, e.g.
    "general_practitioner"; "" for persons and companies) · org · principal · mandate_id ·
    mandate_services (MandatedService names, e.g. ["MANDATED_SERVICE_DMG_CONSULT"]) · user (the INAMI
    number of the pharmacist who opened a pharmacy's session, seed 003 §8.2.2.3; "" otherwise)
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ISSUER = "ehealth"
ALGORITHM = "EdDSA"
MAX_LIFETIME = dt.timedelta(hours=12)
REQUIRED_CLAIMS = ("iss", "aud", "sub", "sub_kind", "sid", "iat", "nbf", "exp")


class Rejection(enum.Enum):
    """Why a token is refused (the ``reason`` of the UNAUTHENTICATED status, prefixed ``TOKEN_``)."""

    MALFORMED = "MALFORMED"
    UNKNOWN_KEY = "UNKNOWN_KEY"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    EXPIRED = "EXPIRED"
    NOT_YET_VALID = "NOT_YET_VALID"
    WRONG_AUDIENCE = "WRONG_AUDIENCE"
    REVOKED = "REVOKED"

    @property
    def status_reason(self) -> str:
        return f"TOKEN_{self.value}"


class TokenError(Exception):
    """A token was refused; ``reason`` says why."""

    def __init__(self, reason: Rejection, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class TokenClaims:
    """What a session token says."""

    subject_kind: str
    subject_id: str
    session_id: str
    audience: str
    issued_at: dt.datetime
    expires_at: dt.datetime
    inami: str = ""
    niss: str = ""
    role: str = ""
    org: str = ""
    principal: str = ""
    mandate_id: str = ""
    mandate_services: tuple[str, ...] = field(default=())
    user: str = ""

    def to_jwt_claims(self) -> dict[str, Any]:
        iat = int(self.issued_at.timestamp())
        return {
            "iss": ISSUER,
            "aud": self.audience,
            "sub": self.subject_id,
            "sub_kind": self.subject_kind,
            "sid": self.session_id,
            "iat": iat,
            "nbf": iat,
            "exp": int(self.expires_at.timestamp()),
            "inami": self.inami,
            "niss": self.niss,
            "role": self.role,
            "org": self.org,
            "principal": self.principal,
            "mandate_id": self.mandate_id,
            "mandate_services": list(self.mandate_services),
            "user": self.user,
        }

    @classmethod
    def from_jwt_claims(cls, claims: Mapping[str, Any]) -> TokenClaims:
        def text(name: str) -> str:
            value = claims.get(name, "")
            if not isinstance(value, str):
                raise TokenError(Rejection.MALFORMED, f"claim {name} is not a string")
            return value

        services = claims.get("mandate_services", [])
        if not isinstance(services, list) or not all(isinstance(s, str) for s in services):
            raise TokenError(Rejection.MALFORMED, "claim mandate_services is not a list of strings")
        return cls(
            subject_kind=text("sub_kind"),
            subject_id=text("sub"),
            session_id=text("sid"),
            audience=text("aud"),
            issued_at=_instant(claims, "iat"),
            expires_at=_instant(claims, "exp"),
            inami=text("inami"),
            niss=text("niss"),
            role=text("role"),
            org=text("org"),
            principal=text("principal"),
            mandate_id=text("mandate_id"),
            mandate_services=tuple(services),
            user=text("user"),
        )


def _instant(claims: Mapping[str, Any], name: str) -> dt.datetime:
    value = claims.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise TokenError(Rejection.MALFORMED, f"claim {name} is not a NumericDate")
    return dt.datetime.fromtimestamp(value, dt.UTC)


# --- key material ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    """A signing key: id, private and public PEM."""

    key_id: str
    private_key_pem: str
    public_key_pem: str


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def private_pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def key_id_of(key: Ed25519PublicKey) -> str:
    """A stable key id: base64url of the first 12 bytes of SHA-256 of the raw public key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest()[:12]).decode().rstrip("=")


def generate_signing_key() -> KeyPair:
    """A fresh Ed25519 key pair with its key id."""
    key = Ed25519PrivateKey.generate()
    return KeyPair(key_id_of(key.public_key()), private_pem(key), public_pem(key.public_key()))


def load_public_key(pem: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (SubjectPublicKeyInfo); ValueError for anything else."""
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as error:
        raise ValueError(f"not a PEM public key: {error}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the public key is not an Ed25519 key")
    return key


def load_private_key(pem: str) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the private key is not an Ed25519 key")
    return key


def fingerprint(key: Ed25519PublicKey) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, hex."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def signature_valid(public_key_pem: str, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is the Ed25519 signature of ``message`` by the key in ``public_key_pem``."""
    try:
        load_public_key(public_key_pem).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


# --- mint and verify -------------------------------------------------------------------------------------


def mint_token(claims: TokenClaims, key: KeyPair) -> str:
    """Sign ``claims`` with ``key`` (header: alg EdDSA, typ JWT, kid)."""
    if claims.expires_at - claims.issued_at > MAX_LIFETIME:
        raise ValueError("a session token lives at most 12 hours")
    if claims.expires_at <= claims.issued_at:
        raise ValueError("a session token must expire after it is issued")
    return jwt.encode(
        claims.to_jwt_claims(),
        load_private_key(key.private_key_pem),
        algorithm=ALGORITHM,
        headers={"kid": key.key_id},
    )


def verify_token(
    token: str,
    keys: Mapping[str, str] | Iterable[KeyPair],
    *,
    audience: str | None,
    now: dt.datetime,
    revoked: set[str] | frozenset[str] = frozenset(),
) -> TokenClaims:
    """Verify a token against the published keys (``{key_id: public PEM}``) at instant ``now``.

    ``audience`` None accepts any audience (eHealth's own logout); verifiers pass their own name.

    Order of the checks: MALFORMED (not a compact EdDSA JWT with a kid, or claims missing, or a lifetime
    over 12 h), UNKNOWN_KEY, BAD_SIGNATURE, WRONG_AUDIENCE, NOT_YET_VALID (now < nbf), EXPIRED
    (now ≥ exp), REVOKED (sid in ``revoked``).
    """
    public = keys if isinstance(keys, Mapping) else {k.key_id: k.public_key_pem for k in keys}
    try:
        header = jwt.get_unverified_header(token)
    except jwt.DecodeError as error:
        raise TokenError(Rejection.MALFORMED, str(error)) from None
    if header.get("alg") != ALGORITHM:
        raise TokenError(Rejection.MALFORMED, f"algorithm {header.get('alg')!r} is not {ALGORITHM}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenError(Rejection.MALFORMED, "no key id in the header")
    pem = public.get(kid)
    if pem is None:
        raise TokenError(Rejection.UNKNOWN_KEY, f"key {kid} is not a published signing key")
    try:
        raw = jwt.decode(
            token,
            load_public_key(pem),
            algorithms=[ALGORITHM],
            options={
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
                "require": list(REQUIRED_CLAIMS),
            },
        )
    except jwt.InvalidSignatureError:
        raise TokenError(Rejection.BAD_SIGNATURE, "the signature does not verify") from None
    except jwt.PyJWTError as error:
        raise TokenError(Rejection.MALFORMED, str(error)) from None
    if raw.get("iss") != ISSUER:
        raise TokenError(Rejection.MALFORMED, f"issuer {raw.get('iss')!r} is not {ISSUER}")
    claims = TokenClaims.from_jwt_claims(raw)
    not_before = _instant(raw, "nbf")
    if claims.expires_at - claims.issued_at > MAX_LIFETIME:
        raise TokenError(Rejection.MALFORMED, "the token lives more than 12 hours")
    if audience is not None and claims.audience != audience:
        raise TokenError(Rejection.WRONG_AUDIENCE, f"audience {claims.audience!r} is not {audience!r}")
    if now < not_before:
        raise TokenError(Rejection.NOT_YET_VALID, f"valid from {not_before.isoformat()}")
    if now >= claims.expires_at:
        raise TokenError(Rejection.EXPIRED, f"expired at {claims.expires_at.isoformat()}")
    if claims.session_id in revoked:
        raise TokenError(Rejection.REVOKED, f"session {claims.session_id} was ended")
    return claims
