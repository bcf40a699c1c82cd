"""The one validation idiom of the mesh, and the one page-token codec.

A servicer parses its request into a typed value with a :class:`Checker`, which collects every field
violation (with its MyCareNet code) instead of stopping at the first, and raises them all at once as one
INVALID_ARGUMENT before anything is changed::

    def consult_request(request: pb.ConsultDmgRequest) -> Consult:
        with Checker() as check:
            niss = check.niss("patient.niss", request.patient.niss)
            day = check.date("request_date", request.request_date)
            reference = check.text("requester_reference", request.requester_reference, max_length=64)
        return Consult(niss, day, reference)  # reached only when every field is valid

Every string, bytes and repeated field of protos/ documents its maximum in its comment ("at most N
characters / items / bytes"); ``scripts/gen_protos.py`` collects them into
:data:`mycarenet_core.gen.limits.LIMITS` and the server skeleton checks every request against them
(:func:`oversized`) before any handler runs; the handler's first :class:`Checker` reports those violations
with its own (every violation at once), so an oversized field is INVALID_ARGUMENT whatever the servicer
checks itself. The servicers' own ``max_length`` and :meth:`Checker.items` bounds are the same or tighter.

Page tokens are opaque to callers: base64url of the JSON list of the last row's sort key; a token that does
not decode to the expected shape is a field violation (111), never an internal error.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import contextvars
import datetime as dt
import json
import logging
from collections.abc import Callable, Iterator, Sequence, Sized
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from google.protobuf import duration_pb2
from google.protobuf.descriptor import FieldDescriptor

from mycarenet_core import dates
from mycarenet_core.codes import McnCode
from mycarenet_core.errors import FieldViolation, MeshError, invalid_argument
from mycarenet_core.gen.limits import LIMITS
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.identifiers import IdentifierError, Inami, parse_inami, parse_niss

log = logging.getLogger(__name__)
E = TypeVar("E")
T = TypeVar("T")
KeyValue = str | int

MAX_PAGE_TOKEN = 512


def encode_page_token(key: Sequence[KeyValue]) -> str:
    """An opaque page token: base64url of the JSON list of the last row's sort key."""
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def decode_page_token(token: str, arity: int) -> list[KeyValue]:
    """The sort key in a token of :func:`encode_page_token`; ValueError when it is not one."""
    if len(token) > MAX_PAGE_TOKEN or not token.isascii():
        raise ValueError("bad page token")
    try:
        padded = token + "=" * (-len(token) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError("bad page token") from error
    if (
        not isinstance(value, list)
        or len(value) != arity
        or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in value)
        or any(isinstance(v, int) and not -(2**63) <= v < 2**63 for v in value)
    ):
        raise ValueError("bad page token")
    return value


def paginate(rows: Sequence[T], size: int, key: Callable[[T], Sequence[KeyValue]]) -> tuple[list[T], str]:
    """The page out of ``size + 1`` fetched rows, and the token of the next page ("" when none)."""
    page = list(rows[:size])
    return page, encode_page_token(key(page[-1])) if len(rows) > size else ""


