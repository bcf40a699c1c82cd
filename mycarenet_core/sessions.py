"""Local verification of eHealth session tokens: who a session says the caller is (shared by every service).

Tokens are verified without a call per request: the public keys come from ``AuthService.GetSigningKeys``
(refreshed when an unknown ``kid`` shows up, at most once per ``refresh_interval``), revocations from
``ListRevocations`` then ``WatchRevocations`` (see :mod:`hub.feeds`), kept in memory until the token they
revoke expires. Time is the hub's clock (the sandbox may run at another date).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from mycarenet_core.clock import Clock
from mycarenet_core.errors import unauthenticated, unavailable
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import auth_pb2, mandate_pb2
from mycarenet_core.identifiers import IdentifierError, Role, parse_inami

log = logging.getLogger(__name__)

ISSUER = "ehealth"
AUDIENCE = "mycarenet"
PROVIDER_KINDS = ("SUBJECT_KIND_PROVIDER", "SUBJECT_KIND_ORGANISATION", "PROVIDER", "ORGANISATION")
# eHealth never issues a session for longer (SPEC §6). A longer token is refused even when its signature
# verifies: a leaked or mis-minted signing key must not yield sessions that outlive every revocation list.
MAX_SESSION_LIFETIME = dt.timedelta(hours=12)


ROLE_TO_PROTO: dict[Role, common_pb2.ProviderRole.ValueType] = {
    Role.GENERAL_PRACTITIONER: common_pb2.PROVIDER_ROLE_GENERAL_PRACTITIONER,
    Role.GP_IN_TRAINING: common_pb2.PROVIDER_ROLE_GP_IN_TRAINING,
    Role.GP_NON_ACCREDITED: common_pb2.PROVIDER_ROLE_GP_NON_ACCREDITED,
    Role.PHYSICIAN_NO_COMPETENCE: common_pb2.PROVIDER_ROLE_PHYSICIAN_NO_COMPETENCE,
    Role.SPECIALIST: common_pb2.PROVIDER_ROLE_SPECIALIST,
    Role.DENTIST: common_pb2.PROVIDER_ROLE_DENTIST,
    Role.PHARMACIST: common_pb2.PROVIDER_ROLE_PHARMACIST,
    Role.MEDICAL_HOUSE: common_pb2.PROVIDER_ROLE_MEDICAL_HOUSE,
    Role.GROUP_PRACTICE: common_pb2.PROVIDER_ROLE_GROUP_PRACTICE,
    Role.PHARMACY: common_pb2.PROVIDER_ROLE_PHARMACY,
    Role.PHYSIOTHERAPIST: common_pb2.PROVIDER_ROLE_PHYSIOTHERAPIST,
}


def service_name(value: object) -> str:
    if isinstance(value, int):
        try:
            value = mandate_pb2.MandatedService.Name(value)  # type: ignore[arg-type]
        except ValueError:
            return str(value)
    return str(value).upper().removeprefix("MANDATED_SERVICE_")


@dataclass(frozen=True)
class Caller:
    """Who calls, from a verified token. The requester of record is the principal under a mandate."""

    executor_id: str
    executor_kind: str
    session_id: str
    inami: str
    principal: str
    mandate_id: str
    mandate_services: frozenset[str]
    organisation: str
    expires: dt.datetime
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def requester_inami(self) -> str:
        return self.principal or self.inami

    @property
    def user(self) -> str:
        """The person who opened an organisation's session: the pharmacist of a pharmacy's session (seed 003
        §8.2.2.3), whose activity the session's is recorded against; "" otherwise."""
        value = self.claims.get("user") or ""
        return value if isinstance(value, str) else ""

    @functools.cached_property
    def role(self) -> Role | None:  # parsed once per session (the hub keeps verified sessions)
        try:
            return parse_inami(self.requester_inami).role if self.requester_inami else None
        except IdentifierError:
            return None

    @property
    def proto_role(self) -> common_pb2.ProviderRole.ValueType:
        role = self.role
        return ROLE_TO_PROTO[role] if role else common_pb2.PROVIDER_ROLE_UNSPECIFIED


