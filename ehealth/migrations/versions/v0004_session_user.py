"""session user

The person who opened an organisation's session (the pharmacist of a pharmacy's session, seed 003
§8.2.2.3) and the fingerprint of the key they signed with: revoking that key, ending that pharmacist's
validity or membership ends the session, as it does a provider's own.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 17:00:00.000000
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
    with op.batch_alter_table("session") as batch_op:
        batch_op.add_column(sa.Column("user_inami", sa.String(length=11), nullable=True))
        batch_op.add_column(sa.Column("user_fingerprint", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_session_user_inami"), ["user_inami"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("session") as batch_op:
        batch_op.drop_index(batch_op.f("ix_session_user_inami"))
        batch_op.drop_column("user_fingerprint")
        batch_op.drop_column("user_inami")
