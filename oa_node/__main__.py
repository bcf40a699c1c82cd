"""``mycarenet-oa``: run one insurer node from the environment (prefix ``MCN_OA_``)."""

from __future__ import annotations

from mycarenet_core.channels import client_credentials, server_credentials
from mycarenet_core.clock import clock_from_setting
from mycarenet_core.service import run_service
from mycarenet_core.telemetry import Telemetry
from oa_node.app import OaNodeApp
from oa_node.settings import OaSettings


async def build(settings: OaSettings, telemetry: Telemetry | None) -> OaNodeApp:
    channel_creds = server_creds = None
    if settings.tls_ca and settings.tls_cert and settings.tls_key:
        channel_creds = client_credentials(settings.tls_ca, settings.tls_cert, settings.tls_key)
        server_creds = server_credentials(settings.tls_ca, settings.tls_cert, settings.tls_key)
    return await OaNodeApp.create(
        insurer_code=settings.insurer_code,
        database_url=settings.database_url,
        clock=clock_from_setting(settings.sandbox_date, settings.sandbox_offset_seconds),
        hub_intake_target=settings.hub_intake_target,
        ehealth_target=settings.ehealth_target,
        relay_interval=settings.relay_interval,
        channel_credentials=channel_creds,
        server_credentials=server_creds,
        telemetry=telemetry,
    )


def main() -> None:
    run_service(
        lambda settings: f"oa-{settings.insurer_code}",
        OaSettings,
        build,
        attributes=lambda settings: {"mycarenet.oa": settings.insurer_code},
    )


if __name__ == "__main__":
    main()
