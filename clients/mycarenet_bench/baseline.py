"""The machine's baselines, measured in the same run as the mesh so that every figure is also a ratio.

Two echoes, to place one gRPC hop:

- ``echo_direct``: a plain echo over one gRPC hop;
- ``echo_proxy``: the same behind one Python (grpc.aio) proxy hop.

And **the floor**: the smallest Python grpc.aio chain of the shape of a consult, mutual TLS on every hop,
each server in a process of its own, no interceptor, no ORM. It carries the consult's own messages: the
client sends a ``ConsultDmgRequest``, the proxy parses it and forwards it, the data server parses it, reads
the row and answers a ``ConsultDmgResponse`` (patient, insurer, holder, period) that the proxy passes back
as bytes:

- ``floor``: client → proxy (one in-memory lookup) → data server (one indexed SQLite read). A consult is
  this shape once the hub answers the therapeutic-relation check from memory: client → hub → OA node.
- ``floor_check``: client → proxy (the lookup, then one unary call to a check server answering from
  memory) → data server: the shape of a consult whose relation check is one more hop (hub → eHealth).

The data server reads as the OA node does (``read``): ``loop``, a read-only sqlite3 connection in autocommit
on the event loop's thread (the OA node since its consult became one statement), or ``thread``, through
aiosqlite (one hand-off to its thread per read).

The floor is measured at each load level of the run (1 caller, and the closed loop's concurrencies), with
the CPU each of its processes spent per request (``/proc``: see :mod:`mycarenet_bench.cpu`), so that a
consult at 16 in flight compares with the floor at 16 in flight.

By default the servers run in child processes (``python -m mycarenet_bench.baseline --serve ...``) on
uvloop, like the mesh's own processes, so that the load generator and the servers share neither an event
loop nor a GIL; ``inprocess`` runs them on the bench's own loop (for tests; no per-process CPU then).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import grpc
import uvloop

from mycarenet_bench.cpu import Snapshot, per_request_windows
from mycarenet_bench.stats import new_histogram, summarize_histogram
from mycarenet_core.channels import client_credentials, open_channel, server_credentials
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2, dmg_service_pb2

ECHO_SERVICE = "mycarenet.bench.v1.EchoService"
METHOD = f"/{ECHO_SERVICE}/Echo"
PAYLOAD = bytes(range(128))  # about the size of a ConsultDmg request

FLOOR_SERVICE = "mycarenet.bench.v1.FloorService"
CONSULT = f"/{FLOOR_SERVICE}/Consult"  # proxy: lookup, then the data server
CONSULT_CHECKED = f"/{FLOOR_SERVICE}/ConsultChecked"  # proxy: lookup, check server, then the data server
CHECK = f"/{FLOOR_SERVICE}/Check"
READ = f"/{FLOOR_SERVICE}/Read"
FLOOR_ROWS = 2000  # the data server's table (one indexed read per call; the cost does not grow with it)
READ_SQL = (
    "SELECT first_name, last_name, holder, holder_first_name, holder_last_name, start_date, end_date"
    " FROM holding WHERE niss = ?"
)
FLOOR_CHAINS = {
    "floor": "client → proxy (in-memory lookup) → data server (one indexed SQLite read, {read})",
    "floor_check": "client → proxy (in-memory lookup + unary call to a check server) → data server "
    "(one indexed SQLite read, {read})",
}
READ_MODES = {
    "loop": "sqlite3 on the event loop's thread",
    "thread": "aiosqlite, one hand-off to its thread",
}
CHILD_ROLES = ("echo", "floor-data", "floor-check", "floor-proxy")


def floor_key(index: int) -> str:
    """The NISS-shaped key of row ``index`` of the data server."""
    return f"{71_000_000_000 + index:011d}"


def floor_payloads() -> list[bytes]:
    """One serialized ``ConsultDmgRequest`` per row of the data server."""
    return [
        dmg_service_pb2.ConsultDmgRequest(
            requester_reference=f"floor-{i:08d}",
            patient=common_pb2.PatientSelector(niss=floor_key(i)),
            request_date=common_pb2.Date(year=2026, month=11, day=20),
        ).SerializeToString()
        for i in range(FLOOR_ROWS)
    ]


def holder(index: int) -> str:
    """The INAMI-shaped holder of row ``index``."""
    return f"1{index % 97:05d}27004"


def _date(text: str | None) -> common_pb2.Date | None:
    if text is None:
        return None
    year, month, day = (int(part) for part in text.split("-"))
    return common_pb2.Date(year=year, month=month, day=day)


@dataclass(frozen=True)
class TlsPaths:
    """Mutual TLS: the CA, this side's certificate and key (servers), the client's (callers)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server(self) -> grpc.ServerCredentials:
        return server_credentials(self.ca, self.server_cert, self.server_key)

    def client(self) -> grpc.ChannelCredentials:
        return client_credentials(self.ca, self.client_cert, self.client_key)

    def args(self) -> list[str]:
        paths = (self.ca, self.server_cert, self.server_key, self.client_cert, self.client_key)
        return [str(p) for p in paths]


