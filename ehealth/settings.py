"""eHealth configuration from the environment (prefix ``MCN_EHEALTH_``), validated at start."""

from __future__ import annotations

import datetime as dt

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from mycarenet_core.config import MeshSettings
from mycarenet_core.identifiers import INSURER_CODES


def parse_targets(value: str) -> dict[str, str]:
    """``"100=host:port,200=host:port"`` → ``{"100": "host:port", ...}``; ValueError naming what is wrong."""
    targets: dict[str, str] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        code, sep, target = (s.strip() for s in item.partition("="))
        host, colon, port = target.rpartition(":")
        if not sep or code not in INSURER_CODES:
            raise ValueError(
                f"{item!r}: expected <insurer code>=<host:port>, codes {', '.join(INSURER_CODES)}"
            )
        if not (host and colon and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"{item!r}: the target is not host:port")
        if code in targets:
            raise ValueError(f"insurer {code} is given twice")
        targets[code] = target
    return targets


class EhealthSettings(MeshSettings):
    """Settings of the eHealth process (plus those of :class:`MeshSettings`: bind, TLS, sandbox date...)."""

    model_config = SettingsConfigDict(env_prefix="MCN_EHEALTH_", extra="ignore", frozen=True)

    database_url: str = Field("sqlite+aiosqlite:///var/ehealth.db", description="SQLAlchemy URL")
    max_token_lifetime_seconds: int = Field(
        12 * 3600, gt=0, le=12 * 3600, description="session token lifetime cap (at most 12 h)"
    )
    audience: str = Field("mycarenet", min_length=1, description="default token audience")
    challenge_ttl_seconds: int = Field(120, gt=0, le=3600, description="challenge time-to-live")
    oa_targets: str = Field(
        "",
        description="the insurers whose holder-change feeds move the DMG relations: "
        '"100=host:port,200=host:port" (TLS client certificate: eHealth\'s own)',
    )

    @field_validator("oa_targets")
    @classmethod
    def _targets(cls, value: str) -> str:
        parse_targets(value)
        return value

    @property
    def insurer_targets(self) -> dict[str, str]:
        return parse_targets(self.oa_targets)

    @property
    def max_token_lifetime(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.max_token_lifetime_seconds)

    @property
    def challenge_ttl(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.challenge_ttl_seconds)
