"""invoice lines

The eFact lines an insurer node acknowledged to the hub (oa_invoice_line): stored before the
acknowledgement, answered afterwards (the answer goes to the outbox in the same transaction as
``answered``). One row per (requester, batch reference, line number).

Revision ID: 0007
Revises: '0006'
Create Date: 2026-11-28 15:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "oa_invoice_line",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("requester_inami", sa.String(), nullable=False),
        sa.Column("batch_reference", sa.String(), nullable=False),
        sa.Column("line_number", sa.Integer(), nullable=False),
        sa.Column("hub_reference", sa.String(), nullable=False),
        sa.Column("patient_niss", sa.String(), nullable=False),
        sa.Column("provider_inami", sa.String(), nullable=False),
        sa.Column("contact_date", sa.Date(), nullable=False),
        sa.Column("code", sa.String(), nullable=False),
        sa.Column("amount", sa.String(), nullable=False),
        sa.Column("submitted_on", sa.Date(), nullable=False),
        sa.Column("fingerprint", sa.String(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered", sa.Boolean(), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oa_invoice_line")),
        sa.UniqueConstraint(
            "requester_inami",
            "batch_reference",
            "line_number",
            name=op.f("uq_oa_invoice_line_requester_inami"),
        ),
    )
    with op.batch_alter_table("oa_invoice_line", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_oa_invoice_line_answered"), ["answered"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("oa_invoice_line", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oa_invoice_line_answered"))
    op.drop_table("oa_invoice_line")
