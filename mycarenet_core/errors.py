"""One error model for the whole mesh.

A domain error is raised as :class:`MeshError` anywhere below a servicer; one server interceptor
(:mod:`mycarenet_core.server`) turns it into a ``google.rpc.Status`` carried in the trailers, with an
``ErrorInfo`` (domain :data:`DOMAIN`, an UPPER_SNAKE_CASE reason, metadata) and, for bad input, a
``BadRequest`` whose field violations carry the MyCareNet numeric code of SPEC §3.5 (AIP-193).
Clients turn a ``grpc.RpcError`` back into a :class:`MeshError` with :func:`parse_rpc_error`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from mycarenet_core.codes import McnCode

DOMAIN = "mycarenet.be"
DETAILS_KEY = "grpc-status-details-bin"

# Bounds of what an error carries back in its trailers, whatever the request held: gRPC refuses trailers
# over its metadata limit (8 KiB by default, and binary trailers travel base64-encoded), and an error must
# never copy unbounded input back to the caller. A longer text is cut and ends with TRUNCATED.
MAX_ERROR_MESSAGE = 512
MAX_ERROR_VIOLATIONS = 10  # field violations listed; the message says how many there were
MAX_ERROR_METADATA = 200  # one ErrorInfo metadata value (e.g. the echoed requester reference)
MAX_ERROR_FIELD = 100  # a field path
MAX_ERROR_DESCRIPTION = 200
TRUNCATED = "…"


def bounded(text: str, limit: int) -> str:
    """``text`` when it has at most ``limit`` characters, else its first ones and :data:`TRUNCATED`."""
    return text if len(text) <= limit else text[: limit - len(TRUNCATED)] + TRUNCATED


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path in the request, the MyCareNet code, and an explanation."""

    field: str
    code: int
    description: str

    @property
    def reason(self) -> str:
        try:
            return McnCode(self.code).name
        except ValueError:
            return f"MYCARENET_{self.code}"


@dataclass
class MeshError(Exception):
    """A domain error with its gRPC status code, reason, MyCareNet code(s) and field violations."""

    status: grpc.StatusCode
    reason: str
    message: str
    code: int | None = None
    violations: tuple[FieldViolation, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    retry_after_seconds: float | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        codes = ",".join(str(c) for c in self.codes)
        return f"{self.status.name} {self.reason}" + (f" [{codes}]" if codes else "") + f": {self.message}"

    @property
    def codes(self) -> tuple[int, ...]:
        """Every MyCareNet code of the error: its own, then those of its field violations."""
        out: list[int] = [] if self.code is None else [self.code]
        out += [v.code for v in self.violations if v.code not in out]
        return tuple(out)

    def with_metadata(self, **extra: str) -> MeshError:
        """The same error with more ErrorInfo metadata (e.g. the requester reference)."""
        merged = {**self.metadata, **{k: v for k, v in extra.items() if v}}
        return MeshError(
            self.status,
            self.reason,
            self.message,
            self.code,
            self.violations,
            merged,
            self.retry_after_seconds,
        )

    def to_status_proto(self) -> status_pb2.Status:
        """The ``google.rpc.Status`` of the error, bounded whatever the request held (see
        :data:`MAX_ERROR_MESSAGE` and the other bounds): its size never depends on the input's."""
        info_meta = {k[:MAX_ERROR_FIELD]: bounded(v, MAX_ERROR_METADATA) for k, v in self.metadata.items()}
        if self.codes:
            info_meta["mycarenet_codes"] = ",".join(str(c) for c in self.codes[:MAX_ERROR_VIOLATIONS])
        details: list[any_pb2.Any] = []
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=info_meta)
        details.append(_pack(info))
        if self.violations:
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=bounded(v.field, MAX_ERROR_FIELD),
                        description=bounded(f"{v.code}: {v.description}", MAX_ERROR_DESCRIPTION),
                        reason=v.reason,
                    )
                    for v in self.violations[:MAX_ERROR_VIOLATIONS]
                ]
            )
            details.append(_pack(bad))
        if self.retry_after_seconds is not None:
            secs = int(self.retry_after_seconds)
            nanos = int((self.retry_after_seconds - secs) * 1e9)
            retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=secs, nanos=nanos))
            details.append(_pack(retry))
        message = self.message
        if len(self.violations) > MAX_ERROR_VIOLATIONS:
            message = f"{len(self.violations)} field violations, the first {MAX_ERROR_VIOLATIONS}: {message}"
        return status_pb2.Status(
            code=self.status.value[0], message=bounded(message, MAX_ERROR_MESSAGE), details=details
        )

    def to_grpc_status(self) -> grpc.Status:
        status: grpc.Status = rpc_status.to_status(self.to_status_proto())
        return status


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


# --- constructors: one line per kind of error at the call site ---------------------------------------


