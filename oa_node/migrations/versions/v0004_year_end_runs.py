"""year end runs

The year ends an insurer node ran (oa_year_end_run, one row per year: each runs once) and the first mesh
date the node lived (oa_clock_origin), from which it runs year ends when the sandbox's test clock or time
goes over 31 December. An upgraded node's origin is set by its next start (the date it starts at).

Revision ID: 0004
Revises: '0003'
Create Date: 2026-11-28 09:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "oa_clock_origin",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("first_day", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oa_clock_origin")),
    )
    op.create_table(
        "oa_year_end_run",
        sa.Column("year", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("processing_date", sa.Date(), nullable=False),
        sa.Column("run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("patients_affected", sa.Integer(), nullable=False),
        sa.Column("payments_created", sa.Integer(), nullable=False),
        sa.Column("payments_recovered", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("year", name=op.f("pk_oa_year_end_run")),
    )


def downgrade() -> None:
    op.drop_table("oa_year_end_run")
    op.drop_table("oa_clock_origin")
