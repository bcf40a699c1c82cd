"""Alembic environment of the hub: its own metadata and version table."""

from hub.models import HubBase
from mycarenet_core.migrations import HISTORIES, run_env

run_env(HubBase.metadata, HISTORIES["hub"].version_table)