Handler = Callable[[Any, "grpc.aio.ServicerContext[Any, Any]"], Awaitable[bytes]]
# A handler with the request deserializer it wants (None: raw bytes); answers are always bytes.
Method = Handler | tuple[Handler, Callable[[bytes], Any]]
Closer = Callable[[], Awaitable[None]]


def _server(service: str, handlers: Mapping[str, Method]) -> grpc.aio.Server:
    server = grpc.aio.server()
    methods = {}
    for name, found in handlers.items():
        handler, parse = found if isinstance(found, tuple) else (found, None)
        methods[name] = grpc.unary_unary_rpc_method_handler(handler, request_deserializer=parse)
    generic = grpc.method_handlers_generic_handler(service, methods)
    server.add_generic_rpc_handlers((generic,))
    return server


def _bind(server: grpc.aio.Server, tls: TlsPaths | None) -> int:
    if tls is None:
        return server.add_insecure_port("127.0.0.1:0")
    return server.add_secure_port("127.0.0.1:0", tls.server())


class Servers:
    """grpc.aio servers and what they hold (channels, a database) on this loop; stopped in reverse."""

    def __init__(self, tls: TlsPaths | None = None) -> None:
        self.tls = tls
        self._servers: list[grpc.aio.Server] = []
        self._closers: list[Closer] = []

    def channel(self, target: str) -> grpc.aio.Channel:
        channel = open_channel(target, credentials=self.tls.client() if self.tls else None)

        async def close() -> None:
            await channel.close(None)

        self._closers.append(close)
        return channel

    async def serve(self, service: str, handlers: Mapping[str, Method]) -> int:
        server = _server(service, handlers)
        port = _bind(server, self.tls)
        await server.start()
        self._servers.append(server)
        return port

    async def stop(self) -> None:
        for server in reversed(self._servers):
            await server.stop(0)
        self._servers.clear()
        for close in reversed(self._closers):
            await close()
        self._closers.clear()

    # --- the echoes ---------------------------------------------------------------------------------------

    async def echo(self) -> dict[str, int]:
        """The echo server and the forwarding proxy in front of it."""

        async def echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            return request

        echo_port = await self.serve(ECHO_SERVICE, {"Echo": echo})
        forward = self.channel(f"127.0.0.1:{echo_port}").unary_unary(METHOD, None, None)

        async def proxy(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            answer: bytes = await forward(request, timeout=context.time_remaining())
            return answer

        return {"echo": echo_port, "proxy": await self.serve(ECHO_SERVICE, {"Echo": proxy})}

    # --- the floor ----------------------------------------------------------------------------------------

    async def floor_data(self, folder: Path, read_mode: str = "loop") -> dict[str, int]:
        """The data server: parses the ``ConsultDmgRequest``, one indexed read of a SQLite table, answers a
        ``ConsultDmgResponse``; the read on the loop's thread (``loop``: a read-only sqlite3 connection in
        autocommit) or through aiosqlite (``thread``)."""
        if read_mode not in READ_MODES:
            raise ValueError(f"read mode {read_mode!r}: one of {', '.join(READ_MODES)}")
        path = folder / "floor.db"
        with contextlib.closing(sqlite3.connect(path)) as setup:
            setup.execute(
                "CREATE TABLE holding (niss TEXT PRIMARY KEY, first_name TEXT NOT NULL,"
                " last_name TEXT NOT NULL, holder TEXT NOT NULL, holder_first_name TEXT NOT NULL,"
                " holder_last_name TEXT NOT NULL, start_date TEXT NOT NULL, end_date TEXT)"
            )
            setup.executemany(
                "INSERT INTO holding VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        floor_key(i),
                        "Jan",
                        f"Peeters {i}",
                        holder(i),
                        "Ann",
                        "Doc",
                        "2025-03-01",
                        None,
                    )
                    for i in range(FLOOR_ROWS)
                ),
            )
            setup.commit()

        async def answer(
            request: dmg_service_pb2.ConsultDmgRequest,
            row: tuple[Any, ...] | None,
            context: grpc.aio.ServicerContext[Any, Any],
        ) -> bytes:
            if row is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, "no such member")
            first, last, holder, holder_first, holder_last, start, end = row
            return dmg_service_pb2.ConsultDmgResponse(
                requester_reference=request.requester_reference,
                patient=common_pb2.Patient(niss=request.patient.niss, first_name=first, last_name=last),
                insurer_code="300",
                holding=dmg_pb2.DmgHolding(
                    holder=common_pb2.Provider(inami=holder, first_name=holder_first, last_name=holder_last),
                    period=common_pb2.Period(start=_date(start), end=_date(end)),
                ),
            ).SerializeToString()

        parse = dmg_service_pb2.ConsultDmgRequest.FromString
        if read_mode == "loop":
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)

            async def close_conn() -> None:
                conn.close()

            self._closers.append(close_conn)

            async def read(
                request: dmg_service_pb2.ConsultDmgRequest, context: grpc.aio.ServicerContext[Any, Any]
            ) -> bytes:
                row = conn.execute(READ_SQL, (request.patient.niss,)).fetchone()
                return await answer(request, row, context)

        else:
            db = await aiosqlite.connect(path)

            async def close_db() -> None:
                await db.close()

            self._closers.append(close_db)

            async def read(
                request: dmg_service_pb2.ConsultDmgRequest, context: grpc.aio.ServicerContext[Any, Any]
            ) -> bytes:
                rows = list(await db.execute_fetchall(READ_SQL, (request.patient.niss,)))
                return await answer(request, tuple(rows[0]) if rows else None, context)

        return {"data": await self.serve(FLOOR_SERVICE, {"Read": (read, parse)})}

    async def floor_check(self) -> dict[str, int]:
        """The check server: a yes or no from an in-memory set (the key in the request's bytes)."""
        allowed = {floor_key(i).encode() for i in range(FLOOR_ROWS)}

        async def check(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            return b"\x01" if request in allowed else b"\x00"

        return {"check": await self.serve(FLOOR_SERVICE, {"Check": check})}

    async def floor_proxy(self, data: str, check: str) -> dict[str, int]:
        """The proxy: parses the ``ConsultDmgRequest``, one in-memory lookup (the route of the patient),
        forwards the request to the data server and its answer back as bytes; ``ConsultChecked`` asks the
        check server first."""
        routes = {floor_key(i): 0 for i in range(FLOOR_ROWS)}
        read = self.channel(data).unary_unary(READ, dmg_service_pb2.ConsultDmgRequest.SerializeToString, None)
        ask = self.channel(check).unary_unary(CHECK, None, None)
        parse = dmg_service_pb2.ConsultDmgRequest.FromString

        async def consult(
            request: dmg_service_pb2.ConsultDmgRequest, context: grpc.aio.ServicerContext[Any, Any]
        ) -> bytes:
            if routes.get(request.patient.niss) is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, "no route")
            answer: bytes = await read(request, timeout=context.time_remaining())
            return answer

        async def consult_checked(
            request: dmg_service_pb2.ConsultDmgRequest, context: grpc.aio.ServicerContext[Any, Any]
        ) -> bytes:
            niss = request.patient.niss
            if routes.get(niss) is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, "no route")
            if await ask(niss.encode(), timeout=context.time_remaining()) != b"\x01":
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "no relation")
            answer: bytes = await read(request, timeout=context.time_remaining())
            return answer

        methods: dict[str, Method] = {"Consult": (consult, parse), "ConsultChecked": (consult_checked, parse)}
        return {"proxy": await self.serve(FLOOR_SERVICE, methods)}


