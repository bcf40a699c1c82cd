"""``mycarenet-hub``: run the MyCareNet hub from the environment (prefix ``MCN_HUB_``)."""

from __future__ import annotations

from hub.app import HubApp
from hub.settings import HubSettings, parse_targets
from mycarenet_core.service import run_service


def main() -> None:
    run_service("hub", HubSettings, HubApp.from_settings)


__all__ = ["HubSettings", "main", "parse_targets"]

if __name__ == "__main__":
    main()
