"""rejected tarification lines

The pharmacy's tarification lines an insurer rejected (ValidateTarification, seed 003 §5.1): a tarification
office may consult a patient's insurability only for such a line of the pharmacy that mandated it (seed 003
§8.2.2.7).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28 16:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "oa_rejected_tarification",
        sa.Column("provider_inami", sa.String(length=11), nullable=False),
        sa.Column("niss", sa.String(length=11), nullable=False),
        sa.Column("dispensing_date", sa.Date(), nullable=False),
        sa.Column("line_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("rejected_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("provider_inami", "niss", "dispensing_date", "line_id"),
    )


def downgrade() -> None:
    op.drop_table("oa_rejected_tarification")