class Checker:
    """Collects field violations; leaving the ``with`` block (or :meth:`done`) raises INVALID_ARGUMENT with
    all of them. Each method returns the parsed value, or a neutral value after recording a violation."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def __enter__(self) -> Checker:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.done()

    def add(self, field: str, code: int, description: str) -> None:
        self.violations.append(FieldViolation(field, code, description))

    def done(self) -> None:
        """Raise every violation at once: this checker's, and those of the request's fields past their
        documented maximum that the server skeleton found (:func:`oversized`; the call's first checker)."""
        pending = _pending.get()
        if pending is not None and not pending.taken:
            pending.taken = True
            # Sizes first (an error lists its first violations only: errors.MAX_ERROR_VIOLATIONS), then this
            # checker's on other fields.
            sized = {v.field for v in pending.violations}
            self.violations = [*pending.violations, *(v for v in self.violations if v.field not in sized)]
        if self.violations:
            raise invalid_argument(self.violations)

    # --- identifiers ------------------------------------------------------------------------------------

    def niss(self, field: str, raw: str) -> str:
        """The canonical NISS, or "" after recording 100/111/112/113."""
        if len(raw) > 32:
            self.add(field, McnCode.BAD_FORMAT, "a NISS has 11 digits")
            return ""
        try:
            return parse_niss(raw).value
        except IdentifierError as error:
            self.add(field, error.code, error.reason)
            return ""

    def inami(self, field: str, raw: str) -> Inami | None:
        """The parsed INAMI, or None after recording 100/111/112."""
        if len(raw) > 32:
            self.add(field, McnCode.BAD_FORMAT, "an INAMI number has 11 digits")
            return None
        try:
            return parse_inami(raw)
        except IdentifierError as error:
            self.add(field, error.code, error.reason)
            return None

    def optional_inami(self, field: str, raw: str) -> Inami | None:
        return self.inami(field, raw) if raw.strip() else None

    def optional_niss(self, field: str, raw: str) -> str:
        return self.niss(field, raw) if raw.strip() else ""

    # --- strings and lists --------------------------------------------------------------------------------

    def text(self, field: str, raw: str, *, max_length: int, required: bool = True) -> str:
        """The stripped text: 100 when required and empty, 111 when longer than ``max_length``."""
        value = raw.strip()
        if not value:
            if required:
                self.add(field, McnCode.MANDATORY_FIELD_MISSING, "mandatory field is missing")
        elif len(value) > max_length:
            self.add(field, McnCode.BAD_FORMAT, f"at most {max_length} characters")
            return ""
        return value

    def items(self, field: str, values: Sized, *, maximum: int, required: bool = False) -> bool:
        """True when a repeated field has at most ``maximum`` items (and one at least, if required)."""
        if required and len(values) == 0:
            self.add(field, McnCode.MANDATORY_FIELD_MISSING, "at least one is needed")
            return False
        if len(values) > maximum:
            self.add(field, McnCode.VALUE_NOT_ALLOWED, f"at most {maximum} items")
            return False
        return True

    def sizes(self, message: Any, prefix: str = "") -> bool:
        """Every string, bytes and repeated field set in ``message`` (and in its messages) within the maximum
        its proto comment documents (:data:`LIMITS`): 111 for a longer string or bytes, 130 for more items.
        True when all are."""
        before = len(self.violations)
        self._sizes(message, prefix)
        return len(self.violations) == before

    def _sizes(self, message: Any, prefix: str) -> None:
        name = message.DESCRIPTOR.full_name
        for field, value in message.ListFields():
            path = f"{prefix}{field.name}"
            limit = LIMITS.get(f"{name}.{field.name}")
            if field.is_repeated:
                if limit is not None and len(value) > limit:
                    self.add(path, McnCode.VALUE_NOT_ALLOWED, f"at most {limit} items")
                elif field.type == FieldDescriptor.TYPE_MESSAGE and not _is_map(field):
                    for index, item in enumerate(value):
                        self._sizes(item, f"{path}[{index}].")
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                self._sizes(value, f"{path}.")
            elif limit is not None and len(value) > limit:
                unit = "bytes" if field.type == FieldDescriptor.TYPE_BYTES else "characters"
                self.add(path, McnCode.BAD_FORMAT, f"at most {limit} {unit}")

    # --- dates --------------------------------------------------------------------------------------------

    def date(self, field: str, value: common_pb2.Date, *, default: dt.date | None = None) -> dt.date | None:
        """The date; ``default`` when unset (100 when unset and no default); 113 when implausible."""
        result = dates.check(value, field, required=default is None)
        if isinstance(result, FieldViolation):
            self.violations.append(result)
            return None
        return result if result is not None else default

    def optional_date(self, field: str, value: common_pb2.Date) -> dt.date | None:
        """The date, or None when unset or implausible (113 recorded)."""
        result = dates.check(value, field, required=False)
        if isinstance(result, FieldViolation):
            self.violations.append(result)
            return None
        return result

    def end_date(self, field: str, value: common_pb2.Date, start: dt.date | None) -> dt.date | None:
        """An optional end date that is not before ``start``."""
        end = self.optional_date(field, value)
        if end is not None and start is not None and end < start:
            self.add(field, McnCode.IMPLAUSIBLE_DATE, "the end is before the start")
        return end

    # --- enums and numbers --------------------------------------------------------------------------------

    def enum(self, field: str, value: int, allowed: dict[int, E], *, required: bool = True) -> E | None:
        """An enum value among ``allowed`` (100 when unspecified and required, 130 when not allowed, an
        unknown number included)."""
        if value == 0:
            if required:
                self.add(field, McnCode.MANDATORY_FIELD_MISSING, "mandatory field is missing")
            return None
        if value not in allowed:
            self.add(field, McnCode.VALUE_NOT_ALLOWED, f"value {value} is not allowed here")
            return None
        return allowed[value]

    def number(self, field: str, value: int, *, minimum: int, maximum: int) -> int:
        """An integer within bounds (130 otherwise; the bound is returned)."""
        if value < minimum or value > maximum:
            self.add(field, McnCode.VALUE_NOT_ALLOWED, f"must be within {minimum}..{maximum}")
            return min(max(value, minimum), maximum)
        return value

    def duration(
        self, field: str, value: duration_pb2.Duration, *, maximum: dt.timedelta
    ) -> dt.timedelta | None:
        """A duration within ``maximum`` either way (130 otherwise; any int64 of seconds, no overflow)."""
        limit = maximum.total_seconds()
        if abs(value.seconds) <= limit and abs(value.nanos) < 1_000_000_000:
            found = value.ToTimedelta()
            if abs(found) <= maximum:
                return found
        self.add(field, McnCode.VALUE_NOT_ALLOWED, f"at most {int(limit)} seconds either way")
        return None

    # --- pages --------------------------------------------------------------------------------------------

    def page_size(self, field: str, value: int, *, default: int = 100, maximum: int = 1000) -> int:
        if value < 0:
            self.add(field, McnCode.VALUE_NOT_ALLOWED, "page size cannot be negative")
            return default
        return min(value or default, maximum)

    def page_token(self, field: str, token: str, arity: int) -> list[KeyValue] | None:
        """The decoded sort key of the last row of the previous page, None for the first page."""
        if not token:
            return None
        try:
            return decode_page_token(token, arity)
        except ValueError:
            self.add(field, McnCode.BAD_FORMAT, "not a page token from a previous answer")
            return None


def _is_map(field: FieldDescriptor) -> bool:
    entry = field.message_type
    return entry is not None and entry.GetOptions().map_entry


@dataclass
class Pending:
    """The fields of the running request past their documented maximum, until a checker reports them."""

    violations: tuple[FieldViolation, ...]
    taken: bool = False


_pending: contextvars.ContextVar[Pending | None] = contextvars.ContextVar("oversized", default=None)
# Requests with a field past its maximum whose handler ended without any checker reporting it (a servicer
# that parses nothing with a Checker): answered INVALID_ARGUMENT all the same, logged, and counted here (the
# fuzz test asserts it stays 0).
unparsed_oversized = 0


def oversized(request: Any) -> tuple[FieldViolation, ...]:
    """The violations of ``request``'s fields past their documented maximum (:meth:`Checker.sizes`)."""
    check = Checker()
    check.sizes(request)
    return tuple(check.violations)


@contextlib.contextmanager
def reported_by_the_handler(violations: tuple[FieldViolation, ...]) -> Iterator[Pending]:
    """Around a handler of a request with ``violations`` (from :func:`oversized`): the handler's first
    :class:`Checker` reports them with its own, every violation at once, before the handler does anything."""
    pending = Pending(violations)
    token = _pending.set(pending)
    try:
        yield pending
    finally:
        _pending.reset(token)


def unreported(pending: Pending) -> MeshError | None:
    """After the handler: the INVALID_ARGUMENT to answer when no checker reported the violations."""
    global unparsed_oversized
    if pending.taken:
        return None
    unparsed_oversized += 1
    log.error("a request with oversized fields reached a handler that parsed it with no Checker")
    return invalid_argument(pending.violations)


__all__ = [
    "Checker",
    "KeyValue",
    "Pending",
    "decode_page_token",
    "encode_page_token",
    "oversized",
    "paginate",
    "reported_by_the_handler",
    "unreported",
]
