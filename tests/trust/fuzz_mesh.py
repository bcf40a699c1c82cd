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
import re
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
from scripts.gen_protos import documented_limits
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
    # A method the table misses is refused to everyone (tests/trust/test_trust_table.py says which).
    found = [(m, req, resp, streaming) for m, req, resp, streaming in methods() if m in policies]
    out = [Rpc(m, req, resp, streaming, policies[m]) for m, req, resp, streaming in found]
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


# --- documented maxima --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Oversized:
    """A request of one RPC with one field one past its documented maximum (the rest left empty)."""

    path: str  # as a field violation names it: "messages[0].message_id"
    field: str  # the full field name in protos/
    maximum: int
    request: Any


def oversized_requests(rpc: Rpc, limits: dict[str, int], depth: int = 3) -> Iterator[Oversized]:
    """For every string, bytes and repeated field of ``rpc``'s request (and of its messages, the first item of
    a repeated one, ``depth`` levels down): the request with that field one past its documented maximum."""

    def walk(descriptor: Descriptor, prefix: list[tuple[FieldDescriptor, bool]]) -> Iterator[Oversized]:
        for field in descriptor.fields:
            full = f"{descriptor.full_name}.{field.name}"
            is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
            if (field.is_repeated or field.type in _TEXT) and full in limits:
                request = rpc.request()
                target = _descend(request, prefix)
                _overfill(target, field, limits[full])
                yield Oversized(_path(prefix, field), full, limits[full], request)
            if field.type == FieldDescriptor.TYPE_MESSAGE and not is_map and len(prefix) < depth:
                assert field.message_type is not None
                if not field.message_type.full_name.startswith("google."):
                    yield from walk(field.message_type, [*prefix, (field, field.is_repeated)])

    yield from walk(rpc.request.DESCRIPTOR, [])


_TEXT = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)


def _descend(message: Any, prefix: list[tuple[FieldDescriptor, bool]]) -> Any:
    for field, repeated in prefix:
        message = getattr(message, field.name).add() if repeated else getattr(message, field.name)
        message.SetInParent()
    return message


def _path(prefix: list[tuple[FieldDescriptor, bool]], field: FieldDescriptor) -> str:
    parts = [f"{f.name}[0]" if repeated else f.name for f, repeated in prefix]
    return ".".join([*parts, field.name])


def _overfill(message: Any, field: FieldDescriptor, maximum: int) -> None:
    """Set ``field`` one past ``maximum``: characters (digits), bytes or items (the first enum value but
    UNSPECIFIED, "1", empty messages)."""
    if not field.is_repeated:
        setattr(
            message,
            field.name,
            "1" * (maximum + 1) if field.type == FieldDescriptor.TYPE_STRING else b"1" * (maximum + 1),
        )
        return
    target = getattr(message, field.name)
    count = maximum + 1
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for i in range(count):
                target[str(i)]
            return
        for _ in range(count):
            target.add()
    elif field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        target.extend([field.enum_type.values[-1].number] * count)
    elif field.type in _TEXT:
        target.extend(["1" if field.type == FieldDescriptor.TYPE_STRING else b"1"] * count)
    else:
        target.extend([1] * count)


def names_field(violation_field: str, path: str, code: int) -> bool:
    """True when a field violation is about ``path``: the same field, one of its items, or (for a code other
    than 100, missing) the message holding it, as some parsers report a whole identifier."""
    if violation_field == path or violation_field.startswith((f"{path}[", f"{path}.")):
        return True
    bare = re.sub(r"\[\d+\]", "", path)
    if re.sub(r"\[\d+\]", "", violation_field) == bare:
        return True
    return code != 100 and bool(violation_field) and path.startswith(f"{violation_field}.")


# --- generation -----------------------------------------------------------------------------------------


