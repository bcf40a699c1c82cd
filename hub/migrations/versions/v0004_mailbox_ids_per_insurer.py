"""mailbox message ids per insurer

A mailbox message is unique by (insurer, message id), no longer by its message id alone: an insurer's ids
are its own, so one insurer can never shadow another's message by reusing its id (the hub's own
messages, with no insurer, keep their "hub:" ids). Existing rows are unique by id, so by both.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 12:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mailbox_message", schema=None) as batch_op:
        batch_op.drop_constraint("uq_mailbox_message_message_id", type_="unique")
        batch_op.create_unique_constraint(
            "uq_mailbox_message_insurer_message_id", ["message_id", "insurer_code"]
        )


def downgrade() -> None:
    # Fails if two insurers have since used one message id (then they cannot share the old key).
    with op.batch_alter_table("mailbox_message", schema=None) as batch_op:
        batch_op.drop_constraint("uq_mailbox_message_insurer_message_id", type_="unique")
        batch_op.create_unique_constraint("uq_mailbox_message_message_id", ["message_id"])
