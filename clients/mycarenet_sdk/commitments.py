"""The pharmacy's side of the payment commitment (seed 003 §5.3, §9.2): which stored commitment may be reused,
and what the pharmacist falls back to when the rights cannot be consulted online.

Pure functions, no I/O: pharmacy software keeps the commitments it obtained (only as long as the invoice and
its rejections need them, §5.3) and asks :func:`choose` when the network is down, or walks the whole emergency
scheme of §9.2 with :func:`decide`.

The scheme of §9.2, step by step (numbers as in the seed's diagram):

1–2. The network is available: consult online; bill with the online data, under the new payment
     commitment (and store it).
3–4. Otherwise, if the patient is known in the pharmacy's database and one of its stored commitments covers
     the dispensing date (the latest obtained first, and never one whose coverage ended before it was
     obtained): bill with that consultation's data, reusing its commitment (flag "reused").
5.   Otherwise, if the pharmacist has enough elements to trust the last known online data: bill with them,
     under the basic principle (the insurer pays if its own exact data give the same amounts, §5.1).
6.   Otherwise, with the patient's SIS card: bill with its data, under the SIS commitment.
7–8. Otherwise, with another document the pharmacist trusts (a mutuality sticker): bill with it, under the
     basic principle.
     Otherwise: dispense under form 704 (annex 30 of the health-care regulation).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable
from dataclasses import dataclass

import grpc

from mycarenet_core import dates
from mycarenet_core.gen.mycarenet.insurability.v1 import insurability_pb2

NETWORK_UNAVAILABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
"""The answers that mean "the online consultation is not possible" (seed 003 §9.2: network unavailable, a
response far too slow, no answer from the insurer)."""


@dataclass(frozen=True)
class StoredCommitment:
    """A payment commitment as the pharmacy stored it from an online answer."""

    niss: str
    consulted: dt.date
    """The day it was obtained (the consultation date, not the dispensing date)."""
    coverage_start: dt.date
    coverage_end: dt.date
    agreement_number: str
    ct1: str = ""
    ct2: str = ""

    @property
    def reusable_until(self) -> dt.date | None:
        """The last dispensing date it may be reused for, or ``None``: never (its coverage ended before the
        day it was obtained, seed 003 §11.1 examples 4 and 5)."""
        return None if self.coverage_end < self.consulted else self.coverage_end

    def covers(self, dispensing: dt.date) -> bool:
        """Reusable for ``dispensing`` (§5.3: between the coverage's start and end, both included)."""
        return self.reusable_until is not None and self.coverage_start <= dispensing <= self.coverage_end


def stored_from(niss: str, commitment: insurability_pb2.PaymentCommitment) -> StoredCommitment:
    """The commitment of an online answer, as the pharmacy stores it."""
    return StoredCommitment(
        niss=niss,
        consulted=dates.from_proto(commitment.consulted_on, "consulted_on"),
        coverage_start=dates.from_proto(commitment.coverage.start, "coverage.start"),
        coverage_end=dates.from_proto(commitment.coverage.end, "coverage.end"),
        agreement_number=commitment.agreement_number,
        ct1=commitment.status.ct1,
        ct2=commitment.status.ct2,
    )


def choose(stored: Iterable[StoredCommitment], niss: str, dispensing: dt.date) -> StoredCommitment | None:
    """The commitment to reuse for this patient and dispensing date while the network is unavailable: the
    latest obtained among those covering the date (§5.3 "le dernier engagement de paiement obtenu qui couvre
    cette date"), or ``None``."""
    covering = [c for c in stored if c.niss == niss and c.covers(dispensing)]
    return max(covering, key=lambda c: (c.consulted, c.coverage_end), default=None)


class Basis(enum.Enum):
    """What the pharmacist bills on, and under which guarantee (§9.2)."""

    ONLINE = "online consultation: new payment commitment"
    REUSED = "reused payment commitment (flag 'reused' in the tarification)"
    LAST_ONLINE_DATA = "last known online data: basic principle"
    SIS_CARD = "SIS card: SIS payment commitment"
    DOCUMENT = "another document (mutuality sticker): basic principle"
    FORM_704 = "dispensing under form 704 (annex 30 of the health-care regulation)"


@dataclass(frozen=True)
class Decision:
    basis: Basis
    commitment: StoredCommitment | None = None
    """With :attr:`Basis.REUSED`: the commitment to reuse (its agreement number goes in the invoice)."""


def decide(
    *,
    network_available: bool,
    stored: Iterable[StoredCommitment],
    niss: str,
    dispensing: dt.date,
    trusts_last_data: bool = False,
    has_sis_card: bool = False,
    has_document: bool = False,
    trusts_document: bool = False,
) -> Decision:
    """The emergency scheme of seed 003 §9.2 for one dispensing (see the module's documentation)."""
    if network_available:
        return Decision(Basis.ONLINE)
    reused = choose(stored, niss, dispensing)
    if reused is not None:
        return Decision(Basis.REUSED, reused)
    if trusts_last_data and any(c.niss == niss for c in stored):
        return Decision(Basis.LAST_ONLINE_DATA)
    if has_sis_card:
        return Decision(Basis.SIS_CARD)
    if has_document and trusts_document:
        return Decision(Basis.DOCUMENT)
    return Decision(Basis.FORM_704)


__all__ = ["NETWORK_UNAVAILABLE", "Basis", "Decision", "StoredCommitment", "choose", "decide", "stored_from"]
