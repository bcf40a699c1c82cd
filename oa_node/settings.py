"""Insurer node configuration from the environment (prefix ``MCN_OA_``), validated at start."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from mycarenet_core.config import MeshSettings
from mycarenet_core.identifiers import INSURER_CODES
from oa_node.purpose import PurposeRule


class OaSettings(MeshSettings):
    """Settings of one OA node (plus those of :class:`MeshSettings`: bind, TLS, sandbox date...)."""

    model_config = SettingsConfigDict(env_prefix="MCN_OA_", extra="ignore", frozen=True)

    insurer_code: str = Field(description="this node's insurer code: 100 200 300 400 500 600 900")
    database_url: str = Field("", description="SQLAlchemy URL; default sqlite+aiosqlite:///var/oa-<code>.db")
    hub_intake_target: str | None = Field(None, description="host:port of the hub's MailboxIntakeService")
    ehealth_target: str | None = Field(
        None, description="host:port of eHealth, whose cadastre the node follows (providers, organisations)"
    )
    max_notification_delay_days: int = Field(
        7,
        ge=0,
        le=366,
        description="code 166: a notification's contact at most this many days before it. "
        "A rule of the production service that the seeds do not state (SPEC §10.6), each insurer's setting",
    )
    unbilled_contact_months: int = Field(
        24,
        ge=1,
        le=120,
        description="the check after payment: a notification's fee is recovered when its contact has not "
        "reached the insurer through invoicing by the end of the month this many months after the contact's "
        "(seed 000 §3.3.1 says 'afterwards', not when; the default, illustrative, is the statutory two years "
        "to bill a service), each insurer's setting",
    )
    relay_interval: float = Field(
        30.0,
        gt=0,
        le=300,
        description="outbox relay safety timeout, seconds (every commit of outbox rows wakes the relay)",
    )

    # The a-posteriori purpose check (seed 003 §7.3, oa_node/purpose.py); the seeds give no numbers: every
    # default is illustrative.
    purpose_period_days: int = Field(30, ge=1, le=366, description="length of a purpose-check period, days")
    purpose_delay_days: int = Field(
        30, ge=0, le=366, description="a consultation is followed by a billed service within these days"
    )
    purpose_min_consultations: int = Field(
        20, ge=1, description="a provider with fewer consultations in a period is never found against"
    )
    purpose_max_unfollowed_share: float = Field(
        0.5, ge=0, lt=1, description="a finding when more than this share of the consultations is unfollowed"
    )

    def purpose(self) -> PurposeRule:
        return PurposeRule(
            period_days=self.purpose_period_days,
            delay_days=self.purpose_delay_days,
            min_consultations=self.purpose_min_consultations,
            max_unfollowed_share=self.purpose_max_unfollowed_share,
        )

    def service_name(self) -> str:
        """The node's name in telemetry and logs: ``oa-<code>``."""
        return f"oa-{self.insurer_code}"

    def attributes(self) -> dict[str, str]:
        """The resource attributes of its telemetry: the insurer it speaks for."""
        return {"mycarenet.oa": self.insurer_code}

    @field_validator("insurer_code")
    @classmethod
    def _known_insurer(cls, value: str) -> str:
        if value not in INSURER_CODES:
            raise ValueError(f"must be one of {', '.join(INSURER_CODES)}")
        return value

    @model_validator(mode="after")
    def _default_database(self) -> OaSettings:
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite+aiosqlite:///var/oa-{self.insurer_code}.db")
        return self
