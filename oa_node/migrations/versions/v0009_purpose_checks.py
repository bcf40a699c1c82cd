"""purpose checks

The periods of the a-posteriori purpose check of the insurability consultations already checked (seed 003
§7.3; oa_node/purpose.py), and an index of the audit by RPC and time for the check's reading of the
consultations answered.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28 16:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "oa_purpose_check",
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("consultations", sa.Integer(), nullable=False),
        sa.Column("findings", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("period_start"),
    )
    op.create_index("ix_oa_audit_rpc_at", "oa_audit", ["rpc", "at"])


def downgrade() -> None:
    op.drop_index("ix_oa_audit_rpc_at", table_name="oa_audit")
    op.drop_table("oa_purpose_check")