class TokenVerifier:
    """Verifies session tokens locally with eHealth's published keys and the revocations seen so far."""

    def __init__(
        self,
        fetch_keys: Callable[[], Awaitable[auth_pb2.GetSigningKeysResponse]],
        clock: Clock,
        *,
        audience: str = AUDIENCE,
        leeway_seconds: float = 30.0,
        refresh_interval: float = 5.0,
    ) -> None:
        self._fetch_keys = fetch_keys
        self._clock = clock
        self._audience = audience
        self._leeway = leeway_seconds
        self._refresh_interval = refresh_interval
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._last_refresh = -1e9
        self._lock = asyncio.Lock()
        self._revoked: dict[str, float] = {}  # session id -> expiry (epoch seconds)
        self.revocation_sequence = 0

    # --- keys --------------------------------------------------------------------------------------

    async def refresh_keys(self, *, force: bool = False) -> bool:
        """Fetch the keys unless fetched less than ``refresh_interval`` ago; True when fetched."""
        async with self._lock:
            if not force and time.monotonic() - self._last_refresh < self._refresh_interval:
                return False
            self._last_refresh = time.monotonic()
            answer = await self._fetch_keys()
            keys: dict[str, Ed25519PublicKey] = {}
            for key in answer.keys:
                public = load_pem_public_key(key.public_key_pem.encode())
                if isinstance(public, Ed25519PublicKey):
                    keys[key.key_id] = public
            self._keys = keys
            return True

    async def _key(self, kid: str) -> Ed25519PublicKey:
        key = self._keys.get(kid)
        if key is None:
            try:
                await self.refresh_keys()
            except grpc.RpcError as error:
                log.warning("cannot fetch eHealth signing keys: %s", error)
                raise unavailable("EHEALTH_UNAVAILABLE", "eHealth keys cannot be fetched") from None
            key = self._keys.get(kid)
        if key is None:
            raise unauthenticated("UNKNOWN_KEY", f"no eHealth signing key {kid!r}")
        return key

    # --- revocations --------------------------------------------------------------------------------

    def revoke(self, revocation: auth_pb2.Revocation) -> None:
        expire = (
            revocation.expire_time.ToDatetime(dt.UTC).timestamp()
            if revocation.HasField("expire_time")
            else float("inf")
        )
        self._revoked[revocation.session_id] = expire
        self.revocation_sequence = max(self.revocation_sequence, revocation.sequence)

    def forget_expired(self) -> None:
        now = self._clock.now().timestamp() - self._leeway
        for sid in [s for s, exp in self._revoked.items() if exp < now]:
            del self._revoked[sid]

    def is_revoked(self, session_id: str) -> bool:
        return session_id in self._revoked

    # --- verification --------------------------------------------------------------------------------

    async def verify(self, token: str) -> Caller:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise unauthenticated("MALFORMED", "the token is not a JWT") from None
        kid = header.get("kid")
        if not isinstance(kid, str) or header.get("alg") != "EdDSA":
            raise unauthenticated("MALFORMED", "the token header needs alg EdDSA and a kid")
        key = await self._key(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["EdDSA"],
                audience=self._audience,
                issuer=ISSUER,
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "require": ["exp", "iat", "sub", "sid", "aud", "iss"],
                },
            )
        except jwt.InvalidSignatureError:
            raise unauthenticated("BAD_SIGNATURE", "the token signature does not verify") from None
        except jwt.InvalidAudienceError:
            raise unauthenticated("WRONG_AUDIENCE", f"the token is not meant for {self._audience}") from None
        except jwt.PyJWTError as error:
            raise unauthenticated("MALFORMED", f"the token is malformed: {error}") from None
        now = self._clock.now().timestamp()
        try:
            exp = float(claims["exp"])
            iat = float(claims["iat"])
            nbf = float(claims.get("nbf", iat))
        except (TypeError, ValueError):
            raise unauthenticated("MALFORMED", "exp/nbf/iat must be numbers") from None
        if not all(math.isfinite(v) for v in (exp, iat, nbf)):
            raise unauthenticated("MALFORMED", "exp/nbf/iat must be finite numbers")
        # The lifetime is what the token may be used for: from its earliest start (iat, or an earlier nbf)
        # to its end.
        lifetime = exp - min(iat, nbf)
        if lifetime > MAX_SESSION_LIFETIME.total_seconds() + self._leeway:
            raise unauthenticated(
                "LIFETIME_TOO_LONG",
                f"the session lasts {lifetime / 3600:.1f} h; eHealth issues sessions of at most 12 h",
            )
        if now > exp + self._leeway:
            raise unauthenticated("EXPIRED", "the session has expired")
        if now + self._leeway < nbf:
            raise unauthenticated("NOT_YET_VALID", "the token is not valid yet")
        sid = str(claims["sid"])
        if self.is_revoked(sid):
            raise unauthenticated("REVOKED", "the session was ended")
        services = claims.get("mandate_services") or []
        if not isinstance(services, list):
            services = [services]
        return Caller(
            executor_id=str(claims["sub"]),
            executor_kind=str(claims.get("sub_kind", "")),
            session_id=sid,
            inami=str(claims.get("inami") or ""),
            principal=str(claims.get("principal") or ""),
            mandate_id=str(claims.get("mandate_id") or ""),
            mandate_services=frozenset(service_name(s) for s in services),
            organisation=str(claims.get("org") or ""),
            expires=dt.datetime.fromtimestamp(exp, dt.UTC),
            claims=claims,
        )


def bearer_token(metadata: Any) -> str:
    """The token of the "authorization: Bearer <token>" metadata, or UNAUTHENTICATED MISSING_TOKEN."""
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise unauthenticated("MALFORMED", "authorization must be 'Bearer <token>'")
            return token.strip()
    raise unauthenticated("MISSING_TOKEN", "no authorization metadata")


__all__ = ["MAX_SESSION_LIFETIME", "ROLE_TO_PROTO", "Caller", "TokenVerifier", "bearer_token", "service_name"]
