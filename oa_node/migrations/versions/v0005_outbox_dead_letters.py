"""outbox dead letters

A message of the outbox that cannot be delivered because of itself (bigger than a delivery may be, or
refused by the hub for good) is set aside with its error (``dead_at``, ``error``) instead of blocking every
message behind it; the operator lists and re-queues them (``python -m oa_node.dead_letters``).

Revision ID: 0005
Revises: '0004'
Create Date: 2026-11-28 12:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("oa_outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dead_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("error", sa.String(length=500), nullable=False, server_default=""))
    with op.batch_alter_table("oa_outbox", schema=None) as batch_op:
        batch_op.alter_column("error", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("oa_outbox", schema=None) as batch_op:
        batch_op.drop_column("error")
        batch_op.drop_column("dead_at")
