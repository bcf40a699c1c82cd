"""The schema of a scenario file (``scenarios/*.yaml``), as pydantic models with documented maxima.

A scenario is a dated story: its actors (providers, by role), its patients, then steps played one after
the other, each an action and the answer expected. The format is described for authors in
``scenarios/README.md``; this module is its reference. Every string and list has a maximum (the constants
below); a file that breaks one is refused before anything is played.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator

from mycarenet_core.codes import McnCode
from mycarenet_core.identifiers import INSURER_CODES

MAX_FILE_BYTES = 256 * 1024
"""A scenario file is at most 256 KiB."""
MAX_ACTORS = 20
MAX_PATIENTS = 20
MAX_STEPS = 200
MAX_LABEL = 40
"""Actor and patient labels: a letter then letters, digits or ``_``, at most 40 characters."""
MAX_TITLE = 200
MAX_TEXT = 500
"""Free texts: a step's name, a known gap, a source."""
MAX_NAME = 60
"""A person's first or last name."""
MAX_ITEMS = 50
"""Expected payments, holdings, messages, list entries or periods, each."""
MAX_ADVANCE_DAYS = 3660
"""A clock step advances at most ten years."""
MAX_WAIT_SECONDS = 300.0

GRPC_STATUSES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
ROLES = ("gp", "gp_in_training", "specialist", "dentist")
PAYMENT_KINDS = (
    "notification",
    "accelerated_prolongation",
    "paper_attestation",
    "administrative_prolongation",
)
HOLDING_STATUSES = ("active", "closed", "cancelled", "expired")
PROCEDURES = ("electronic", "paper")

_DOTTED = re.compile(r"^(\d{2})\.(\d{2})\.(\d{4})$")


def parse_day(value: Any) -> dt.date:
    """A date as YAML gives it (``2013-08-22``) or as SPEC writes it (``"22.08.2013"``)."""
    if isinstance(value, dt.datetime):
        raise ValueError("a date, not a timestamp")
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        text = value.strip()
        match = _DOTTED.match(text)
        try:
            if match:
                day, month, year = (int(g) for g in match.groups())
                return dt.date(year, month, day)
            return dt.date.fromisoformat(text)
        except ValueError as error:
            raise ValueError(f"{value!r} is not a date: {error}") from None
    raise ValueError(f"{value!r} is not a date (YYYY-MM-DD or DD.MM.YYYY)")


def _parse_period(value: Any) -> Any:
    """``"22.08.2013..31.12.2015"`` (or ``{start: ..., end: ...}``) as a mapping."""
    if isinstance(value, str):
        parts = value.split("..")
        if len(parts) != 2:
            raise ValueError(f"{value!r} is not a period (START..END)")
        return {"start": parts[0], "end": parts[1]}
    return value