# --- servers in child processes --------------------------------------------------------------------------


class ChildServer:
    """Servers of one ``role`` in a child process (on uvloop); stops when told or when this process's pipe
    closes. ``ports`` are what the child printed; ``pid`` is the child's."""

    def __init__(
        self,
        role: str,
        tls: TlsPaths | None = None,
        *,
        targets: Sequence[str] = (),
        options: Sequence[str] = (),
    ) -> None:
        if role not in CHILD_ROLES:
            raise ValueError(role)
        self.role, self.tls, self.targets, self.options = role, tls, list(targets), list(options)
        self.process: asyncio.subprocess.Process | None = None
        self.ports: dict[str, int] = {}

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def start(self) -> dict[str, int]:
        args = [sys.executable, "-m", "mycarenet_bench.baseline", "--serve", self.role]
        if self.tls:
            args += ["--tls", *self.tls.args()]
        if self.targets:
            args += ["--targets", *self.targets]
        args += self.options
        self.process = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), 60)
        except TimeoutError:
            line = b""
        if not line:
            await self.stop()
            raise RuntimeError(f"the baseline {self.role} server did not start")
        self.ports = {k: int(v) for k, v in json.loads(line).items()}
        return self.ports

    async def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


class ChildEchoServers:
    """The echo server and its proxy in a child process."""

    def __init__(self, tls: TlsPaths | None = None) -> None:
        self.child = ChildServer("echo", tls)

    async def start(self) -> tuple[int, int]:
        ports = await self.child.start()
        return ports["echo"], ports["proxy"]

    async def stop(self) -> None:
        await self.child.stop()


