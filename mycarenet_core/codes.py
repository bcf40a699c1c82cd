"""The MyCareNet error codes (SPEC §3.5): the one module that defines them.

Real provider software understands these numbers, so every rejection of the mesh carries the code that
the production services give (as the ``reason`` of a field violation and the numeric prefix of its
description, see :mod:`mycarenet_core.errors`). Identifiers, validation, the insurers' rules and the
servers all use this enum; nothing else defines a code.
"""

from __future__ import annotations

import enum


class McnCode(enum.IntEnum):
    """MyCareNet numeric error codes (SPEC §3.5)."""

    MANDATORY_FIELD_MISSING = 100
    BAD_FORMAT = 111
    BAD_CHECK_DIGIT = 112
    IMPLAUSIBLE_DATE = 113
    PATIENT_UNKNOWN = 120
    MUTUALITY_UNKNOWN = 121
    MEMBER_NUMBER_UNKNOWN = 122
    VALUE_NOT_ALLOWED = 130
    SEX_INCOMPATIBLE = 136
    PROVIDER_NOT_ENTITLED = 140
    PROVIDER_UNKNOWN = 141
    DATE_TOO_OLD = 145
    DATE_IN_FUTURE = 146
    ROUTING_INCONSISTENT = 155
    AUTHOR_MISMATCH = 156
    IDENTIFICATION_INCONSISTENT = 158
    ALREADY_HOLDER = 161
    MEDICAL_HOUSE_CONTRACT = 162
    NOT_ENROLLED = 163
    DUPLICATE_CONTACT = 165
    CONTACT_TOO_OLD = 166
    ALREADY_ENROLLED = 168


__all__ = ["McnCode"]
