"""Authentication: challenges, sessions, signing keys and revocations (SPEC §6).

:class:`Authenticator` orchestrates the repositories inside transactions; the clock and the limits come
through its constructor. Failures are :class:`~mycarenet_core.errors.MeshError` (UNAUTHENTICATED with a
reason, PERMISSION_DENIED for a provider outside its validity or without a mandate).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ehealth.mandates import MandateRecord, active_mandate
from ehealth.models import ChallengeRow, RevocationRow, SessionRow, SigningKeyRow
from ehealth.repositories import (
    CadastreRepository,
    ChallengeRepository,
    CredentialRepository,
    SessionRepository,
    SigningKeyRepository,
)
from ehealth.rules import Period, token_lifetime
from ehealth.tokens import (
    KeyPair,
    TokenClaims,
    TokenError,
    fingerprint,
    generate_signing_key,
    load_public_key,
    mint_token,
    signature_valid,
    verify_token,
)
from mycarenet_core.clock import Clock
from mycarenet_core.db import transaction
from mycarenet_core.errors import McnCode, permission_denied, unauthenticated

PROVIDER = "SUBJECT_KIND_PROVIDER"
ORGANISATION = "SUBJECT_KIND_ORGANISATION"
PERSON = "SUBJECT_KIND_PERSON"
COMPANY = "SUBJECT_KIND_COMPANY"
NONCE_BYTES = 32


@dataclass(frozen=True)
class AuthLimits:
    """Token lifetime cap (≤ 12 h), default audience and challenge time-to-live."""

    max_token_lifetime: dt.timedelta = dt.timedelta(hours=12)
    audience: str = "mycarenet"
    challenge_ttl: dt.timedelta = dt.timedelta(minutes=2)

    def __post_init__(self) -> None:
        if not dt.timedelta(0) < self.max_token_lifetime <= dt.timedelta(hours=12):
            raise ValueError("max_token_lifetime must be within (0, 12 h]")
        if self.challenge_ttl <= dt.timedelta(0):
            raise ValueError("challenge_ttl must be positive")


@dataclass(frozen=True)
class IssuedSession:
    token: str
    session_id: str
    expire_time: dt.datetime
    mandate: MandateRecord | None


class RevocationFeed:
    """In-process notification of new revocations: watchers wait on the current event, which a publish
    sets and replaces. :meth:`close` wakes every watcher for good (server stop)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.closed = False

    def changed(self) -> asyncio.Event:
        """The event the next publish sets; take it *before* reading, so that nothing is missed."""
        return self._event

    def publish(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    def close(self) -> None:
        self.closed = True
        self._event.set()


class Authenticator:
    """Challenges, sessions, keys and revocations over one database."""

    def __init__(
        self,
        factory: async_sessionmaker[AsyncSession],
        clock: Clock,
        limits: AuthLimits,
        feed: RevocationFeed,
    ) -> None:
        self.factory = factory
        self.clock = clock
        self.limits = limits
        self.feed = feed
        self._revocation_lock = asyncio.Lock()  # commit order = sequence order within this process

    # --- keys -------------------------------------------------------------------------------------------

    async def ensure_signing_key(self) -> SigningKeyRow:
        """The current signing key, created when there is none (first start)."""
        async with transaction(self.factory) as session:
            keys = SigningKeyRepository(session)
            return await keys.current() or await keys.add(generate_signing_key(), self.clock.now())

    async def rotate_signing_key(self) -> SigningKeyRow:
        async with transaction(self.factory) as session:
            keys = SigningKeyRepository(session)
            now = self.clock.now()
            await keys.retire_current(now)
            return await keys.add(generate_signing_key(), now)

    async def signing_keys(self) -> list[SigningKeyRow]:
        """The current key first, then retired keys whose tokens may still be valid."""
        async with transaction(self.factory) as session:
            retired_after = self.clock.now() - self.limits.max_token_lifetime
            return await SigningKeyRepository(session).published(retired_after)

    # --- credentials and challenges ------------------------------------------------------------------

    async def register_credential(self, kind: str, subject_id: str, public_key_pem: str) -> str:
        """Register (or replace) a subject's public key; its fingerprint. The PEM is validated upstream."""
        print_ = fingerprint(load_public_key(public_key_pem))
        async with transaction(self.factory) as session:
            await CredentialRepository(session).put(
                kind, subject_id, public_key_pem, print_, self.clock.now()
            )
        return print_

    async def create_challenge(self, kind: str, subject_id: str) -> ChallengeRow:
        now = self.clock.now()
        row = ChallengeRow(
            challenge_id=uuid.uuid4().hex,
            subject_kind=kind,
            subject_id=subject_id,
            nonce=secrets.token_bytes(NONCE_BYTES),
            create_time=now,
            expire_time=now + self.limits.challenge_ttl,
        )
        async with transaction(self.factory) as session:
            challenges = ChallengeRepository(session)
            await challenges.purge(now - self.limits.challenge_ttl)
            await challenges.add(row)
        return row

    async def _consume_challenge(self, challenge_id: str) -> ChallengeRow:
        """Use the challenge up (any answer, right or wrong, consumes it), or say why it is refused."""
        now = self.clock.now()
        async with transaction(self.factory) as session:
            challenges = ChallengeRepository(session)
            challenge = await challenges.get(challenge_id)
            fresh = challenge is not None and await challenges.consume(challenge_id, now)
        if challenge is None:
            raise unauthenticated("CHALLENGE_UNKNOWN", "no such challenge")
        if not fresh:
            raise unauthenticated("CHALLENGE_USED", "the challenge was already answered")
        if challenge.expire_time <= now:
            raise unauthenticated("CHALLENGE_EXPIRED", "the challenge expired; ask for a new one")
        return challenge

    # --- sessions ---------------------------------------------------------------------------------------

    async def create_session(
        self,
        challenge_id: str,
        signature: bytes,
        *,
        audience: str,
        lifetime_seconds: int,
        principal_inami: str,
    ) -> IssuedSession:
        challenge = await self._consume_challenge(challenge_id)
        kind, subject_id = challenge.subject_kind, challenge.subject_id
        now, today = self.clock.now(), self.clock.today()
        async with transaction(self.factory) as session:
            claims = await _subject_claims(CadastreRepository(session), kind, subject_id, today)
            credential = await CredentialRepository(session).get(kind, subject_id)
            if credential is None:
                raise unauthenticated("NO_CREDENTIAL", f"no public key is registered for {subject_id}")
            if not signature_valid(credential.public_key_pem, challenge.nonce, signature):
                raise unauthenticated("BAD_SIGNATURE", "the signature of the challenge does not verify")
            await _check_validity(CadastreRepository(session), kind, subject_id, today)
            mandate = None
            if principal_inami:
                mandate = await _mandate_for(session, principal_inami, kind, subject_id, today)
            keys = SigningKeyRepository(session)
            key = await keys.current() or await keys.add(generate_signing_key(), now)
            expire = now + token_lifetime(lifetime_seconds, self.limits.max_token_lifetime)
            # Whole seconds, as in the token (NumericDate).
            issued, expire = now.replace(microsecond=0), expire.replace(microsecond=0)
            token_claims = TokenClaims(
                subject_kind=kind,
                subject_id=subject_id,
                session_id=uuid.uuid4().hex,
                audience=audience or self.limits.audience,
                issued_at=issued,
                expires_at=expire,
                principal=principal_inami if mandate else "",
                mandate_id=mandate.row.mandate_id if mandate else "",
                mandate_services=tuple(mandate.services) if mandate else (),
                **claims,
            )
            pair = KeyPair(key.key_id, key.private_key_pem, key.public_key_pem)
            token = mint_token(token_claims, pair)
            await SessionRepository(session).add(
                SessionRow(
                    session_id=token_claims.session_id,
                    subject_kind=kind,
                    subject_id=subject_id,
                    audience=token_claims.audience,
                    key_id=key.key_id,
                    principal_inami=token_claims.principal or None,
                    mandate_id=token_claims.mandate_id or None,
                    issue_time=issued,
                    expire_time=expire,
                )
            )
        return IssuedSession(token, token_claims.session_id, expire, mandate)

    async def logout(self, token: str) -> tuple[str, bool]:
        """End the session of ``token`` (any audience); False when it had already been ended."""
        keys = {k.key_id: k.public_key_pem for k in await self.signing_keys()}
        try:
            claims = verify_token(token, keys, audience=None, now=self.clock.now())
        except TokenError as error:
            raise unauthenticated(error.reason.status_reason, error.message) from None
        async with self._revocation_lock:
            async with transaction(self.factory) as session:
                sessions = SessionRepository(session)
                if await sessions.revocation(claims.session_id) is not None:
                    return claims.session_id, False
                await sessions.revoke(claims.session_id, self.clock.now(), claims.expires_at)
            self.feed.publish()
        return claims.session_id, True

    async def revocations(self, after_sequence: int, limit: int) -> list[RevocationRow]:
        """Revocations after a sequence number whose tokens have not expired, in sequence order."""
        async with transaction(self.factory) as session:
            return await SessionRepository(session).revocations_after(
                after_sequence, limit=limit, unexpired_at=self.clock.now()
            )

    async def watch_revocations(
        self, after_sequence: int, *, batch: int = 500
    ) -> AsyncIterator[RevocationRow]:
        """The backlog after ``after_sequence``, then each new revocation as it is committed; ends when the
        feed is closed (server stop) or the caller stops iterating."""
        last = after_sequence
        while not self.feed.closed:
            changed = self.feed.changed()
            rows = await self.revocations(last, batch)
            for row in rows:
                assert row.sequence is not None
                last = row.sequence
                yield row
            if len(rows) < batch:
                await changed.wait()


async def _subject_claims(
    cadastre: CadastreRepository, kind: str, subject_id: str, today: dt.date
) -> dict[str, str]:
    """The identity claims of a subject (inami, niss, role, org); SUBJECT_UNKNOWN when the cadastre does
    not know a provider or an organisation."""
    if kind == PROVIDER:
        provider = await cadastre.provider(subject_id)
        if provider is None:
            raise unauthenticated("SUBJECT_UNKNOWN", f"provider {subject_id} is not in the cadastre")
        organisations = await cadastre.organisations_of(subject_id, today)
        org = organisations[0] if organisations else ""
        return {"inami": subject_id, "niss": provider.niss, "role": provider.role, "org": org}
    if kind == ORGANISATION:
        organisation = await cadastre.organisation(subject_id)
        if organisation is None:
            raise unauthenticated("SUBJECT_UNKNOWN", f"organisation {subject_id} is not in the cadastre")
        return {"inami": subject_id, "role": organisation.kind, "org": subject_id}
    if kind == PERSON:
        return {"niss": subject_id}
    return {}


async def _check_validity(cadastre: CadastreRepository, kind: str, subject_id: str, today: dt.date) -> None:
    """PERMISSION_DENIED when a provider or organisation is outside its cadastre validity today."""
    row = await (cadastre.provider(subject_id) if kind == PROVIDER else cadastre.organisation(subject_id))
    valid = row is None or Period(row.valid_from, row.valid_to).contains(today)
    if kind in (PROVIDER, ORGANISATION) and not valid:
        raise permission_denied(
            "PROVIDER_NOT_VALID",
            f"{subject_id} may not practise on {today.isoformat()} (cadastre validity)",
            code=McnCode.PROVIDER_NOT_ENTITLED,
        )


async def _mandate_for(
    session: AsyncSession, principal: str, kind: str, subject_id: str, today: dt.date
) -> MandateRecord:
    cadastre = CadastreRepository(session)
    row = await cadastre.provider(principal) or await cadastre.organisation(principal)
    if row is None or not Period(row.valid_from, row.valid_to).contains(today):
        raise permission_denied(
            "PRINCIPAL_NOT_VALID",
            f"principal {principal} is unknown or not valid today",
            code=McnCode.PROVIDER_NOT_ENTITLED,
        )
    mandate = await active_mandate(session, principal, kind, subject_id, today)
    if mandate is None:
        raise permission_denied(
            "MANDATE_REQUIRED", f"no active mandate from {principal} to {subject_id} today"
        )
    return mandate


__all__ = [
    "COMPANY",
    "ORGANISATION",
    "PERSON",
    "PROVIDER",
    "AuthLimits",
    "Authenticator",
    "IssuedSession",
    "RevocationFeed",
]
