"""eHealth configuration from the environment (prefix ``MCN_EHEALTH_``), validated at start."""

from __future__ import annotations

import datetime as dt

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from mycarenet_core.config import MeshSettings


class EhealthSettings(MeshSettings):
    """Settings of the eHealth process (plus those of :class:`MeshSettings`: bind, TLS, sandbox date...)."""

    model_config = SettingsConfigDict(env_prefix="MCN_EHEALTH_", extra="ignore", frozen=True)

    database_url: str = Field("sqlite+aiosqlite:///var/ehealth.db", description="SQLAlchemy URL")
    max_token_lifetime_seconds: int = Field(
        12 * 3600, gt=0, le=12 * 3600, description="session token lifetime cap (at most 12 h)"
    )
    audience: str = Field("mycarenet", min_length=1, description="default token audience")
    challenge_ttl_seconds: int = Field(120, gt=0, le=3600, description="challenge time-to-live")

    @property
    def max_token_lifetime(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.max_token_lifetime_seconds)

    @property
    def challenge_ttl(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.challenge_ttl_seconds)