class EchoServers:
    """The echo server and its proxy on this process's loop."""

    def __init__(self, tls: TlsPaths | None = None) -> None:
        self.servers = Servers(tls)

    async def start(self) -> tuple[int, int]:
        ports = await self.servers.echo()
        return ports["echo"], ports["proxy"]

    async def stop(self) -> None:
        await self.servers.stop()


class Floor:
    """The floor's three servers (data, check, proxy): child processes, or on this loop (``inprocess``).

    ``pids`` names each child process (for its CPU); in process, the servers' CPU is the caller's own."""

    def __init__(self, tls: TlsPaths | None, mode: str = "process", read: str = "loop") -> None:
        if read not in READ_MODES:
            raise ValueError(f"read mode {read!r}: one of {', '.join(READ_MODES)}")
        self.tls, self.mode, self.read = tls, mode, read
        self.children: dict[str, ChildServer] = {}
        self._local: Servers | None = None
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self.proxy_port = 0

    @property
    def pids(self) -> dict[str, int | None]:
        return {f"floor-{name}": child.pid for name, child in self.children.items()}

    async def start(self) -> int:
        try:
            if self.mode == "process":
                self.children["data"] = ChildServer("floor-data", self.tls, options=["--read", self.read])
                self.children["check"] = ChildServer("floor-check", self.tls)
                for name in ("data", "check"):
                    await self.children[name].start()
                data, check = self.children["data"].ports["data"], self.children["check"].ports["check"]
                self.children["proxy"] = ChildServer(
                    "floor-proxy", self.tls, targets=[f"127.0.0.1:{data}", f"127.0.0.1:{check}"]
                )
                self.proxy_port = (await self.children["proxy"].start())["proxy"]
            else:
                self._folder = tempfile.TemporaryDirectory(prefix="mcn-floor-")
                self._local = local = Servers(self.tls)
                data = (await local.floor_data(Path(self._folder.name), self.read))["data"]
                check = (await local.floor_check())["check"]
                ports = await local.floor_proxy(f"127.0.0.1:{data}", f"127.0.0.1:{check}")
                self.proxy_port = ports["proxy"]
        except BaseException:
            await self.stop()
            raise
        return self.proxy_port

    async def stop(self) -> None:
        for child in reversed(list(self.children.values())):
            await child.stop()
        self.children.clear()
        if self._local is not None:
            await self._local.stop()
            self._local = None
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None


