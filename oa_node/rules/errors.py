"""The single business-rejection exception of the DMG rule engine.

A rejected call changes nothing: the engine raises :class:`DmgRuleError` *before* building any new
state, so the caller keeps its old :class:`~oa_node.rules.model.DmgFile` and returns the error to the
sender (seed 000 §3.3.3: "Si pas OK : REJET"). The codes are the MyCareNet codes of SPEC §3.5, from the
one module that defines them (:class:`mycarenet_core.codes.McnCode`).
"""

from __future__ import annotations

from mycarenet_core.codes import McnCode


class DmgRuleError(Exception):
    """A business rejection: MyCareNet ``code``, a human ``reason`` and the offending ``field``."""

    def __init__(self, code: McnCode, reason: str, field: str | None = None) -> None:
        super().__init__(f"{int(code)}: {reason}" + (f" [{field}]" if field else ""))
        self.code = McnCode(code)
        self.reason = reason
        self.field = field

    def __repr__(self) -> str:
        return f"DmgRuleError(code={int(self.code)}, reason={self.reason!r}, field={self.field!r})"
