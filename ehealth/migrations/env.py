"""Alembic environment of eHealth: its own metadata and version table."""

from ehealth.models import metadata
from mycarenet_core.migrations import HISTORIES, run_env

run_env(metadata, HISTORIES["ehealth"].version_table)
