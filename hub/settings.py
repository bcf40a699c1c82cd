"""Hub configuration from the environment (prefix ``MCN_HUB_``), validated at start."""

from __future__ import annotations

import datetime as dt

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from hub.abuse import AbuseConfig
from mycarenet_core.config import MeshSettings
from mycarenet_core.identifiers import INSURER_CODES


class HubSettings(MeshSettings):
    """Settings of the hub process (plus those of :class:`MeshSettings`: bind, TLS, sandbox date...)."""

    model_config = SettingsConfigDict(env_prefix="MCN_HUB_", extra="ignore", frozen=True)

    database_url: str = Field("sqlite+aiosqlite:///var/hub.db", description="hub database")
    ehealth_target: str = Field(..., description="host:port of eHealth")
    oa_targets: str = Field(..., description='insurer nodes, "100=host:port,200=host:port,..."')
    throttle_rate: float = Field(2.0, gt=0, description="patient-bound calls per second per provider")
    throttle_burst: int = Field(30, ge=1, description="burst of patient-bound calls per provider")
    # Abuse control of the insurability services (seed 003 §7.2–§7.3, seed 001 §3; hub/abuse.py). The seeds
    # give no numbers but the 365 days; the others are illustrative, chosen so that a busy pharmacy's counter
    # (a dispensing every few minutes per pharmacist) never meets them and a database refresh does at once.
    abuse_window_minutes: float = Field(
        60.0, gt=0, le=7 * 24 * 60, description="sliding window of the distinct-patients count, minutes"
    )
    abuse_max_distinct_patients: int = Field(
        120, ge=1, description="distinct patients one requester may consult in the window (illustrative)"
    )
    abuse_repeat_days: int = Field(
        365,
        ge=1,
        le=3650,
        description="a finding within these days of an earlier one is a repeat (seed 001 §3)",
    )
    abuse_exclusion_days: float = Field(
        30.0, gt=0, le=3650, description="length of a temporary exclusion on a repeat (illustrative)"
    )

    @field_validator("oa_targets")
    @classmethod
    def _targets(cls, value: str) -> str:
        parse_targets(value)
        return value

    def abuse(self) -> AbuseConfig:
        return AbuseConfig(
            window=dt.timedelta(minutes=self.abuse_window_minutes),
            max_distinct_patients=self.abuse_max_distinct_patients,
            repeat_days=self.abuse_repeat_days,
            exclusion=dt.timedelta(days=self.abuse_exclusion_days),
        )

    def targets(self) -> dict[str, str]:
        return parse_targets(self.oa_targets)


def parse_targets(value: str) -> dict[str, str]:
    """``"100=host:port,200=host:port"`` → ``{"100": "host:port", ...}``; unknown codes are refused."""
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in value.split(","))):
        code, sep, target = item.partition("=")
        code, target = code.strip(), target.strip()
        if not sep or code not in INSURER_CODES or not target:
            raise ValueError(
                f"bad OA target {item!r} (want CODE=host:port, CODE in {', '.join(INSURER_CODES)})"
            )
        out[code] = target
    if not out:
        raise ValueError("at least one OA target is needed")
    return out


__all__ = ["HubSettings", "parse_targets"]
