"""trust model: key states, credential revocation, what a session was opened with, the cadastre change log,
the audit trail

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 05:53:37.414583

Backfills: existing keys get their state (no retire time: CURRENT, else RETIRED; the app publishes a NEXT key
at its next start), and every existing provider then organisation gets one entry in the cadastre change log
(in INAMI order), so that a follower starting from 0 learns the whole cadastre.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("method", sa.String(length=80), nullable=False),
        sa.Column("certificate", sa.String(length=64), nullable=False),
        sa.Column("executor_kind", sa.String(length=32), nullable=False),
        sa.Column("executor_id", sa.String(length=32), nullable=False),
        sa.Column("requester_inami", sa.String(length=11), nullable=False),
        sa.Column("mandate_id", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=80), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit")),
    )
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_requester_inami"), ["requester_inami"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_subject"), ["subject"], unique=False)

    change = op.create_table(
        "cadastre_change",
        sa.Column("sequence", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("change_time", sa.DateTime(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("inami", sa.String(length=11), nullable=False),
        sa.PrimaryKeyConstraint("sequence", name=op.f("pk_cadastre_change")),
        sa.UniqueConstraint("kind", "inami", name="uq_cadastre_change_entry"),
        sqlite_autoincrement=True,
    )
    assert change is not None
    with op.batch_alter_table("credential", schema=None) as batch_op:
        batch_op.add_column(sa.Column("revoke_time", sa.DateTime(), nullable=True))

    with op.batch_alter_table("session", schema=None) as batch_op:
        batch_op.add_column(sa.Column("credential_fingerprint", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_session_mandate_id"), ["mandate_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_session_principal_inami"), ["principal_inami"], unique=False)
        batch_op.create_index("ix_session_subject", ["subject_id", "subject_kind"], unique=False)

    with op.batch_alter_table("signing_key", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("state", sa.String(length=16), nullable=False, server_default="CURRENT")
        )
        batch_op.create_index(batch_op.f("ix_signing_key_state"), ["state"], unique=False)
    key = sa.table("signing_key", sa.column("state", sa.String()), sa.column("retire_time", sa.DateTime()))
    op.execute(key.update().where(key.c.retire_time.is_not(None)).values(state="RETIRED"))
    with op.batch_alter_table("signing_key", schema=None) as batch_op:
        batch_op.alter_column("state", existing_type=sa.String(length=16), server_default=None)

    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)  # the log begins now (naive UTC, as stored)
    for kind, table in (("provider", "provider"), ("organisation", "organisation")):
        source = sa.table(table, sa.column("inami", sa.String()))
        rows = sa.select(
            sa.literal(now, sa.DateTime()), sa.literal(kind, sa.String()), source.c.inami
        ).order_by(source.c.inami)
        op.execute(change.insert().from_select(["change_time", "kind", "inami"], rows))


def downgrade() -> None:
    # v0001 knows one unretired key, the signing one: NEXT keys never signed anything, drop them.
    key = sa.table("signing_key", sa.column("state", sa.String()))
    op.execute(key.delete().where(key.c.state == "NEXT"))
    with op.batch_alter_table("signing_key", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_signing_key_state"))
        batch_op.drop_column("state")

    with op.batch_alter_table("session", schema=None) as batch_op:
        batch_op.drop_index("ix_session_subject")
        batch_op.drop_index(batch_op.f("ix_session_principal_inami"))
        batch_op.drop_index(batch_op.f("ix_session_mandate_id"))
        batch_op.drop_column("credential_fingerprint")

    with op.batch_alter_table("credential", schema=None) as batch_op:
        batch_op.drop_column("revoke_time")

    op.drop_table("cadastre_change")
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_subject"))
        batch_op.drop_index(batch_op.f("ix_audit_requester_inami"))

    op.drop_table("audit")
