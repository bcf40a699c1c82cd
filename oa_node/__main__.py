"""``mycarenet-oa``: run one insurer node from the environment (prefix ``MCN_OA_``)."""

from __future__ import annotations

from mycarenet_core.service import run_service
from oa_node.app import OaNodeApp
from oa_node.settings import OaSettings


def main() -> None:
    run_service(
        OaSettings.service_name, OaSettings, OaNodeApp.from_settings, attributes=OaSettings.attributes
    )


if __name__ == "__main__":
    main()
