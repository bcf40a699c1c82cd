"""Scope rules: what a caller may reach once the trust table let it in (``mycarenet_core/trust.toml``).

The interceptor checks the certificate and the session; what it cannot know is whose data a request touches.
A grant without a session (the administrator, the hub, an insurer) reaches every entry its table row allows.
A grant with a session (provider software) reaches only what belongs to the session's own provider or
organisation: its relations, the mandates it gives, its cadastre entry, its credential. A session under a
mandate never gets that far (the interceptor refuses it on these RPCs), so a mandatee can never widen the
mandate it acts under. Every refusal here is PERMISSION_DENIED with its reason and code 140.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mycarenet_core.errors import McnCode, MeshError, permission_denied

NOT_OWN_RELATION = "NOT_OWN_RELATION"
NOT_OWN_MANDATE = "NOT_OWN_MANDATE"
NOT_OWN_ENTRY = "NOT_OWN_ENTRY"
NOT_OWN_CREDENTIAL = "NOT_OWN_CREDENTIAL"


@dataclass(frozen=True)
class Actor:
    """Who makes the running call, as the scope rules see it.

    ``own`` is the INAMI a session restricts the call to (the provider's or the organisation's), None when
    the call is not restricted (a grant without a session)."""

    peer: str
    own: str | None = None

    @classmethod
    def unrestricted(cls, peer: str = "admin") -> Actor:
        return cls(peer, None)

    @property
    def restricted(self) -> bool:
        return self.own is not None

    def may_reach(self, inami: str, member_of: Iterable[str] = ()) -> bool:
        """True when the call may touch the entry of ``inami``: its own, or (``member_of``: the organisations
        the session's provider belongs to) an organisation it is part of."""
        return self.own is None or self.own == inami or inami in set(member_of)

    def refuse(self, reason: str, what: str) -> MeshError:
        return permission_denied(
            reason,
            f"{what}: a provider's session reaches only its own data ({self.own})",
            code=McnCode.PROVIDER_NOT_ENTITLED,
        )

    def check(self, inami: str, reason: str, what: str, *, member_of: Iterable[str] = ()) -> None:
        """PERMISSION_DENIED ``reason`` (140) unless the call may touch the entry of ``inami``."""
        if not self.may_reach(inami, member_of):
            raise self.refuse(reason, what)


__all__ = ["NOT_OWN_CREDENTIAL", "NOT_OWN_ENTRY", "NOT_OWN_MANDATE", "NOT_OWN_RELATION", "Actor"]
