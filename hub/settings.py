"""Hub configuration from the environment (prefix ``MCN_HUB_``), validated at start."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

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

    @field_validator("oa_targets")
    @classmethod
    def _targets(cls, value: str) -> str:
        parse_targets(value)
        return value

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