def _as_text(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Day = Annotated[dt.date, BeforeValidator(parse_day)]
Label = Annotated[str, StringConstraints(pattern=rf"^[A-Za-z][A-Za-z0-9_]{{0,{MAX_LABEL - 1}}}$")]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME)]
Code = Annotated[str, BeforeValidator(_as_text), StringConstraints(pattern=r"^\d{6}$")]
Insurer = Annotated[Literal[INSURER_CODES], BeforeValidator(_as_text)]  # type: ignore[valid-type]
Year = Annotated[int, Field(ge=1990, le=2099)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Period(Model):
    """A period of a right: ``START..END`` (both days included)."""

    start: Day
    end: Day

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        if self.end < self.start:
            raise ValueError("the period ends before it starts")
        return self


PeriodField = Annotated[Period, BeforeValidator(_parse_period)]


class Actor(Model):
    """A provider of the story, made fresh for each run (a new INAMI number and credential)."""

    role: Literal["gp", "gp_in_training", "specialist", "dentist"] = "gp"
    enrolled: bool = False  # for the electronic DMG, at every insurer
    supervisor: Label | None = None  # a GP in training's supervising GP (an actor)
    first_name: Name | None = None
    last_name: Name | None = None


class Patient(Model):
    """A patient of the story, made fresh for each run (a new NISS with this birth date and sex)."""

    born: Day
    sex: Literal["male", "female"] = "female"
    insurer: Insurer = "100"
    chronic: bool = False
    first_name: Name | None = None
    last_name: Name | None = None


# --- actions ---------------------------------------------------------------------------------------------


class Notify(Model):
    """The provider notifies the opening or takeover of the patient's DMG (played on the contact date)."""

    by: Label
    patient: Label
    contact: Day
    code: Code = "101076"


class Consult(Model):
    """The provider consults the patient's DMG right at ``date`` (default: the day it is played)."""

    by: Label
    patient: Label
    date: Day | None = None


class Contact(Model):
    """The insurer registers a contact certificate (played on the submission date)."""

    by: Label  # the physician who had the contact
    patient: Label
    date: Day
    submitted: Day
    code: Code = "101076"


class Paper(Model):
    """The insurer receives a paper attestation of code 102771 (played on the submission date)."""

    by: Label  # the GP who attested 102771
    patient: Label
    attested: Day
    submitted: Day
    # How the patient paid the GP (seed 000 §1.1.1): in cash, the fee is reimbursed to the patient (no
    # payment to the GP in its list); in third-party payment, the insurer pays the GP.
    paid: Literal["cash", "third_party"] = "cash"


class Clock(Model):
    """The mesh clock moves forward: to a date, or by a number of days."""

    set: Day | None = None
    advance: Annotated[int, Field(ge=1, le=MAX_ADVANCE_DAYS)] | None = None

    @model_validator(mode="after")
    def _one(self) -> Clock:
        if (self.set is None) == (self.advance is None):
            raise ValueError("give exactly one of set or advance")
        return self


class ListRequest(Model):
    """The provider asks for the list of its DMG patients in ``year``; the answer is read from its
    mailbox."""

    by: Label
    year: Year


class Mailbox(Model):
    """The provider reads its mailbox (closures and prolongations) and confirms what it read."""

    of: Label
    wait: Annotated[float, Field(gt=0, le=MAX_WAIT_SECONDS)] = 30.0  # for the expected messages to arrive


ACTIONS = ("notify", "consult", "contact", "paper", "clock", "list", "mailbox")


# --- expectations ------------------------------------------------------------------------------------------


class ErrorExpect(Model):
    """The call is refused: with this gRPC status and/or this MyCareNet code (one of the error's codes)."""

    status: Literal[GRPC_STATUSES] | None = None  # type: ignore[valid-type]
    code: Annotated[int, Field(ge=100, le=999)] | None = None

    @model_validator(mode="after")
    def _some(self) -> ErrorExpect:
        if self.status is None and self.code is None:
            raise ValueError("give status, code or both")
        if self.code is not None and self.code not in {c.value for c in McnCode}:
            raise ValueError(f"{self.code} is not a MyCareNet code of SPEC §3.5")
        return self


class PaymentExpect(Model):
    """A DMG fee: to whom (omitted in a patient list: the requester), the year, the kind, recovered or
    not, and the amount only when given (tariffs depend on the year the story is played in)."""

    to: Label | None = None
    year: Year
    kind: Literal[PAYMENT_KINDS]  # type: ignore[valid-type]
    recovered: bool = False
    amount: Decimal | None = None


class HoldingExpect(Model):
    """A holding as the insurer's intake reports it after the event."""

    holder: Label
    period: PeriodField
    status: Literal[HOLDING_STATUSES] = "active"  # type: ignore[valid-type]
    procedure: Literal[PROCEDURES] | None = None  # type: ignore[valid-type]
    reopened: bool | None = None


class ClosureExpect(Model):
    patient: Label
    end: Day  # last day of the recipient's right
    new_holder: Label
    start: Day  # first day of the new holder's right


class ExtensionExpect(Model):
    patient: Label
    until: Day  # the new end of the right
    contact: Day  # the contact that prolonged it


class MessageExpect(Model):
    """One mailbox message: a closure or a prolongation (extension)."""

    closure: ClosureExpect | None = None
    extension: ExtensionExpect | None = None

    @model_validator(mode="after")
    def _one(self) -> MessageExpect:
        if (self.closure is None) == (self.extension is None):
            raise ValueError("give exactly one of closure or extension")
        return self


class ListEntryExpect(Model):
    """One patient of a patient list: the holding periods within the year and the requester's fees."""

    patient: Label
    periods: Annotated[list[PeriodField], Field(max_length=MAX_ITEMS)] = []
    payments: Annotated[list[PaymentExpect], Field(max_length=MAX_ITEMS)] = []


Items = Field(default=None, max_length=MAX_ITEMS)


class Expect(Model):
    """What the step must answer; only the fields given are checked."""

    error: ErrorExpect | None = None
    # notify, consult
    holder: Label | None = None  # an actor, or "nobody" (consult)
    period: PeriodField | None = None
    payment: Literal["with", "without"] | None = None  # notify: the payment indicator
    paid_this_year: bool | None = None  # consult
    procedure: Literal[PROCEDURES] | None = None  # type: ignore[valid-type]  # consult
    # contact, paper: the insurer's intake effects (each list exact, in any order)
    payments: list[PaymentExpect] | None = Items
    recoveries: list[PaymentExpect] | None = Items
    holdings: list[HoldingExpect] | None = Items
    messages_written: Annotated[int, Field(ge=0, le=MAX_ITEMS)] | None = None
    # mailbox: the closures and prolongations pending (exact, in any order)
    messages: list[MessageExpect] | None = Items
    # list: the patients of the answer (exact, in any order)
    patients: list[ListEntryExpect] | None = Items
    # clock
    today: Day | None = None

    @model_validator(mode="after")
    def _same_fields(self) -> Expect:
        """An optional field of a list's items is compared on every item or on none (the answer's items
        are rendered with the same fields)."""
        checks: list[tuple[Sequence[BaseModel] | None, tuple[str, ...], str]] = [
            (self.holdings, ("procedure", "reopened"), "holdings"),
            (self.payments, ("amount",), "payments"),
            (self.recoveries, ("amount",), "recoveries"),
        ]
        for items, names, where in checks:
            for name in names:
                given = {getattr(item, name) is not None for item in items or ()}
                if len(given) > 1:
                    raise ValueError(f"{where}: give {name} on every item or on none")
        return self


EXPECTATIONS: dict[str, frozenset[str]] = {
    "notify": frozenset({"holder", "period", "payment"}),
    "consult": frozenset({"holder", "period", "paid_this_year", "procedure"}),
    "contact": frozenset({"payments", "recoveries", "holdings", "messages_written"}),
    "paper": frozenset({"payments", "recoveries", "holdings", "messages_written"}),
    "clock": frozenset({"today"}),
    "list": frozenset({"patients"}),
    "mailbox": frozenset({"messages"}),
}
"""Which expectations each action may carry (``error`` goes with any but ``clock`` and ``mailbox``)."""


class Step(Model):
    """One action and its expected answer. ``at`` plays the step on that mesh date (default: the contact
    date of a notify, the submission date of a contact or paper, else the current date)."""

    name: Text | None = None
    at: Day | None = None
    known_gap: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT)] | None = None
    notify: Notify | None = None
    consult: Consult | None = None
    contact: Contact | None = None
    paper: Paper | None = None
    clock: Clock | None = None
    list: ListRequest | None = None
    mailbox: Mailbox | None = None
    expect: Expect = Expect()

    @model_validator(mode="after")
    def _one_action(self) -> Step:
        given = [a for a in ACTIONS if getattr(self, a) is not None]
        if len(given) != 1:
            raise ValueError(f"a step has exactly one action of {', '.join(ACTIONS)} (got {given or 'none'})")
        allowed = EXPECTATIONS[given[0]] | ({"error"} if given[0] not in ("clock", "mailbox") else set())
        wrong = sorted(f for f in self.expect.model_fields_set if f not in allowed)
        if wrong:
            may = ", ".join(sorted(allowed))
            raise ValueError(f"a {given[0]} step cannot expect {', '.join(wrong)} (it may expect {may})")
        if self.expect.error is not None and len(self.expect.model_fields_set) > 1:
            raise ValueError("a step that expects an error expects nothing else")
        if self.clock is not None and self.at is not None:
            raise ValueError("a clock step has no 'at': it says where the clock goes")
        return self

    @property
    def action(self) -> str:
        return next(a for a in ACTIONS if getattr(self, a) is not None)

    @property
    def detail(self) -> Notify | Consult | Contact | Paper | Clock | ListRequest | Mailbox:
        value = getattr(self, self.action)
        assert value is not None
        return value  # type: ignore[no-any-return]

    def describe(self) -> str:
        """A short title: the name, or the action and its actor."""
        if self.name:
            return self.name
        d = self.detail
        if isinstance(d, Clock):
            return f"clock set {d.set:%d.%m.%Y}" if d.set else f"clock advance {d.advance} days"
        if isinstance(d, Mailbox):
            return f"mailbox of {d.of}"
        if isinstance(d, ListRequest):
            return f"list {d.year} by {d.by}"
        return f"{self.action} by {d.by}"


class Scenario(Model):
    """A dated story: who plays, about whom, and the steps with their expected answers."""

    story: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")]
    title: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TITLE)]
    source: Text | None = None
    actors: Annotated[dict[Label, Actor], Field(min_length=1, max_length=MAX_ACTORS)]
    patients: Annotated[dict[Label, Patient], Field(min_length=1, max_length=MAX_PATIENTS)]
    steps: Annotated[list[Step], Field(min_length=1, max_length=MAX_STEPS)]


__all__ = [
    "ACTIONS",
    "Actor",
    "Clock",
    "Consult",
    "Contact",
    "Expect",
    "ListRequest",
    "Mailbox",
    "Notify",
    "Paper",
    "Patient",
    "Period",
    "Scenario",
    "Step",
    "parse_day",
]
