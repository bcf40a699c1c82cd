"""``mycarenet-ehealth``: run the eHealth service with settings from ``MCN_EHEALTH_*`` variables."""

from __future__ import annotations

import asyncio

from ehealth.app import EhealthApp
from ehealth.settings import EhealthSettings
from mycarenet_core.channels import server_credentials
from mycarenet_core.clock import clock_from_setting
from mycarenet_core.config import configure_logging, load
from mycarenet_core.telemetry import from_environment


async def run(settings: EhealthSettings) -> None:
    credentials = None
    if settings.tls_ca and settings.tls_cert and settings.tls_key:
        credentials = server_credentials(settings.tls_ca, settings.tls_cert, settings.tls_key)
    telemetry = from_environment("ehealth", metrics_port=settings.metrics_port)
    try:
        app = await EhealthApp.create(
            database_url=settings.database_url,
            clock=clock_from_setting(settings.sandbox_date),
            max_token_lifetime=settings.max_token_lifetime,
            audience=settings.audience,
            challenge_ttl=settings.challenge_ttl,
            credentials=credentials,
            telemetry=telemetry,
        )
        app.server.health_bind = settings.health_bind  # plaintext health only, for probes
        await app.serve_forever(settings.bind, grace=settings.grace_seconds)
    finally:
        if telemetry is not None:
            telemetry.shutdown()  # flush the last spans


def main() -> None:
    settings = load(EhealthSettings)
    configure_logging(settings.log_level)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