def _size(value: Any) -> int:
    """The encoded size a scalar item takes, roughly (strings and bytes by length, others a few bytes)."""
    return len(value) if isinstance(value, (str, bytes)) else 8


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
            # Copies of one generated item, as many as asked but never more than the message limit in all:
            # nested repeated fields of long items multiply (20,000 members of 20,000 periods each took
            # the whole machine's memory before a request was sent).
            count = min(count, max(1, self.max_size // max(first.ByteSize(), 1)))
            for _ in range(count - 1):
                target.add().CopyFrom(first)
            return
        values = [self.scalar(field) for _ in range(min(count, 50))]
        each = max(1, max(_size(value) for value in values)) if values else 1
        count = min(count, max(1, self.max_size // each))  # the same budget for scalars (strings of MBs)
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
            it = stream(raw, metadata=metadata, timeout=0.2)
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


_READERS: dict[Path, sqlite3.Connection] = {}


def _reader(path: Path) -> sqlite3.Connection:
    """A read-only connection to one database, kept (each statement reads the last committed state)."""
    if path not in _READERS:
        _READERS[path] = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, isolation_level=None)
    return _READERS[path]


def close_readers() -> None:
    for db in _READERS.values():
        db.close()
    _READERS.clear()


def snapshot(folder: Path) -> dict[str, str]:
    """A digest of every watched table of every database of the mesh."""
    out: dict[str, str] = {}
    for name in DATABASES:
        path = folder / name
        if not path.exists():
            continue
        db = _reader(path)
        tables = [
            row[0]
            for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            if not any(part in row[0] for part in UNWATCHED) and not row[0].startswith("sqlite_")
        ]
        for table in tables:
            rows = db.execute(f'SELECT * FROM "{table}"').fetchall()
            out[f"{name}:{table}"] = hashlib.sha256(repr(rows).encode()).hexdigest()
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


async def settled(folder: Path, within: float = 2.0) -> dict[str, str]:
    """The databases' snapshot once nothing writes any more (what an accepted call started in the
    background: relays, feeds), or after ``within`` seconds."""
    deadline = time.monotonic() + within
    last = snapshot(folder)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        now = snapshot(folder)
        if now == last:
            return now
        last = now
    return last


@dataclass
class _Run:
    mesh: TlsMesh
    folder: Path
    generator: Generator
    check_writes: bool
    tally: Tally
    before: dict[str, str]


async def _send(run: _Run, rpc: Rpc, queue: list[int]) -> None:
    """Send the requests numbered in ``queue`` (shared by the workers of one RPC) and judge each answer."""
    admitted, refused = admitted_caller(rpc.policy), refused_caller(rpc.policy)
    refusal = expected(rpc.policy, refused)
    tally = run.tally
    while queue:
        i = queue.pop(0)
        message, raw = run.generator.request(rpc)
        caller = refused if i % 10 == 9 else admitted
        status, reason = await call_raw(run.mesh, rpc, caller, raw)
        tally.add(rpc.method, status)
        where = f"{rpc.method} as {caller.label}: {status.name} {reason} for {describe(message, raw)}"
        if status in BAD_STATUSES:
            tally.findings.append(where)
        if caller is refused and (status is not refusal.status or reason != refusal.reason):
            tally.findings.append(f"{where}: expected the refusal {refusal.status} {refusal.reason}")
        if status is grpc.StatusCode.OK and rpc.method.startswith(DISTURBING):
            await undo(run.mesh, rpc)
        if run.check_writes and status is grpc.StatusCode.OK:
            run.before = await settled(run.folder)
        elif run.check_writes:
            after = snapshot(run.folder)
            moved = changed(run.before, after)
            if moved:
                tally.findings.append(f"{where}: refused, yet wrote to {', '.join(moved)}")
            run.before = after


async def fuzz(
    mesh: TlsMesh,
    folder: Path,
    generator: Generator,
    per_rpc: int,
    *,
    check_writes: bool = True,
    concurrency: int = 1,
    select: str = "",
    progress: Callable[[str], None] | None = None,
) -> Tally:
    """``per_rpc`` generated requests to every RPC, 9 in 10 by an admitted caller and 1 in 10 by a refused
    one. With ``check_writes`` one at a time, the databases compared around each refused request; else
    ``concurrency`` at a time (the sandbox's methods one at a time, each success undone before the next).
    ``select``: only the methods it matches (a regular expression)."""
    run = _Run(mesh, folder, generator, check_writes, Tally({}, []), {})
    started = time.monotonic()
    for rpc in rpcs():
        if select and not re.search(select, rpc.method):
            continue
        if check_writes:
            run.before = await settled(folder)
        queue = list(range(per_rpc))
        width = 1 if check_writes or rpc.method.startswith(DISTURBING) else concurrency
        await asyncio.gather(*(_send(run, rpc, queue) for _ in range(width)))
        if progress is not None:
            progress(f"{time.monotonic() - started:7.1f} s {rpc.method}: {run.tally.counts.get(rpc.method)}")
    close_readers()
    return run.tally


def format_counts(tally: Tally) -> Iterator[str]:
    statuses = sorted({s for per in tally.counts.values() for s in per})
    yield "| RPC | " + " | ".join(statuses) + " |"
    yield "|---|" + "---|" * len(statuses)
    for method, per in tally.counts.items():
        yield f"| {method} | " + " | ".join(str(per.get(s, 0)) for s in statuses) + " |"


__all__ = [
    "BAD_STATUSES",
    "DISTURBING",
    "MESSAGE_LIMIT",
    "Generator",
    "Rpc",
    "Tally",
    "admitted_caller",
    "call_raw",
    "describe",
    "documented_limits",
    "expected",
    "format_counts",
    "fuzz",
    "refused_caller",
    "rpcs",
    "snapshot",
    "undo",
    "valid_strings",
]
