"""Generated input for every RPC of the mesh, and the checks of its answers (the fuzz test and
``benchmarks/fuzz_rpcs.py``).

The RPCs are enumerated from the service descriptors, each with its policy in the trust table (a new RPC is
covered as soon as it is declared); each is called on the TLS mesh of :mod:`tests.trust.tls_mesh` by a caller
the table admits (so that validation, not the trust check, answers) and by one it refuses. A request is
generated from its descriptor: any field may be set, strings from empty to the message limit (and valid
identifiers of the mesh, non-ASCII digits, control characters), unknown enum values, the extreme integers,
long repeated fields, nested messages; or the request is random bytes (mostly not a protobuf message).

Checked for every answer: never INTERNAL nor UNKNOWN; a refusal changes nothing in any database of the mesh
(its domain tables' rows, the audit trail and the outbox of what was refused aside); a refused caller gets
the trust table's refusal.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from mycarenet_core.errors import parse_rpc_error
from mycarenet_core.trust import TABLE, Policy
from mycarenet_core.validation import encode_page_token
from tests.trust.test_authorization_matrix import CALLERS, PROCESS, PROCESS_OF_SERVICE, Caller, expected
from tests.trust.tls_mesh import TlsMesh

MESSAGE_LIMIT = 4 * 1024 * 1024  # grpc's default maximum received message size (every server of the mesh)
BAD_STATUSES = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
# Tables a refused call may write to by design: the audit trails record refusals too; the relays' and
# feeds' bookkeeping moves by itself in the background. Everything else must be unchanged by a refusal.
UNWATCHED = ("audit", "call_log", "outbox_cursor", "feed_position", "sync_state", "alembic_version")
DATABASES = ("ehealth.db", "hub.db", "oa-100.db", "oa-200.db")
# Sandbox methods whose success changes the mesh's conditions (the clock, link faults): undone after each.
DISTURBING = ("/mycarenet.sandbox.v1.",)

INT_EDGES = (0, 1, -1, 7, 2**31 - 1, -(2**31), 2**32 - 1, 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1)
NON_ASCII_DIGITS = ("٠١٢٣٤٥٦٧٨٩", "۱۲۳۴۵۶۷۸۹۰۱", "１２３４５６７８９０１", "१२३४५६७८९०१", "¹²³", "⑪")


@dataclass(frozen=True)
class Rpc:
    """One RPC: its name, request and response classes, whether it streams, and its trust policy."""

    method: str
    request: Any
    response: Any
    streaming: bool
    policy: Policy

    @property
    def process(self) -> str:
        service = self.method.split("/")[1]
        return PROCESS_OF_SERVICE.get(service) or PROCESS[service.rsplit(".", 1)[0]]


def rpcs() -> list[Rpc]:
    """Every RPC of every service in protos/ (the trust table has a policy for each: a test says so)."""
    from tests.trust.test_authorization_matrix import methods

    policies = TABLE.policies
    out = [Rpc(m, req, resp, streaming, policies[m]) for m, req, resp, streaming in methods()]
    # The sandbox's last: their successes move the clock or add link faults (undone, but after the rest).
    return sorted(out, key=lambda rpc: rpc.method.startswith(DISTURBING))


def admitted_caller(policy: Policy) -> Caller:
    """The first caller of the matrix the table admits (a certificate, and a session of the right kind)."""
    for caller in CALLERS:
        if caller.identity is not None and expected(policy, caller).status is None:
            return caller
    raise AssertionError("a method no caller may call")


def refused_caller(policy: Policy) -> Caller:
    """A caller the table refuses (with a certificate: the refusal is an answer, not a failed handshake)."""
    for caller in CALLERS:
        if caller.identity is not None and expected(policy, caller).status is not None:
            return caller
    raise AssertionError("a method every caller may call")


# --- generation -----------------------------------------------------------------------------------------


class Generator:
    """Random requests for the mesh's RPCs, from a seed (a failure names its seed and request)."""

    def __init__(self, rng: random.Random, valid_strings: list[str], max_size: int = MESSAGE_LIMIT) -> None:
        self.rng = rng
        self.valid = valid_strings
        self.max_size = max_size

    def size(self) -> int:
        """A length: mostly small, sometimes around the usual maxima, rarely up to the message limit."""
        r = self.rng.random()
        if r < 0.5:
            return self.rng.randrange(0, 16)
        if r < 0.8:
            return self.rng.choice((11, 12, 32, 33, 64, 65, 100, 101, 128, 129, 200, 201, 256, 513))
        if r < 0.97:
            return self.rng.randrange(1, 20_000)
        return self.rng.randrange(self.max_size // 4, self.max_size)

    def text(self) -> str:
        r = self.rng.random()
        if r < 0.35 and self.valid:
            return self.rng.choice(self.valid)
        if r < 0.45:
            return self.rng.choice(NON_ASCII_DIGITS)
        if r < 0.5:
            return str(self.rng.choice(INT_EDGES))
        n = self.size()
        alphabet = self.rng.choice(("0123456789", "abcXYZ-_:.", "é€😀\x00\n\t ", "0123456789abcdef"))
        if n > 1000:  # long strings: a repeated chunk (random.choices of megabytes is slow)
            chunk = "".join(self.rng.choices(alphabet, k=64))
            return (chunk * (n // 64 + 1))[:n]
        return "".join(self.rng.choices(alphabet, k=n))

    def blob(self) -> bytes:
        n = self.size()
        if n > 1000:
            return self.rng.randbytes(64) * (n // 64)
        return self.rng.randbytes(n)

    def scalar(self, field: FieldDescriptor) -> Any:
        kind = field.type
        if kind == FieldDescriptor.TYPE_STRING:
            return self.text()
        if kind == FieldDescriptor.TYPE_BYTES:
            return self.blob()
        if kind == FieldDescriptor.TYPE_BOOL:
            return self.rng.random() < 0.5
        if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return self.rng.choice((0.0, -1.0, 1e308, float("inf"), float("nan"), 3.5))
        if kind == FieldDescriptor.TYPE_ENUM:
            assert field.enum_type is not None
            known = [v.number for v in field.enum_type.values]
            if self.rng.random() < 0.5:
                return self.rng.choice(known)
            return self.rng.choice((max(known) + 1, 99, -1, 2**31 - 1, -(2**31)))
        bits = 64 if kind in _INT64 else 32
        signed = kind not in _UNSIGNED
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        value = self.rng.choice(INT_EDGES) if self.rng.random() < 0.6 else self.rng.randrange(-50, 40_000)
        return min(max(value, low), high)

    def fill(self, message: Any, depth: int = 0) -> None:
        """Set any of ``message``'s fields, recursively (at most 4 levels)."""
        descriptor: Descriptor = message.DESCRIPTOR
        for field in descriptor.fields:
            if self.rng.random() < 0.35:
                continue
            if field.is_repeated:
                self.fill_repeated(message, field, depth)
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                if depth < 4:
                    self.fill(getattr(message, field.name), depth + 1)
            else:
                setattr(message, field.name, self.scalar(field))

    def fill_repeated(self, message: Any, field: FieldDescriptor, depth: int) -> None:
        r = self.rng.random()
        count = self.rng.randrange(0, 4) if r < 0.7 else self.rng.choice((17, 65, 101, 1001, 2000, 20_000))
        target = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field, value_field = field.message_type.fields
            for _ in range(min(count, 2000)):
                key = self.scalar(key_field)
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    self.fill(target[key], depth + 1)
                else:
                    target[key] = self.scalar(value_field)
            return
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 4:
                return
            first = target.add()
            self.fill(first, depth + 1)
            for _ in range(count - 1):  # copies of one generated item: cheap, and as long as asked
                target.add().CopyFrom(first)
            return
        values = [self.scalar(field) for _ in range(min(count, 50))]
        target.extend((values * (count // max(len(values), 1) + 1))[:count])

    def request(self, rpc: Rpc) -> tuple[Any, bytes]:
        """A generated request of ``rpc`` and its bytes; one in ten is random bytes (the message None)."""
        if self.rng.random() < 0.1:
            raw = self.rng.randbytes(self.rng.randrange(1, 300))
            if self.rng.random() < 0.3:
                raw = b"\x0a\xff\xff\xff\xff\x0f" + raw  # a length far past the end
            return None, raw
        message = rpc.request()
        self.fill(message)
        raw = message.SerializeToString()
        if len(raw) > MESSAGE_LIMIT:  # the gRPC limit answers RESOURCE_EXHAUSTED itself: stay just under
            message = rpc.request()
            raw = b""
        return message, raw


_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}
_UNSIGNED = {
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64,
}


def valid_strings(mesh: TlsMesh) -> list[str]:
    """Values the mesh knows, so that generated requests also get past the first checks: the people's
    INAMI and NISS, insurer codes, enum names, page tokens of each shape, dates' ISO forms."""
    out: list[str] = ["100", "200", "300", "900", "101076", "102771", "SUBJECT_KIND_PERSON", "2025-03-04"]
    for person in mesh.people.values():
        out += [person.subject, person.niss] if person.niss else [person.subject]
    out += [
        encode_page_token(key)
        for key in ([5], ["2025-01-01", "x"], ["x"], [2**62], [-1], ["١٢٣"], [1, 2, 3], ["2025-13-45", "y"])
    ]
    out.append("abc!")  # not base64
    return [v for v in out if v]


# --- calls and checks -------------------------------------------------------------------------------------


def _identity(raw: bytes) -> bytes:
    return raw


async def call_raw(
    mesh: TlsMesh, rpc: Rpc, caller: Caller, raw: bytes, deadline: float = 10.0
) -> tuple[grpc.StatusCode, str]:
    """Send ``raw`` as the request of ``rpc``: (status, reason). A stream is read to its first item."""
    channel = mesh.channel(rpc.process, caller.identity)
    metadata = (("authorization", f"Bearer {mesh.tokens[caller.token]}"),) if caller.token else ()
    try:
        if rpc.streaming:
            stream = channel.unary_stream(
                rpc.method, request_serializer=_identity, response_deserializer=_identity
            )
            it = stream(raw, metadata=metadata, timeout=0.5)
            try:
                async for _ in it:
                    break
            finally:
                it.cancel()
        else:
            unary = channel.unary_unary(
                rpc.method, request_serializer=_identity, response_deserializer=_identity
            )
            await unary(raw, metadata=metadata, timeout=deadline)
    except grpc.RpcError as error:
        parsed = parse_rpc_error(error)
        if rpc.streaming and parsed.status is grpc.StatusCode.DEADLINE_EXCEEDED:
            return grpc.StatusCode.OK, ""  # a watch that had nothing to send yet: admitted, still open
        return parsed.status, parsed.reason
    return grpc.StatusCode.OK, ""


def snapshot(folder: Path) -> dict[str, str]:
    """A digest of every watched table of every database of the mesh (rows in rowid order)."""
    out: dict[str, str] = {}
    for name in DATABASES:
        path = folder / name
        if not path.exists():
            continue
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            tables = [
                row[0]
                for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                if not any(part in row[0] for part in UNWATCHED) and not row[0].startswith("sqlite_")
            ]
            for table in tables:
                digest = hashlib.sha256()
                for row in db.execute(f'SELECT * FROM "{table}"'):
                    digest.update(repr(row).encode())
                out[f"{name}:{table}"] = digest.hexdigest()
        finally:
            db.close()
    return out


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


@dataclass
class Tally:
    """Per RPC: how many answers of each status, and the findings (each with its request, shortened)."""

    counts: dict[str, dict[str, int]]
    findings: list[str]

    def add(self, method: str, status: grpc.StatusCode) -> None:
        per = self.counts.setdefault(method, {})
        per[status.name] = per.get(status.name, 0) + 1


def describe(message: Any, raw: bytes) -> str:
    if message is None:
        return f"raw bytes {raw[:40]!r}… ({len(raw)} bytes)"
    text = str(message).replace("\n", " ")
    return f"{text[:300]}… ({len(raw)} bytes)" if len(text) > 300 else text


async def undo(mesh: TlsMesh, rpc: Rpc) -> None:
    """After a sandbox method succeeded: heal every fault, and put insurer 100's clock back."""
    from mycarenet_core.gen.mycarenet.sandbox.v1 import chaos_pb2, chaos_pb2_grpc

    admin = mesh.channel("sandbox", "admin")
    await chaos_pb2_grpc.ChaosServiceStub(admin).ClearFaults(
        chaos_pb2.ClearFaultsRequest(all=True), timeout=10
    )
    for process in ("ehealth", "hub", "oa-100", "oa-200"):
        agent = chaos_pb2_grpc.ChaosAgentServiceStub(mesh.channel(process, "admin"))
        await agent.SetLinkFaults(chaos_pb2.SetLinkFaultsRequest(), timeout=10)


async def fuzz(
    mesh: TlsMesh,
    folder: Path,
    generator: Generator,
    per_rpc: int,
    *,
    check_writes: bool = True,
    select: Callable[[Rpc], bool] = lambda rpc: True,
    progress: Callable[[str], None] | None = None,
) -> Tally:
    """``per_rpc`` generated requests to every RPC by an admitted caller, and a few by a refused one."""
    tally = Tally({}, [])
    started = time.monotonic()
    for rpc in rpcs():
        if not select(rpc):
            continue
        admitted, refused = admitted_caller(rpc.policy), refused_caller(rpc.policy)
        refusal = expected(rpc.policy, refused)
        for i in range(per_rpc):
            message, raw = generator.request(rpc)
            as_refused = i % 10 == 9
            caller = refused if as_refused else admitted
            before = snapshot(folder) if check_writes else {}
            status, reason = await call_raw(mesh, rpc, caller, raw)
            tally.add(rpc.method, status)
            where = f"{rpc.method} as {caller.label}: {status.name} {reason} for {describe(message, raw)}"
            if status in BAD_STATUSES:
                tally.findings.append(where)
            if as_refused and (status is not refusal.status or reason != refusal.reason):
                tally.findings.append(f"{where}: expected the refusal {refusal.status} {refusal.reason}")
            if status is not grpc.StatusCode.OK and check_writes:
                moved = changed(before, snapshot(folder))
                if moved:
                    tally.findings.append(f"{where}: refused, yet wrote to {', '.join(moved)}")
            if status is grpc.StatusCode.OK and rpc.method.startswith(DISTURBING):
                await undo(mesh, rpc)
        if progress is not None:
            progress(f"{time.monotonic() - started:7.1f} s {rpc.method}: {tally.counts.get(rpc.method)}")
        await asyncio.sleep(0)
    return tally


def format_counts(tally: Tally) -> Iterator[str]:
    statuses = sorted({s for per in tally.counts.values() for s in per})
    yield "| RPC | " + " | ".join(statuses) + " |"
    yield "|---|" + "---|" * len(statuses)
    for method, per in tally.counts.items():
        yield f"| {method} | " + " | ".join(str(per.get(s, 0)) for s in statuses) + " |"


__all__ = [
    "BAD_STATUSES",
    "Generator",
    "Rpc",
    "Tally",
    "admitted_caller",
    "call_raw",
    "format_counts",
    "fuzz",
    "refused_caller",
    "rpcs",
    "snapshot",
    "valid_strings",
]
