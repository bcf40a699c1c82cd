"""the register's change log, the positions in the insurers' holder feeds, moves of a DMG to no one

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 06:28:55.336532

Backfill: every existing relation gets one entry in the (compacted) relation change log, in creation order,
so that a follower starting from 0 learns the whole register.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "holder_feed_position",
        sa.Column("insurer_code", sa.String(length=3), nullable=False),
        sa.Column("applied_sequence", sa.BigInteger(), nullable=False),
        sa.Column("update_time", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("insurer_code", name=op.f("pk_holder_feed_position")),
    )
    change = op.create_table(
        "relation_change",
        sa.Column("sequence", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("change_time", sa.DateTime(), nullable=False),
        sa.Column("relation_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("sequence", name=op.f("pk_relation_change")),
        sa.UniqueConstraint("relation_id", name="uq_relation_change_relation"),
        sqlite_autoincrement=True,
    )
    assert change is not None
    with op.batch_alter_table("dmg_transfer", schema=None) as batch_op:
        batch_op.alter_column("new_relation_id", existing_type=sa.VARCHAR(length=64), nullable=True)

    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)  # the log begins now (naive UTC, as stored)
    relation = sa.table(
        "therapeutic_relation", sa.column("relation_id", sa.String()), sa.column("create_time", sa.DateTime())
    )
    rows = sa.select(sa.literal(now, sa.DateTime()), relation.c.relation_id).order_by(
        relation.c.create_time, relation.c.relation_id
    )
    op.execute(change.insert().from_select(["change_time", "relation_id"], rows))


def downgrade() -> None:
    # v0002 knows only moves to a new holder: the moves to no one are forgotten (their effect stays).
    transfer = sa.table("dmg_transfer", sa.column("new_relation_id", sa.String()))
    op.execute(transfer.delete().where(transfer.c.new_relation_id.is_(None)))
    with op.batch_alter_table("dmg_transfer", schema=None) as batch_op:
        batch_op.alter_column("new_relation_id", existing_type=sa.VARCHAR(length=64), nullable=False)

    op.drop_table("relation_change")
    op.drop_table("holder_feed_position")
