"""abuse strikes

The registry of findings of systematic consultation and their consequences (warning, temporary exclusion)
against requesters of record of the insurability services (seed 003 §7.2–§7.3, seed 001 §3; hub/abuse.py).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 16:00:00.000000
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
    op.create_table(
        "abuse_strike",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("notice_id", sa.String(length=200), nullable=False),
        sa.Column("source_key", sa.String(length=210), nullable=False),
        sa.Column("insurer_code", sa.String(length=3), nullable=False),
        sa.Column("provider_inami", sa.String(length=11), nullable=False),
        sa.Column("finding", sa.String(length=40), nullable=False),
        sa.Column("consequence", sa.String(length=20), nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("excluded_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("repeats_notice_id", sa.String(length=200), nullable=False),
        sa.Column("consultation_count", sa.Integer(), nullable=False),
        sa.Column("distinct_patients", sa.Integer(), nullable=False),
        sa.Column("unfollowed_count", sa.Integer(), nullable=False),
        sa.Column("rule", sa.String(length=300), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("source_key"),
    )
    op.create_index("ix_abuse_strike_provider", "abuse_strike", ["provider_inami", "detected_at"])


def downgrade() -> None:
    op.drop_index("ix_abuse_strike_provider", table_name="abuse_strike")
    op.drop_table("abuse_strike")
