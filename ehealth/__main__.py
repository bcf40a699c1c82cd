"""``mycarenet-ehealth``: run the eHealth service with settings from ``MCN_EHEALTH_*`` variables."""

from __future__ import annotations

from ehealth.app import EhealthApp
from ehealth.settings import EhealthSettings
from mycarenet_core.service import run_service


def main() -> None:
    run_service("ehealth", EhealthSettings, EhealthApp.from_settings)


if __name__ == "__main__":
    main()
