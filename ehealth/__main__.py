"""``mycarenet-ehealth``: run the eHealth service with settings from ``MCN_EHEALTH_*`` variables."""

from __future__ import annotations

from ehealth.app import build
from ehealth.settings import EhealthSettings
from mycarenet_core.service import run_service


def main() -> None:
    run_service("ehealth", EhealthSettings, build)


if __name__ == "__main__":
    main()
