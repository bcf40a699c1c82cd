"""Alembic environment of an insurer node: its own metadata and version table."""

from mycarenet_core.migrations import HISTORIES, run_env
from oa_node.models import metadata

run_env(metadata, HISTORIES["oa_node"].version_table)
