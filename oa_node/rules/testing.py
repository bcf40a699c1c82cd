"""Helpers for tests and debugging: realistic INAMI numbers and one-line renderings of DMG rows.

Dates render as dd.mm.yyyy like SPEC §5, and providers through an optional ``names`` mapping, so a
table-driven test can state the expected state of a file in the words of the seed's examples.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime

from .model import ClosureMessage, Holding, Message, Payment


def inami_number(sequence: int, competence: str = "003", profession: int = 1) -> str:
    """An INAMI number with valid check digits: profession, 5-digit sequence, check, competence (SPEC §2)."""
    head = f"{profession}{sequence:05d}"
    check = 97 - int(head) % 97
    return f"{head}{check:02d}{competence}"


def d(text: str) -> date:
    """Parse dd.mm.yyyy."""
    return datetime.strptime(text, "%d.%m.%Y").date()


def fmt(day: date) -> str:
    """Render dd.mm.yyyy."""
    return day.strftime("%d.%m.%Y")


def _name(provider: str, names: Mapping[str, str]) -> str:
    return names.get(provider, provider)


def describe_holding(holding: Holding, names: Mapping[str, str] | None = None) -> str:
    """E.g. ``M1 PAPER 01.07.2012-31.08.2012 CLOSED``."""
    text = (
        f"{_name(holding.holder, names or {})} {holding.procedure.value} "
        f"{fmt(holding.start)}-{fmt(holding.end)} {holding.status.value}"
    )
    return text + (" reopened" if holding.reopened else "")


def describe_payment(payment: Payment, names: Mapping[str, str] | None = None) -> str:
    """E.g. ``M2 2012 NOTIFICATION recovered``."""
    text = f"{_name(payment.beneficiary, names or {})} {payment.year} {payment.kind.value}"
    return text + (" recovered" if payment.recovered else "")


def describe_message(message: Message, names: Mapping[str, str] | None = None) -> str:
    """E.g. ``CLOSURE M1 end 31.08.2012, M2 from 01.09.2012`` or ``EXTENSION M1 ...``."""
    n = names or {}
    if isinstance(message, ClosureMessage):
        return (
            f"CLOSURE {_name(message.previous_holder, n)} end {fmt(message.previous_end)}, "
            f"{_name(message.new_holder, n)} from {fmt(message.new_start)}"
        )
    return (
        f"EXTENSION {_name(message.holder, n)} until {fmt(message.right_end)}, "
        f"contact {fmt(message.contact_date)} by {_name(message.contact_provider, n)}"
    )