# --- measuring -------------------------------------------------------------------------------------------


class Meter:
    """Latency, count, errors, time and CPU of one measurement, added up over one or more slices."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.hist = new_histogram()
        self.count = 0
        self.errors = 0
        self.elapsed = 0.0
        self.slices = 0
        self.windows: list[tuple[Snapshot, Snapshot]] = []

    async def drive(
        self,
        call: grpc.aio.UnaryUnaryMultiCallable[Any, Any],
        payloads: Iterator[bytes],
        seconds: float,
        *,
        deadline: float = 5.0,
        pids: Mapping[str, int | None] | None = None,
    ) -> None:
        """One slice: ``concurrency`` callers for ``seconds``; with ``pids``, the CPU of those processes and
        of this one (the ``client``) over the slice."""
        stop = time.monotonic() + seconds

        async def worker() -> None:
            while (start := time.monotonic()) < stop:
                try:
                    await call(next(payloads), timeout=deadline)
                except grpc.aio.AioRpcError:
                    self.errors += 1
                    continue
                self.hist.record_value(max(1, round((time.monotonic() - start) * 1e6)))
                self.count += 1

        watched = {**pids, "client": os.getpid()} if pids is not None else None
        before = Snapshot.take(watched) if watched else None
        began = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        self.elapsed += time.monotonic() - began
        self.slices += 1
        if before is not None and watched is not None:
            self.windows.append((before, Snapshot.take(watched)))

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "concurrency": self.concurrency,
            "requests": self.count,
            "errors": self.errors,
            "throughput_rps": round(self.count / self.elapsed, 2) if self.elapsed > 0 else 0.0,
            "latency_ms": summarize_histogram(self.hist),
        }
        if self.slices > 1:
            out["slices"] = self.slices
        if self.windows:
            names = list(self.windows[0][0].procs)
            out["cpu"] = per_request_windows(self.windows, self.count, groups={"chain": names})
        return out


async def measure_calls(
    target: str,
    *,
    method: str = METHOD,
    payloads: Sequence[bytes] = (PAYLOAD,),
    credentials: grpc.ChannelCredentials | None,
    seconds: float,
    concurrency: int,
    deadline: float = 5.0,
    pids: Mapping[str, int | None] | None = None,
) -> dict[str, Any]:
    """Closed loop of ``concurrency`` callers of ``method`` for ``seconds`` (after a short warm-up), cycling
    through ``payloads``: latency and rate; with ``pids``, the CPU each of those processes (and this one,
    the ``client``) spent per answered call."""
    cycle = itertools.cycle(payloads)
    meter = Meter(concurrency)
    async with open_channel(target, credentials=credentials) as channel:
        call = channel.unary_unary(method, None, None)
        for _ in range(50):  # warm-up: connection, TLS, first calls
            await call(next(cycle), timeout=deadline)
        await meter.drive(call, cycle, seconds, deadline=deadline, pids=pids)
    return meter.result()


async def measure_echo(
    target: str,
    *,
    credentials: grpc.ChannelCredentials | None,
    seconds: float,
    concurrency: int,
    deadline: float = 5.0,
) -> dict[str, Any]:
    """The echo's latency and rate (see :func:`measure_calls`)."""
    return await measure_calls(
        target, credentials=credentials, seconds=seconds, concurrency=concurrency, deadline=deadline
    )


