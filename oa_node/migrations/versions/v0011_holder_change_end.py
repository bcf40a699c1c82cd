"""holder change end

The last day of the new holder's holding on each holder change (oa_holder_change.end_date), so that the
DMG therapeutic relation eHealth keeps ends with the holding (issue 14 correction 5). Changes logged before
have none: their relations stay open until the next change.

Revision ID: 0011
Revises: '0010'
Create Date: 2026-11-28 15:50:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("oa_holder_change") as batch:
        batch.add_column(sa.Column("end_date", sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("oa_holder_change") as batch:
        batch.drop_column("end_date")
