"""The hub's authorization matrix (SPEC §3) over the sessions verified by :mod:`mycarenet_core.sessions`."""

from __future__ import annotations

import enum

from mycarenet_core.errors import MeshError, permission_denied
from mycarenet_core.identifiers import Role
from mycarenet_core.sessions import ROLE_TO_PROTO, Caller, TokenVerifier, bearer_token, service_name


class HubService(enum.Enum):
    """The services of the hub, named as the mandates name them."""

    CONSULT = "DMG_CONSULT"
    NOTIFY = "DMG_NOTIFY"
    ENROL = "DMG_ENROL"
    PATIENT_LIST = "DMG_PATIENT_LIST"
    MAILBOX = "MAILBOX"


# The authorization matrix (SPEC §3, issue 5). A GP in training may notify only with a supervisor.
MATRIX: dict[HubService, frozenset[Role]] = {
    HubService.CONSULT: frozenset(
        {Role.GENERAL_PRACTITIONER, Role.GP_IN_TRAINING, Role.SPECIALIST, Role.DENTIST}
    ),
    HubService.NOTIFY: frozenset({Role.GENERAL_PRACTITIONER, Role.GP_IN_TRAINING}),
    HubService.PATIENT_LIST: frozenset({Role.GENERAL_PRACTITIONER}),
    HubService.ENROL: frozenset({Role.GENERAL_PRACTITIONER}),
    HubService.MAILBOX: frozenset(Role),
}


def authorize(caller: Caller, service: HubService) -> Role:
    """Raise PERMISSION_DENIED (code 140) unless the requester of record may use ``service``."""
    if caller.principal and service.value not in {service_name(s) for s in caller.mandate_services}:
        raise permission_denied(
            "MANDATE_NOT_COVERING",
            f"the mandate {caller.mandate_id} does not cover {service.value}",
            code=140,
        )
    role = caller.role
    if role is None:
        raise permission_denied(
            "PROVIDER_NOT_ENTITLED", "the session names no care provider (use a mandate)", code=140
        )
    if role not in MATRIX[service]:
        raise permission_denied(
            "PROVIDER_NOT_ENTITLED", f"a {role.value} may not use {service.value}", code=140
        )
    return role


__all__ = [
    "ROLE_TO_PROTO",
    "Caller",
    "HubService",
    "MeshError",
    "TokenVerifier",
    "authorize",
    "bearer_token",
]
