"""Conversion between ``mycarenet.common.v1.Date`` and :class:`datetime.date`, with MyCareNet codes."""

from __future__ import annotations

import datetime as dt

from mycarenet_core.errors import FieldViolation, McnCode, MeshError, invalid_argument
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2


def to_proto(value: dt.date | None) -> common_pb2.Date | None:
    """A proto Date, or None for None (leave the field unset)."""
    if value is None:
        return None
    return common_pb2.Date(year=value.year, month=value.month, day=value.day)


def is_set(value: common_pb2.Date) -> bool:
    return bool(value.year or value.month or value.day)


def check(value: common_pb2.Date, field: str, *, required: bool = True) -> FieldViolation | dt.date | None:
    """The date, None when unset and optional, or the violation (100 missing, 113 implausible)."""
    if not is_set(value):
        if required:
            return FieldViolation(field, McnCode.MANDATORY_FIELD_MISSING, "date is mandatory")
        return None
    if not 1900 <= value.year <= 2199:
        return FieldViolation(field, McnCode.IMPLAUSIBLE_DATE, f"year {value.year} is implausible")
    try:
        return dt.date(value.year, value.month, value.day)
    except ValueError:
        return FieldViolation(
            field,
            McnCode.IMPLAUSIBLE_DATE,
            f"{value.year:04d}-{value.month:02d}-{value.day:02d} is not a date",
        )


def from_proto(value: common_pb2.Date, field: str) -> dt.date:
    """A mandatory date, or INVALID_ARGUMENT with code 100 or 113 on ``field``."""
    result = check(value, field)
    if isinstance(result, FieldViolation):
        raise invalid_argument([result])
    assert result is not None
    return result


def optional_from_proto(value: common_pb2.Date, field: str) -> dt.date | None:
    """An optional date (None when unset), or INVALID_ARGUMENT with code 113."""
    result = check(value, field, required=False)
    if isinstance(result, FieldViolation):
        raise invalid_argument([result])
    return result


def end_of_year(year: int) -> dt.date:
    return dt.date(year, 12, 31)


__all__ = ["MeshError", "check", "end_of_year", "from_proto", "is_set", "optional_from_proto", "to_proto"]
