"""Validation of request fields, collecting every violation with its MyCareNet code (SPEC §3.5), and the
opaque page tokens of the list RPCs. Nothing here touches the database."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Callable, Sequence
from typing import TypeVar

from ehealth.rules import Period
from mycarenet_core import dates
from mycarenet_core.errors import FieldViolation, McnCode, invalid_argument
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.identifiers import IdentifierError, Inami, Niss, Profession, parse_inami, parse_niss

E = TypeVar("E")
T = TypeVar("T")

KeyValue = str | int


def encode_page_token(key: Sequence[KeyValue]) -> str:
    """An opaque page token: base64url of the JSON list of the last row's sort key."""
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def paginate(rows: Sequence[T], size: int, key: Callable[[T], Sequence[KeyValue]]) -> tuple[list[T], str]:
    """The page out of ``size + 1`` fetched rows, and the token of the next page ("" when none)."""
    page = list(rows[:size])
    return page, encode_page_token(key(page[-1])) if len(rows) > size else ""


def _decode_page_token(token: str, arity: int) -> list[KeyValue]:
    padded = token + "=" * (-len(token) % 4)
    value = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
    if (
        not isinstance(value, list)
        or len(value) != arity
        or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError("bad page token")
    return value


class Checker:
    """Collects field violations; :meth:`done` raises INVALID_ARGUMENT with all of them (nothing changed)."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def add(self, field: str, code: int, description: str) -> None:
        self.violations.append(FieldViolation(field, code, description))

    def done(self) -> None:
        if self.violations:
            raise invalid_argument(self.violations)

    def _identifier(self, field: str, raw: str, parse: str) -> Niss | Inami | None:
        try:
            return parse_niss(raw) if parse == "niss" else parse_inami(raw)
        except IdentifierError as error:
            self.add(field, error.code, error.reason)
            return None

    def niss(self, field: str, raw: str) -> str:
        """The canonical NISS, or "" after recording 100/111/112/113."""
        parsed = self._identifier(field, raw, "niss")
        return parsed.value if parsed is not None else ""

    def inami(self, field: str, raw: str) -> Inami | None:
        """The parsed INAMI, or None after recording 100/111/112."""
        parsed = self._identifier(field, raw, "inami")
        assert parsed is None or isinstance(parsed, Inami)
        return parsed

    def person_inami(self, field: str, raw: str) -> Inami | None:
        """An INAMI number of a person (not an organisation): 130 for an organisation."""
        parsed = self.inami(field, raw)
        if parsed is not None and parsed.profession is Profession.ORGANISATION:
            self.add(field, McnCode.VALUE_NOT_ALLOWED, "an organisation number is not allowed here")
            return None
        return parsed

    def optional_inami(self, field: str, raw: str) -> Inami | None:
        return self.inami(field, raw) if raw.strip() else None

    def optional_niss(self, field: str, raw: str) -> str:
        return self.niss(field, raw) if raw.strip() else ""

    def text(self, field: str, raw: str, *, max_length: int = 200) -> str:
        value = raw.strip()
        if not value:
            self.add(field, McnCode.MANDATORY_FIELD_MISSING, "mandatory field is missing")
        elif len(value) > max_length:
            self.add(field, McnCode.BAD_FORMAT, f"at most {max_length} characters")
        return value

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

    def period(
        self, field: str, value: common_pb2.Period, *, default_start: dt.date | None = None
    ) -> Period | None:
        """A period with a mandatory start (or ``default_start``) and an optional end not before it."""
        start = self.date(f"{field}.start", value.start, default=default_start)
        end = self.end_date(f"{field}.end", value.end, start)
        return Period(start, end) if start is not None else None

    def end_date(self, field: str, value: common_pb2.Date, start: dt.date | None) -> dt.date | None:
        """An optional end date that is not before ``start``."""
        end = self.optional_date(field, value)
        if end is not None and start is not None and end < start:
            self.add(field, McnCode.IMPLAUSIBLE_DATE, "the end is before the start")
        return end

    def enum(self, field: str, value: int, allowed: dict[int, E]) -> E | None:
        """An enum value among ``allowed`` (100 when unspecified, 130 when not allowed)."""
        if value == 0:
            self.add(field, McnCode.MANDATORY_FIELD_MISSING, "mandatory field is missing")
            return None
        if value not in allowed:
            self.add(field, McnCode.VALUE_NOT_ALLOWED, f"value {value} is not allowed here")
            return None
        return allowed[value]

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
            return _decode_page_token(token, arity)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            self.add(field, McnCode.BAD_FORMAT, "not a page token from a previous answer")
            return None
