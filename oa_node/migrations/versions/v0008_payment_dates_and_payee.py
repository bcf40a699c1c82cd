"""payment dates and payee; tariff source

A fee's payment run (oa_payment.paid_on: the day the insurer's payment run pays it, within the 30 days of
seed 002) and its payee (oa_payment.payee: PROVIDER, or PATIENT for a 102771 paid in cash and reimbursed
to the patient, seed 000 §1.1.1). Each tariff line says where its amount comes from (oa_tariff.source:
"seed 002" or "illustrative") and from when it is paid (oa_tariff.payable_from: seed 002's 55 EUR is paid
from 1 July 2016).

Revision ID: 0008
Revises: '0007'
Create Date: 2026-11-28 15:40:00
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("oa_payment") as batch:
        batch.add_column(sa.Column("payee", sa.String(), nullable=False, server_default="PROVIDER"))
        batch.add_column(sa.Column("paid_on", sa.Date(), nullable=True))
    with op.batch_alter_table("oa_tariff") as batch:
        batch.add_column(sa.Column("source", sa.String(), nullable=False, server_default="illustrative"))
        batch.add_column(sa.Column("payable_from", sa.Date(), nullable=True))
    op.execute("UPDATE oa_tariff SET source = 'seed 002' WHERE year = 2016")
    op.execute(
        sa.text(
            "UPDATE oa_tariff SET payable_from = :day WHERE year = 2016 AND category = 'CHRONIC_45_74'"
        ).bindparams(sa.bindparam("day", dt.date(2016, 7, 1), type_=sa.Date()))
    )


def downgrade() -> None:
    with op.batch_alter_table("oa_tariff") as batch:
        batch.drop_column("payable_from")
        batch.drop_column("source")
    with op.batch_alter_table("oa_payment") as batch:
        batch.drop_column("paid_on")
        batch.drop_column("payee")