def floor_levels(levels: Sequence[float], concurrency: int) -> list[int]:
    """The concurrencies the floor is measured at: 1, the loaded baseline's, and the run's own."""
    return sorted({1, max(1, concurrency), *(max(1, int(level)) for level in levels)})


FLOOR_METHODS = {"floor": CONSULT, "floor_check": CONSULT_CHECKED}


class FloorSession:
    """The floor's servers kept running, measured in slices (:meth:`measure`) that add up per chain and
    concurrency: between slices of the mesh's own load, so that both see the same machine."""

    def __init__(self, tls: TlsPaths | None, mode: str = "process", read: str = "loop") -> None:
        self.tls, self.mode, self.read = tls, mode, read
        self.floor = Floor(tls, mode, read)
        self.meters: dict[tuple[str, int], Meter] = {}
        self._channel: grpc.aio.Channel | None = None
        self._calls: dict[str, grpc.aio.UnaryUnaryMultiCallable[Any, Any]] = {}
        self._payloads = itertools.cycle(floor_payloads())

    async def start(self) -> None:
        port = await self.floor.start()
        try:
            self._channel = open_channel(
                f"127.0.0.1:{port}", credentials=self.tls.client() if self.tls else None
            )
            for name, method in FLOOR_METHODS.items():
                self._calls[name] = call = self._channel.unary_unary(method, None, None)
                for _ in range(50):  # warm-up: connection, TLS, first calls
                    await call(next(self._payloads), timeout=5.0)
        except BaseException:
            await self.stop()
            raise

    async def measure(self, name: str, level: int, seconds: float) -> None:
        """One slice of chain ``name`` at ``level`` in flight."""
        meter = self.meters.setdefault((name, level), Meter(level))
        pids = self.floor.pids if self.mode == "process" else {}
        chain = {k: v for k, v in pids.items() if name == "floor_check" or k != "floor-check"}
        await meter.drive(self._calls[name], self._payloads, seconds, pids=chain)

    def result(self) -> dict[str, dict[str, Any]]:
        """Per chain: ``by_concurrency`` (every level measured), ``latency`` (one caller) and
        ``throughput`` (the highest level), the shape of the echoes' results (for :func:`ratios`)."""
        out: dict[str, dict[str, Any]] = {}
        for name in FLOOR_METHODS:
            by_level = {str(level): m.result() for (n, level), m in sorted(self.meters.items()) if n == name}
            if not by_level:
                continue
            top = max(int(k) for k in by_level)
            out[name] = {
                "chain": FLOOR_CHAINS[name].format(read=READ_MODES[self.read]),
                "mode": self.mode,
                "read": self.read,
                "by_concurrency": by_level,
                "latency": by_level.get("1") or by_level[str(min(int(k) for k in by_level))],
                "throughput": by_level[str(top)],
            }
        return out

    async def stop(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None
        await self.floor.stop()


async def measure_floor(
    *,
    tls: TlsPaths | None,
    seconds: float = 3.0,
    levels: Sequence[int] = (1, 16),
    mode: str = "process",
    read: str = "loop",
) -> dict[str, dict[str, Any]]:
    """Both floor chains at each concurrency in ``levels`` (and 1), one after the other: latency, rate and
    CPU per process per call (see :meth:`FloorSession.result`)."""
    session = FloorSession(tls, mode, read)
    await session.start()
    try:
        for name in FLOOR_METHODS:
            for level in sorted(set(levels) | {1}):
                await session.measure(name, level, seconds)
        return session.result()
    finally:
        await session.stop()


async def measure_baseline(
    *,
    tls: TlsPaths | None,
    seconds: float = 3.0,
    concurrency: int = 16,
    mode: str = "process",
    floor: bool = True,
    levels: Sequence[float] = (),
    read: str = "loop",
) -> dict[str, Any]:
    """The echoes (one caller, ``concurrency`` callers), then the floor chains at ``floor_levels``."""
    servers: EchoServers | ChildEchoServers = ChildEchoServers(tls) if mode == "process" else EchoServers(tls)
    echo_port, proxy_port = await servers.start()
    creds = tls.client() if tls else None
    out: dict[str, Any] = {"mode": mode, "tls": tls is not None, "payload_bytes": len(PAYLOAD)}
    try:
        for name, port in (("echo_direct", echo_port), ("echo_proxy", proxy_port)):
            target = f"127.0.0.1:{port}"
            single = await measure_echo(target, credentials=creds, seconds=seconds, concurrency=1)
            loaded = await measure_echo(target, credentials=creds, seconds=seconds, concurrency=concurrency)
            out[name] = {"latency": single, "throughput": loaded}
    finally:
        await servers.stop()
    if floor:
        out |= await measure_floor(
            tls=tls, seconds=seconds, levels=floor_levels(levels, concurrency), mode=mode, read=read
        )
    return out


def ratios(
    summary: dict[str, Any], baseline: dict[str, Any] | None, hop: str = "echo_direct"
) -> dict[str, Any]:
    """A summary's p50 / p99 / throughput as multiples of the baseline's (one caller / loaded)."""
    if not baseline or hop not in baseline:
        return {}
    base = baseline[hop]
    return _ratios(summary, base["latency"], base["throughput"])


def level_ratios(
    summary: dict[str, Any], baseline: dict[str, Any] | None, hop: str, level: float
) -> dict[str, Any]:
    """A closed-loop step's p50 / p99 / throughput as multiples of the floor's at the same concurrency
    (``{}`` when the floor was not measured at that level)."""
    if not baseline or hop not in baseline:
        return {}
    found = baseline[hop].get("by_concurrency", {}).get(str(int(level)))
    if found is None:
        return {}
    return _ratios(summary, found, found)


def _ratios(summary: dict[str, Any], latency: dict[str, Any], loaded: dict[str, Any]) -> dict[str, Any]:
    lat, base_lat = summary["latency_ms"], latency["latency_ms"]
    out: dict[str, Any] = {}
    for key in ("p50", "p99"):
        if base_lat[key] > 0 and lat[key] > 0:
            out[key] = round(lat[key] / base_lat[key], 2)
    rate = loaded["throughput_rps"]
    if rate > 0:
        out["throughput"] = round(summary["throughput_rps"] / rate, 4)
    return out


# --- the child process -----------------------------------------------------------------------------------


async def _serve_child(role: str, tls: TlsPaths | None, targets: Sequence[str], read: str) -> None:
    servers = Servers(tls)
    with tempfile.TemporaryDirectory(prefix="mcn-floor-") as folder:
        try:
            if role == "echo":
                ports = await servers.echo()
            elif role == "floor-data":
                ports = await servers.floor_data(Path(folder), read)
            elif role == "floor-check":
                ports = await servers.floor_check()
            else:
                data, check = targets
                ports = await servers.floor_proxy(data, check)
            print(json.dumps(ports), flush=True)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes the pipe
        finally:
            await servers.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="baseline servers for mycarenet-bench")
    parser.add_argument("--serve", choices=CHILD_ROLES, default="echo")
    parser.add_argument("--tls", nargs=5, metavar=("CA", "CERT", "KEY", "CLIENT_CERT", "CLIENT_KEY"))
    parser.add_argument("--targets", nargs=2, metavar=("DATA", "CHECK"), default=())
    parser.add_argument("--read", choices=tuple(READ_MODES), default="loop", help="floor-data: how it reads")
    args = parser.parse_args(argv)
    tls = TlsPaths(*(Path(p) for p in args.tls)) if args.tls else None
    if args.serve == "floor-proxy" and len(args.targets) != 2:
        parser.error("floor-proxy needs --targets DATA CHECK")
    uvloop.run(_serve_child(args.serve, tls, args.targets, args.read))  # as the mesh's processes run


if __name__ == "__main__":
    main()
