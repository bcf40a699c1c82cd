"""pending_transfer dropped: the hub no longer moves DMG relations

eHealth follows every insurer's holder-change feed (the one durable channel of the move); the hub's own
queue of moves eHealth had not taken yet goes. A move still queued at the upgrade (eHealth was down when
its notify was answered) is logged with its source reference, for the administrator to apply by hand with
``TransferDmgRelation`` (the insurers' feeds start with the changes after their own upgrade).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 07:30:00.000000
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    left = op.get_bind().execute(sa.text("SELECT source_reference FROM pending_transfer")).scalars().all()
    if left:
        log.warning(
            "%d DMG relation moves were still queued at the hub and are dropped; apply them at eHealth "
            "(TransferDmgRelation, as the administrator): %s",
            len(left),
            ", ".join(left),
        )
    op.drop_table("pending_transfer")


def downgrade() -> None:
    op.create_table(
        "pending_transfer",
        sa.Column("source_reference", sa.String(length=250), nullable=False),
        sa.Column("request", sa.LargeBinary(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=False),
        sa.PrimaryKeyConstraint("source_reference", name=op.f("pk_pending_transfer")),
    )
