"""``mycarenet-oa``: run one insurer node with settings from ``MCN_OA_*`` variables."""

from __future__ import annotations

import asyncio

from mycarenet_core.channels import client_credentials, server_credentials
from mycarenet_core.clock import clock_from_setting
from mycarenet_core.config import configure_logging, load
from mycarenet_core.telemetry import from_environment
from oa_node.app import OaNodeApp
from oa_node.settings import OaSettings


async def run(settings: OaSettings) -> None:
    server_creds = channel_creds = None
    if settings.tls_ca and settings.tls_cert and settings.tls_key:
        server_creds = server_credentials(settings.tls_ca, settings.tls_cert, settings.tls_key)
        channel_creds = client_credentials(settings.tls_ca, settings.tls_cert, settings.tls_key)
    code = settings.insurer_code
    telemetry = from_environment(
        f"oa-{code}", metrics_port=settings.metrics_port, attributes={"mycarenet.oa": code}
    )
    try:
        app = await OaNodeApp.create(
            insurer_code=code,
            database_url=settings.database_url,
            clock=clock_from_setting(settings.sandbox_date),
            hub_intake_target=settings.hub_intake_target,
            ehealth_target=settings.ehealth_target,
            relay_interval=settings.relay_interval,
            channel_credentials=channel_creds,
            server_credentials=server_creds,
            telemetry=telemetry,
        )
        app.server.health_bind = settings.health_bind  # plaintext health only, for probes
        await app.serve_forever(settings.bind, grace=settings.grace_seconds)
    finally:
        if telemetry is not None:
            telemetry.shutdown()  # flush the last spans


def main() -> None:
    settings = load(OaSettings)
    configure_logging(settings.log_level)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
