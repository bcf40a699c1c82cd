"""The single business-rejection exception of the DMG rule engine.

A rejected call changes nothing: the engine raises :class:`DmgRuleError` *before* building any new
state, so the caller keeps its old :class:`~oa_node.rules.model.DmgFile` and returns the error to the
sender (seed 000 §3.3.3: "Si pas OK : REJET"). The codes are the MyCareNet codes of SPEC §3.5.
"""

from __future__ import annotations

from enum import IntEnum


class RuleCode(IntEnum):
    """The MyCareNet error codes (SPEC §3.5) that the business rules can raise."""

    MANDATORY_FIELD_MISSING = 100
    VALUE_NOT_ALLOWED = 130
    DATE_IN_THE_FUTURE = 146
    AUTHOR_MISMATCH = 156
    INCONSISTENT_IDENTIFICATION = 158
    ALREADY_HOLDER = 161
    MEDICAL_HOUSE_CONTRACT = 162
    NOT_ENROLLED = 163
    DUPLICATE_CONTACT_DATE = 165
    CONTACT_TOO_OLD = 166


class DmgRuleError(Exception):
    """A business rejection: MyCareNet ``code``, a human ``reason`` and the offending ``field``."""

    def __init__(self, code: int, reason: str, field: str | None = None) -> None:
        super().__init__(f"{code}: {reason}" + (f" [{field}]" if field else ""))
        self.code = int(code)
        self.reason = reason
        self.field = field

    def __repr__(self) -> str:
        return f"DmgRuleError(code={self.code}, reason={self.reason!r}, field={self.field!r})"
