"""Authentication: challenges, sessions, signing keys, credentials and revocations (SPEC §6).

:class:`Authenticator` orchestrates the repositories inside transactions; the clock and the limits come
through its constructor. Failures are :class:`~mycarenet_core.errors.MeshError` (UNAUTHENTICATED with a
reason, PERMISSION_DENIED 140 for a provider outside its validity or without a mandate).

Every session ended — logout, credential revoked, and (in :mod:`ehealth.mandates`, :mod:`ehealth.cadastre`)
mandate revoked or closed, validity ended — is a row of the revocation log (:mod:`ehealth.logs`) that every
verifier of the mesh follows; eHealth's own verifier reads it on every call (:mod:`ehealth.access`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from sqlalchemy import and_, bindparam, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from ehealth.audit import note
from ehealth.logs import Logs, end_of_day
from ehealth.mandates import MandateRecord, active_mandate
from ehealth.models import REVOCATION, ChallengeRow, RevocationRow, SessionRow, SigningKeyRow
from ehealth.repositories import (
    CURRENT,
    NEXT,
    RETIRED,
    CadastreRepository,
    ChallengeRepository,
    CredentialRepository,
    SessionRepository,
    SigningKeyRepository,
)
from ehealth.rules import Period, token_lifetime
from ehealth.scope import NOT_OWN_CREDENTIAL, Actor
from ehealth.store import Database
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
from mycarenet_core.errors import McnCode, business_error, not_found, permission_denied, unauthenticated
from mycarenet_core.identifiers import IdentifierError, Role, parse_inami

PROVIDER = "SUBJECT_KIND_PROVIDER"
ORGANISATION = "SUBJECT_KIND_ORGANISATION"
PERSON = "SUBJECT_KIND_PERSON"
COMPANY = "SUBJECT_KIND_COMPANY"
NONCE_BYTES = 32

# The verifier's per-call question (every call made with a session): one read of a unique index.
_REVOKED = select(REVOCATION.c.sequence).where(REVOCATION.c.session_id == bindparam("session_id"))

MAX_PUBLISHED_KEYS = 16
"""GetSigningKeys answers at most 16 keys (its documented maximum): the current, the next and the retired
keys whose tokens may still be valid."""


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


class Authenticator:
    """Challenges, sessions, keys, credentials and revocations over one database.

    A session is a snapshot of what it was opened with: the credential, the subject's validity and, under a
    mandate, the mandate and the principal's validity. Its token expires no later than any of them ends, and
    it is revoked (in the revocation log every verifier follows) as soon as one of them is ended early.
    Logins run under the log lock (:class:`ehealth.logs.Logs`) so that a mandate or credential revoked at
    the same moment cannot miss a session being opened with it.
    """

    def __init__(
        self,
        db: Database,
        clock: Clock,
        limits: AuthLimits,
        logs: Logs,
    ) -> None:
        self.db = db
        self.clock = clock
        self.limits = limits
        self.logs = logs
        self._key_lock = asyncio.Lock()  # one rotation at a time in this process

    # --- keys -------------------------------------------------------------------------------------------

    async def ensure_signing_key(self) -> SigningKeyRow:
        """The current signing key; on first start (or after an upgrade) a CURRENT and a NEXT key are made,
        so that the key that will sign after the next rotation is published from the start."""
        async with self._key_lock, self.db.transaction() as session:
            keys = SigningKeyRepository(session)
            now = self.clock.now()
            current = await keys.current() or await keys.add(generate_signing_key(), now, CURRENT)
            if await keys.next() is None:
                await keys.add(generate_signing_key(), now, NEXT)
            return current

    async def rotate_signing_key(self) -> SigningKeyRow:
        """Promote the published NEXT key to CURRENT (verifiers that fetched the keys since the last rotation
        already know it, so no login in progress breaks), retire the current one (it verifies until its
        tokens expire) and publish a new NEXT key. The new current key."""
        async with self._key_lock, self.db.transaction() as session:
            keys = SigningKeyRepository(session)
            now = self.clock.now()
            published = await keys.published(now - self.limits.max_token_lifetime)
            if len(published) >= MAX_PUBLISHED_KEYS:
                # GetSigningKeys answers at most 16 keys: one more rotation would hide a key that still
                # verifies live tokens. Wait until the oldest retired key's tokens have expired.
                raise business_error(
                    McnCode.VALUE_NOT_ALLOWED,
                    "TOO_MANY_SIGNING_KEYS",
                    f"{len(published)} signing keys are published (at most {MAX_PUBLISHED_KEYS}): rotate "
                    "again once the oldest retired key's tokens have expired",
                )
            current, upcoming = await keys.current(), await keys.next()
            if current is not None:
                current.state, current.retire_time = RETIRED, now
            if upcoming is None:  # a database from before key states: nothing was published ahead
                upcoming = await keys.add(generate_signing_key(), now, CURRENT)
            upcoming.state = CURRENT
            await session.flush()
            await keys.add(generate_signing_key(), now, NEXT)
            return upcoming

    async def signing_keys(self) -> list[SigningKeyRow]:
        """The current key first, the next one, then retired keys whose tokens may still be valid."""
        async with self.db.read() as session:
            retired_after = self.clock.now() - self.limits.max_token_lifetime
            return await SigningKeyRepository(session).published(retired_after)

    # --- credentials and challenges ------------------------------------------------------------------

    async def register_credential(self, kind: str, subject_id: str, public_key_pem: str) -> str:
        """Register (or replace) a subject's public key; its fingerprint. The PEM is validated upstream.
        FAILED_PRECONDITION CREDENTIAL_REVOKED for the very key that was revoked (register a new one)."""
        print_ = fingerprint(load_public_key(public_key_pem))
        async with self.db.transaction() as session:
            bound = await CredentialRepository(session).put(
                kind, subject_id, public_key_pem, print_, self.clock.now()
            )
        if not bound:
            raise business_error(
                McnCode.VALUE_NOT_ALLOWED,
                "CREDENTIAL_REVOKED",
                f"this key of {subject_id} was revoked; a revoked key is never registered again",
                field_path="public_key_pem",
            )
        return print_

    async def revoke_credential(
        self, kind: str, subject_id: str, fingerprint_: str, actor: Actor
    ) -> tuple[bool, int]:
        """Revoke a subject's credential (the registered one when ``fingerprint_`` is empty): it can no
        longer log in, and every live session opened with it ends. (revoked now, sessions ended).

        A provider's session may revoke only its own credential (NOT_OWN_CREDENTIAL). A fingerprint that is
        not the registered key but that sessions were opened with (a key since replaced) ends those sessions.
        """
        own = kind in (PROVIDER, ORGANISATION) and actor.may_reach(subject_id)
        if actor.restricted and not own:
            raise actor.refuse(NOT_OWN_CREDENTIAL, f"the credential of {subject_id}")
        async with self.logs.transaction() as log:
            row = await CredentialRepository(log.session).get(kind, subject_id)
            print_ = fingerprint_ or (row.fingerprint if row is not None else "")
            current = row is not None and row.fingerprint == print_
            of_subject = and_(col(SessionRow.subject_id) == subject_id, col(SessionRow.subject_kind) == kind)
            opened_with = col(SessionRow.credential_fingerprint) == print_
            if current:
                # Sessions from before fingerprints were recorded can only have used the registered key.
                opened_with = or_(opened_with, col(SessionRow.credential_fingerprint).is_(None))
            mine = and_(of_subject, opened_with)
            if kind == PROVIDER:  # the pharmacy sessions this pharmacist opened with that key
                mine = or_(
                    mine,
                    and_(
                        col(SessionRow.user_inami) == subject_id, col(SessionRow.user_fingerprint) == print_
                    ),
                )
            ended = await log.end_sessions(mine) if print_ else 0
            if not current and ended == 0:
                what = f"no credential with fingerprint {print_}" if print_ else "no credential"
                raise not_found("CREDENTIAL_UNKNOWN", f"{what} is registered for {subject_id}")
            revoked = False
            if current and row is not None and row.revoke_time is None:
                row.revoke_time, revoked = log.now, True
        return revoked, ended

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
        async with self.db.transaction() as session:
            challenges = ChallengeRepository(session)
            await challenges.purge(now - self.limits.challenge_ttl)
            await challenges.add(row)
        return row

    async def _consume_challenge(self, challenge_id: str) -> ChallengeRow:
        """Use the challenge up (any answer, right or wrong, consumes it), or say why it is refused."""
        now = self.clock.now()
        async with self.db.transaction() as session:
            challenges = ChallengeRepository(session)
            challenge = await challenges.get(challenge_id)
            fresh = challenge is not None and await challenges.consume(challenge_id, now)
        if challenge is None:
            raise unauthenticated("CHALLENGE_UNKNOWN", "no such challenge")
        note(executor_kind=challenge.subject_kind, executor_id=challenge.subject_id)
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
        user_challenge_id: str = "",
        user_signature: bytes = b"",
    ) -> IssuedSession:
        """Open a session for the subject of the answered challenge (under the principal's mandate when one
        is named). Its token lives ``lifetime_seconds`` (at most the configured maximum), and no longer than
        the subject's validity, the mandate and the principal's validity: a token never outlives what it
        was issued for. A pharmacy's session (seed 003 §8.2.2.1) also needs the answered challenge of one of
        its pharmacists today (``user_challenge_id``): the token names them as its ``user``, the session
        records them (and their key) and lives no longer than their validity."""
        challenge = await self._consume_challenge(challenge_id)
        kind, subject_id = challenge.subject_kind, challenge.subject_id
        pharmacy = kind == ORGANISATION and _is_pharmacy(subject_id)
        user = None
        if pharmacy and not user_challenge_id:
            raise business_error(
                McnCode.MANDATORY_FIELD_MISSING,
                "PHARMACIST_REQUIRED",
                f"a session of pharmacy {subject_id} is opened by one of its pharmacists (seed 003 §8.2.2.1)",
                field_path="user_challenge_id",
                status=grpc.StatusCode.INVALID_ARGUMENT,
            )
        if user_challenge_id and not pharmacy:
            raise business_error(
                McnCode.VALUE_NOT_ALLOWED,
                "USER_NOT_ALLOWED",
                "only a pharmacy's session names the pharmacist who opens it",
                field_path="user_challenge_id",
                status=grpc.StatusCode.INVALID_ARGUMENT,
            )
        if pharmacy:
            user = await self._consume_challenge(user_challenge_id)
        own_inami = subject_id if kind in (PROVIDER, ORGANISATION) else ""
        note(requester_inami=principal_inami or own_inami, subject=principal_inami or subject_id)
        async with self.logs.transaction() as log:
            session, now, today = log.session, log.now, self.clock.today()
            claims = await _subject_claims(CadastreRepository(session), kind, subject_id, today)
            credential = await CredentialRepository(session).get(kind, subject_id)
            if credential is None:
                raise unauthenticated("NO_CREDENTIAL", f"no public key is registered for {subject_id}")
            if credential.revoke_time is not None:
                raise unauthenticated("CREDENTIAL_REVOKED", f"the credential of {subject_id} was revoked")
            if not signature_valid(credential.public_key_pem, challenge.nonce, signature):
                raise unauthenticated("BAD_SIGNATURE", "the signature of the challenge does not verify")
            ends = [await _check_validity(CadastreRepository(session), kind, subject_id, today)]
            user_print = None
            if user is not None:
                user_end, user_print = await _pharmacist_of(session, subject_id, user, user_signature, today)
                ends.append(user_end)
                claims["user"] = user.subject_id
                note(executor_id=user.subject_id, executor_kind=PROVIDER)
            mandate = None
            if principal_inami:
                mandate, principal_end = await _mandate_for(session, principal_inami, kind, subject_id, today)
                ends += [mandate.row.valid_to, principal_end]
                note(mandate_id=mandate.row.mandate_id)
            keys = SigningKeyRepository(session)
            key = await keys.current() or await keys.add(generate_signing_key(), now, CURRENT)
            expire = min(
                [now + token_lifetime(lifetime_seconds, self.limits.max_token_lifetime)]
                + [end_of_day(day) for day in ends if day is not None]
            )
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
                    credential_fingerprint=credential.fingerprint,
                    user_inami=user.subject_id if user is not None else None,
                    user_fingerprint=user_print,
                    issue_time=issued,
                    expire_time=expire,
                )
            )
        note(session_id=token_claims.session_id)
        return IssuedSession(token, token_claims.session_id, expire, mandate)

    async def logout(self, token: str) -> tuple[str, bool]:
        """End the session of ``token`` (any audience); False when it had already been ended."""
        keys = {k.key_id: k.public_key_pem for k in await self.signing_keys()}
        try:
            claims = verify_token(token, keys, audience=None, now=self.clock.now())
        except TokenError as error:
            raise unauthenticated(error.reason.status_reason, error.message) from None
        note(
            executor_kind=claims.subject_kind,
            executor_id=claims.subject_id,
            requester_inami=claims.principal or claims.inami,
            mandate_id=claims.mandate_id,
            session_id=claims.session_id,
            subject=claims.subject_id,
        )
        async with self.logs.transaction() as log:
            ended = await log.end_session(claims.session_id, claims.expires_at)
        return claims.session_id, ended

    async def session_revoked(self, session_id: str) -> bool:
        """True when the session was ended (one indexed read)."""
        async with self.db.connect() as conn:
            return (await conn.execute(_REVOKED, {"session_id": session_id})).first() is not None

    async def revocations(self, after_sequence: int, limit: int) -> list[RevocationRow]:
        """Revocations after a sequence number whose tokens have not expired, in sequence order."""
        async with self.db.read() as session:
            return await SessionRepository(session).revocations_after(
                after_sequence, limit=limit, unexpired_at=self.clock.now()
            )

    async def watch_revocations(
        self, after_sequence: int, *, batch: int = 500
    ) -> AsyncIterator[RevocationRow]:
        """The backlog after ``after_sequence``, then each new revocation as it is committed; ends when the
        feed is closed (server stop) or the caller stops iterating."""
        async for row in self.logs.revocations.follow(
            after_sequence, self.revocations, lambda r: r.sequence or 0, batch=batch
        ):
            yield row


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


def _is_pharmacy(inami: str) -> bool:
    try:
        return parse_inami(inami).role is Role.PHARMACY
    except IdentifierError:
        return False


async def _pharmacist_of(
    session: AsyncSession, pharmacy: str, challenge: ChallengeRow, signature: bytes, today: dt.date
) -> tuple[dt.date | None, str]:
    """The pharmacist who opens a pharmacy's session (seed 003 §8.2.2.3): the challenge is a provider's,
    signed with its registered key, a pharmacist valid today and a member of the pharmacy today; the last
    day of its validity and the fingerprint of its key. UNAUTHENTICATED for a bad proof, PERMISSION_DENIED
    140 for a pharmacist not of this pharmacy."""
    user = challenge.subject_id
    if challenge.subject_kind != PROVIDER:
        raise unauthenticated("USER_NOT_A_PROVIDER", "the user's challenge must be a pharmacist's")
    credential = await CredentialRepository(session).get(PROVIDER, user)
    if credential is None or credential.revoke_time is not None:
        raise unauthenticated("USER_NO_CREDENTIAL", f"no valid public key is registered for {user}")
    if not signature_valid(credential.public_key_pem, challenge.nonce, signature):
        raise unauthenticated("USER_BAD_SIGNATURE", "the user's signature of its challenge does not verify")
    cadastre = CadastreRepository(session)
    if await cadastre.provider(user) is None:
        raise unauthenticated("SUBJECT_UNKNOWN", f"provider {user} is not in the cadastre")
    end = await _check_validity(cadastre, PROVIDER, user, today)
    if not _is_role(user, Role.PHARMACIST) or pharmacy not in await cadastre.organisations_of(user, today):
        raise permission_denied(
            "NOT_A_PHARMACIST_OF_THE_PHARMACY",
            f"{user} is not a pharmacist of pharmacy {pharmacy} today (cadastre)",
            code=McnCode.PROVIDER_NOT_ENTITLED,
        )
    return end, credential.fingerprint


def _is_role(inami: str, role: Role) -> bool:
    try:
        return parse_inami(inami).role is role
    except IdentifierError:
        return False


async def _check_validity(
    cadastre: CadastreRepository, kind: str, subject_id: str, today: dt.date
) -> dt.date | None:
    """PERMISSION_DENIED when a provider or organisation is outside its cadastre validity today; else the
    last day of that validity (None: open, or a subject without one)."""
    if kind not in (PROVIDER, ORGANISATION):
        return None
    row = await (cadastre.provider(subject_id) if kind == PROVIDER else cadastre.organisation(subject_id))
    if row is None:
        return None
    if not Period(row.valid_from, row.valid_to).contains(today):
        raise permission_denied(
            "PROVIDER_NOT_VALID",
            f"{subject_id} may not practise on {today.isoformat()} (cadastre validity)",
            code=McnCode.PROVIDER_NOT_ENTITLED,
        )
    return row.valid_to


async def _mandate_for(
    session: AsyncSession, principal: str, kind: str, subject_id: str, today: dt.date
) -> tuple[MandateRecord, dt.date | None]:
    """The mandate from ``principal`` to the subject valid today, and the last day of the principal's
    validity; PERMISSION_DENIED 140 otherwise."""
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
            "MANDATE_REQUIRED",
            f"no active mandate from {principal} to {subject_id} today",
            code=McnCode.PROVIDER_NOT_ENTITLED,
        )
    return mandate, row.valid_to


__all__ = [
    "COMPANY",
    "ORGANISATION",
    "PERSON",
    "PROVIDER",
    "AuthLimits",
    "Authenticator",
    "IssuedSession",
]
