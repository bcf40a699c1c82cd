"""How eHealth applies the trust model to itself: its own token verifier, and the caller of the running RPC
as its scope rules see it.

eHealth verifies the session tokens of provider software with the verifier every service of the mesh uses
(:class:`mycarenet_core.sessions.TokenVerifier`), fed from its own database instead of the network: the
keys are read where they are kept, and a session is looked up in the revocation log on every call (one
read of a unique index), so that a session ended a moment ago — logout, mandate or credential revoked,
validity ended — is refused on the very next call, even by another eHealth process on the same database.
"""

from __future__ import annotations

from ehealth import convert
from ehealth.auth import Authenticator
from ehealth.scope import Actor
from mycarenet_core.errors import unauthenticated
from mycarenet_core.gen.mycarenet.ehealth.v1 import auth_pb2
from mycarenet_core.sessions import Caller, TokenVerifier
from mycarenet_core.trust import current_peer, current_session


class SessionVerifier(TokenVerifier):
    """A :class:`TokenVerifier` over eHealth's own keys and revocation log."""

    def __init__(self, auth: Authenticator, *, refresh_interval: float = 1.0) -> None:
        super().__init__(
            self._published_keys,
            auth.clock,
            audience=auth.limits.audience,
            refresh_interval=refresh_interval,
        )
        self._auth = auth

    async def _published_keys(self) -> auth_pb2.GetSigningKeysResponse:
        keys = await self._auth.signing_keys()
        return auth_pb2.GetSigningKeysResponse(keys=[convert.signing_key_to_proto(k) for k in keys])

    async def verify(self, token: str) -> Caller:
        caller = await super().verify(token)
        if await self._auth.session_revoked(caller.session_id):
            raise unauthenticated("REVOKED", "the session was ended")
        return caller


def current_actor() -> Actor:
    """The caller of the running RPC: restricted to its own INAMI when its grant needed a session."""
    session = current_session()
    return Actor(current_peer().name, session.inami if session is not None else None)


__all__ = ["SessionVerifier", "current_actor"]
