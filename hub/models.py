"""The hub's own tables (its own SQLModel base): routing index, feed cursors, mailbox, list requests,
audit."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from sqlalchemy import Column, DateTime, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from mycarenet_core.db import declarative_base

if TYPE_CHECKING:  # mypy cannot use a base class made at run time
    HubBase = SQLModel
else:
    HubBase = declarative_base()


def _instant(nullable: bool = False) -> Column:  # type: ignore[type-arg]
    """An aware instant (TIMESTAMP WITH TIME ZONE on PostgreSQL)."""
    return Column(DateTime(timezone=True), nullable=nullable)


class Affiliation(HubBase, table=True):
    """The affiliation periods of one NISS at one insurer, as the insurer's feed last said."""

    __tablename__ = "routing_affiliation"
    __table_args__ = (Index("ix_routing_member", "insurer_code", "registration_number"),)

    niss: str = Field(primary_key=True, max_length=11)
    insurer_code: str = Field(primary_key=True, max_length=3)
    registration_number: str = Field(default="", max_length=16)
    # "YYYY-MM-DD/YYYY-MM-DD;YYYY-MM-DD/" (an empty end = open).
    periods: str = Field(default="", max_length=2000)


class FeedCursor(HubBase, table=True):
    """Last affiliation-feed sequence applied, per insurer."""

    __tablename__ = "feed_cursor"

    insurer_code: str = Field(primary_key=True, max_length=3)
    sequence: int = Field(default=0)


class StoredMessage(HubBase, table=True):
    """One mailbox message, stored once per (insurer, message id): an insurer's ids are its own, so one
    insurer can never shadow another's message (the hub's own messages have no insurer)."""

    __tablename__ = "mailbox_message"
    __table_args__ = (
        Index("ix_mailbox_pending", "recipient_inami", "confirmed", "id"),
        # message id first: confirms look messages up by id (and recipient), the store by id and insurer
        UniqueConstraint("message_id", "insurer_code", name="uq_mailbox_message_insurer_message_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    message_id: str = Field(max_length=200)
    recipient_inami: str = Field(max_length=11)
    kind: int
    insurer_code: str = Field(default="", max_length=3)
    requester_reference: str = Field(default="", max_length=200)
    content_hash: str = Field(max_length=64, index=True)
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    stored_at: dt.datetime = Field(sa_column=_instant())  # the hub's clock (the sandbox's test clock)
    confirmed: bool = Field(default=False)
    confirmed_at: dt.datetime | None = Field(default=None, sa_column=_instant(True))
    duplicate_count: int = Field(default=0)


class ListRequest(HubBase, table=True):
    """A posted patient-list request, until its answer is in the mailbox."""

    __tablename__ = "list_request"
    __table_args__ = (Index("ix_list_requester_ref", "requester_inami", "requester_reference", unique=True),)

    reference: str = Field(primary_key=True, max_length=64)
    requester_inami: str = Field(max_length=11)
    requester_reference: str = Field(max_length=200)
    year: int
    insurer_codes: str = Field(max_length=100)  # comma separated
    context: bytes = Field(sa_column=Column(LargeBinary, nullable=False))  # serialized oa RequestContext
    tack: bytes = Field(sa_column=Column(LargeBinary, nullable=False))  # serialized TechnicalAck
    created_at: dt.datetime = Field(sa_column=_instant())  # the hub's clock
    done: bool = Field(default=False, index=True)


class AuditRecord(HubBase, table=True):
    """Who asked what, for whom, through whom, when, and how it ended (seed 001 art. 3)."""

    __tablename__ = "audit"

    id: int | None = Field(default=None, primary_key=True)
    time: dt.datetime = Field(sa_column=_instant())
    rpc: str = Field(max_length=60)
    # The certificate that called (client, oa-100, backoffice ...), as the trust interceptor identified it.
    peer: str = Field(default="", max_length=20)
    requester_inami: str = Field(default="", max_length=11, index=True)
    executor_id: str = Field(default="", max_length=20)
    executor_kind: str = Field(default="", max_length=30)
    mandate_id: str = Field(default="", max_length=64)
    session_id: str = Field(default="", max_length=64)
    requester_reference: str = Field(default="", max_length=200)
    insurer_code: str = Field(default="", max_length=30)
    outcome: str = Field(max_length=30)
    reason: str = Field(default="", max_length=60)
    codes: str = Field(default="", max_length=60)
    duration_ms: float = Field(default=0.0)


class AbuseStrike(HubBase, table=True):
    """One finding of systematic consultation against a requester of record and its consequence (seed 003
    §7.2–§7.3, seed 001 §3): the registry the hub refuses excluded providers by (hub/abuse.py)."""

    __tablename__ = "abuse_strike"
    __table_args__ = (Index("ix_abuse_strike_provider", "provider_inami", "detected_at"),)

    id: int | None = Field(default=None, primary_key=True)
    # The usage notice that told the provider (its mailbox message id).
    notice_id: str = Field(max_length=200)
    # Idempotency: "<insurer>:<message id>" of an insurer's finding, "hub:<message id>" of the hub's own.
    source_key: str = Field(max_length=210, unique=True)
    insurer_code: str = Field(default="", max_length=3)
    provider_inami: str = Field(max_length=11)
    finding: str = Field(max_length=40)  # DISTINCT_PATIENTS | UNFOLLOWED_CONSULTATIONS
    consequence: str = Field(max_length=20)  # WARNING | EXCLUSION
    detected_at: dt.datetime = Field(sa_column=_instant())  # the hub's clock
    excluded_until: dt.datetime | None = Field(default=None, sa_column=_instant(True))
    repeats_notice_id: str = Field(default="", max_length=200)
    consultation_count: int = Field(default=0)
    distinct_patients: int = Field(default=0)
    unfollowed_count: int = Field(default=0)
    rule: str = Field(default="", max_length=300)