def invalid_argument(
    violations: Iterable[FieldViolation], message: str | None = None, *, reason: str = "INVALID_REQUEST"
) -> MeshError:
    """Bad input: INVALID_ARGUMENT with field violations; the first violation's code is the error's code."""
    found = tuple(violations)
    if not found:
        raise ValueError("invalid_argument needs at least one violation")
    text = message or "; ".join(f"{v.field}: {v.description} ({v.code})" for v in found)
    return MeshError(grpc.StatusCode.INVALID_ARGUMENT, reason, text, found[0].code, found)


def field_error(field_path: str, code: int, description: str) -> MeshError:
    """A single bad field."""
    return invalid_argument([FieldViolation(field_path, code, description)])


def business_error(
    code: int,
    reason: str,
    message: str,
    *,
    field_path: str | None = None,
    status: grpc.StatusCode | None = None,
) -> MeshError:
    """A business rule refused the request (FAILED_PRECONDITION unless told otherwise)."""
    violations = (FieldViolation(field_path, code, message),) if field_path else ()
    return MeshError(status or grpc.StatusCode.FAILED_PRECONDITION, reason, message, code, violations)


def not_found(
    reason: str, message: str, *, code: int | None = None, field_path: str | None = None
) -> MeshError:
    violations = (FieldViolation(field_path, code, message),) if field_path and code else ()
    return MeshError(grpc.StatusCode.NOT_FOUND, reason, message, code, violations)


def permission_denied(reason: str, message: str, *, code: int | None = None) -> MeshError:
    return MeshError(grpc.StatusCode.PERMISSION_DENIED, reason, message, code)


def unauthenticated(reason: str, message: str) -> MeshError:
    return MeshError(grpc.StatusCode.UNAUTHENTICATED, reason, message)


def unavailable(reason: str, message: str, *, retry_after_seconds: float | None = None) -> MeshError:
    return MeshError(grpc.StatusCode.UNAVAILABLE, reason, message, retry_after_seconds=retry_after_seconds)


def resource_exhausted(reason: str, message: str, *, retry_after_seconds: float) -> MeshError:
    return MeshError(
        grpc.StatusCode.RESOURCE_EXHAUSTED, reason, message, retry_after_seconds=retry_after_seconds
    )


def already_exists(reason: str, message: str, *, code: int | None = None) -> MeshError:
    return MeshError(grpc.StatusCode.ALREADY_EXISTS, reason, message, code)


# --- client side ----------------------------------------------------------------------------------------


def _status_code(value: int) -> grpc.StatusCode:
    for candidate in grpc.StatusCode:
        if candidate.value[0] == value:
            return candidate
    return grpc.StatusCode.UNKNOWN


def _code_of(violation: error_details_pb2.BadRequest.FieldViolation) -> int:
    if violation.reason in McnCode.__members__:
        return int(McnCode[violation.reason])
    head = violation.description.split(":", 1)[0].strip()
    return int(head) if head.isascii() and head.isdigit() else 0


def status_from_rpc_error(error: grpc.RpcError) -> status_pb2.Status | None:
    """The google.rpc.Status carried by an error's trailers, if any (works for sync and aio errors)."""
    trailers: Any = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == DETAILS_KEY and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None


def parse_rpc_error(error: grpc.RpcError) -> MeshError:
    """Turn a gRPC error back into a :class:`MeshError` with its reason, codes and field violations."""
    status = status_from_rpc_error(error)
    code_fn = getattr(error, "code", None)
    grpc_code = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
    details_fn = getattr(error, "details", None)
    text = (details_fn() if callable(details_fn) else None) or ""
    if status is None:
        return MeshError(grpc_code, grpc_code.name, text)
    reason, metadata, violations, retry = grpc_code.name, {}, [], None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            for v in bad.field_violations:
                desc = v.description.split(":", 1)[1].strip() if ":" in v.description else v.description
                violations.append(FieldViolation(v.field, _code_of(v), desc))
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info_retry = error_details_pb2.RetryInfo()
            detail.Unpack(info_retry)
            retry = info_retry.retry_delay.seconds + info_retry.retry_delay.nanos / 1e9
    codes = [
        int(c)
        for c in metadata.pop("mycarenet_codes", "").split(",")
        if c.strip().isascii() and c.strip().isdigit()
    ]
    return MeshError(
        _status_code(status.code),
        reason,
        status.message,
        codes[0] if codes else None,
        tuple(violations),
        metadata,
        retry,
    )


__all__ = [
    "DOMAIN",
    "FieldViolation",
    "McnCode",
    "MeshError",
    "already_exists",
    "business_error",
    "code_pb2",
    "field_error",
    "invalid_argument",
    "not_found",
    "parse_rpc_error",
    "permission_denied",
    "resource_exhausted",
    "status_from_rpc_error",
    "unauthenticated",
    "unavailable",
]
