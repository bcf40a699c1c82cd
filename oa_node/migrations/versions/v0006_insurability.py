"""insurability

Members' insurability periods with their status (oa_insurability: CT1/CT2, preferential rate, maximum
billing), their care statuses by period (oa_care_status: chronic condition, palliative, hospitalised), and
the insurer's secret for its agreement numbers (oa_agreement_key, made at random here, seed 003 §5.4).

Revision ID: 0006
Revises: '0005'
Create Date: 2026-11-28 12:40:00
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "oa_insurability",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("niss", sa.String(), nullable=False),
        sa.Column("start", sa.Date(), nullable=False),
        sa.Column("end", sa.Date(), nullable=False),
        sa.Column("ct1", sa.String(length=3), nullable=False),
        sa.Column("ct2", sa.String(length=3), nullable=False),
        sa.Column("preferential_rate", sa.Boolean(), nullable=False),
        sa.Column("maximum_billing", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["niss"], ["oa_member.niss"], name=op.f("fk_oa_insurability_niss_oa_member")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oa_insurability")),
    )
    with op.batch_alter_table("oa_insurability", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_oa_insurability_niss"), ["niss"], unique=False)
    op.create_table(
        "oa_care_status",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("niss", sa.String(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("start", sa.Date(), nullable=False),
        sa.Column("end", sa.Date(), nullable=True),
        sa.ForeignKeyConstraint(["niss"], ["oa_member.niss"], name=op.f("fk_oa_care_status_niss_oa_member")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oa_care_status")),
    )
    with op.batch_alter_table("oa_care_status", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_oa_care_status_niss"), ["niss"], unique=False)
    keys = op.create_table(
        "oa_agreement_key",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oa_agreement_key")),
    )
    op.bulk_insert(keys, [{"id": 1, "secret": os.urandom(32)}])


def downgrade() -> None:
    op.drop_table("oa_agreement_key")
    with op.batch_alter_table("oa_care_status", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oa_care_status_niss"))
    op.drop_table("oa_care_status")
    with op.batch_alter_table("oa_insurability", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oa_insurability_niss"))
    op.drop_table("oa_insurability")
