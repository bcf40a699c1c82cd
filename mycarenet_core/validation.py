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

Every string has a maximum (``max_length``), every repeated field one (:meth:`Checker.items`). Page tokens
are opaque to callers: base64url of the JSON list of the last row's sort key; a token that does not decode
to the expected shape is a field violation (111), never an internal error.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Callable, Sequence, Sized
from types import TracebackType
from typing import TypeVar

from mycarenet_core import dates
from mycarenet_core.codes import McnCode
from mycarenet_core.errors import FieldViolation, invalid_argument
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.identifiers import IdentifierError, Inami, parse_inami, parse_niss

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


__all__ = ["Checker", "KeyValue", "decode_page_token", "encode_page_token", "paginate"]
