"""``mycarenet-hub``: run the MyCareNet hub from the environment (prefix ``MCN_HUB_``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from hub.app import HubApp
from hub.throttle import ThrottleConfig
from mycarenet_core.channels import client_credentials, server_credentials
from mycarenet_core.clock import clock_from_setting
from mycarenet_core.config import MeshSettings, configure_logging, load
from mycarenet_core.identifiers import INSURER_CODES
from mycarenet_core.telemetry import Telemetry, from_environment


class HubSettings(MeshSettings):
    """Hub configuration (every variable prefixed ``MCN_HUB_``)."""

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


Tls = tuple[Path | None, Path | None, Path | None]


async def run(settings: HubSettings) -> None:
    tls = None if settings.insecure else (settings.tls_ca, settings.tls_cert, settings.tls_key)
    telemetry = from_environment("hub", metrics_port=settings.metrics_port)
    try:
        await _serve(settings, tls, telemetry)
    finally:
        if telemetry is not None:
            telemetry.shutdown()  # flush the last spans


async def _serve(settings: HubSettings, tls: Tls | None, telemetry: Telemetry | None) -> None:
    app = await HubApp.create(
        database_url=settings.database_url,
        clock=clock_from_setting(settings.sandbox_date),
        ehealth_target=settings.ehealth_target,
        oa_targets=settings.targets(),
        channel_credentials=client_credentials(*tls) if tls and all(tls) else None,  # type: ignore[arg-type]
        server_credentials=server_credentials(*tls) if tls and all(tls) else None,  # type: ignore[arg-type]
        throttle=ThrottleConfig(rate=settings.throttle_rate, burst=settings.throttle_burst),
        telemetry=telemetry,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app.server.health_bind = settings.health_bind  # plaintext health only, for probes
    await app.start(settings.bind)
    try:
        await stop.wait()
    finally:
        await app.stop(settings.grace_seconds)


def main() -> None:
    settings = load(HubSettings)
    configure_logging(settings.log_level)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
