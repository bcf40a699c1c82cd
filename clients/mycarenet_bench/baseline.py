"""The machine's baseline: a plain echo over one gRPC hop, and over one Python (grpc.aio) proxy hop.

Both servers are tiny grpc.aio servers with a generic handler (raw bytes, no proto): ``EchoServer`` answers
with the request, ``EchoProxy`` forwards every call to the echo server on its own channel. With TLS paths
they use mutual TLS like the mesh. Every result of a run is also given as a ratio to these figures, so
that numbers compare across machines.

By default they run in a child process (``python -m mycarenet_bench.baseline``), like the mesh's own
processes, so that the load generator and the servers do not share one event loop and one GIL; ``inprocess``
runs them on the bench's own loop (for tests).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from mycarenet_bench.stats import new_histogram, summarize_histogram
from mycarenet_core.channels import client_credentials, open_channel, server_credentials

METHOD = "/mycarenet.bench.v1.EchoService/Echo"
PAYLOAD = bytes(range(128))  # about the size of a ConsultDmg request


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


def _server(handler: Callable[..., Awaitable[bytes]]) -> grpc.aio.Server:
    server = grpc.aio.server()
    generic = grpc.method_handlers_generic_handler(
        "mycarenet.bench.v1.EchoService",
        {"Echo": grpc.unary_unary_rpc_method_handler(handler)},
    )
    server.add_generic_rpc_handlers((generic,))
    return server


class EchoServers:
    """The echo server and the forwarding proxy in front of it, on free ports of 127.0.0.1."""

    def __init__(self, tls: TlsPaths | None = None) -> None:
        self.tls = tls
        self.echo_port = 0
        self.proxy_port = 0
        self._servers: list[grpc.aio.Server] = []
        self._upstream: grpc.aio.Channel | None = None

    async def start(self) -> tuple[int, int]:
        server_creds = self.tls.server() if self.tls else None

        async def echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            return request

        echo_server = _server(echo)
        self.echo_port = self._bind(echo_server, server_creds)
        await echo_server.start()
        self._servers.append(echo_server)

        self._upstream = open_channel(
            f"127.0.0.1:{self.echo_port}", credentials=self.tls.client() if self.tls else None
        )
        forward = self._upstream.unary_unary(METHOD, None, None)

        async def proxy(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            remaining = context.time_remaining()
            answer: bytes = await forward(request, timeout=remaining)
            return answer

        proxy_server = _server(proxy)
        self.proxy_port = self._bind(proxy_server, server_creds)
        await proxy_server.start()
        self._servers.append(proxy_server)
        return self.echo_port, self.proxy_port

    @staticmethod
    def _bind(server: grpc.aio.Server, creds: grpc.ServerCredentials | None) -> int:
        if creds is None:
            return server.add_insecure_port("127.0.0.1:0")
        return server.add_secure_port("127.0.0.1:0", creds)

    async def stop(self) -> None:
        for server in reversed(self._servers):
            await server.stop(0)
        self._servers.clear()
        if self._upstream is not None:
            await self._upstream.close(None)
            self._upstream = None


class ChildEchoServers:
    """The same two servers in a child process; stops when told or when this process's pipe closes."""

    def __init__(self, tls: TlsPaths | None = None) -> None:
        self.tls = tls
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> tuple[int, int]:
        args = [sys.executable, "-m", "mycarenet_bench.baseline"]
        if self.tls:
            t = self.tls
            args += [
                "--tls",
                *(str(p) for p in (t.ca, t.server_cert, t.server_key, t.client_cert, t.client_key)),
            ]
        self.process = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 30)
        if not line:
            await self.stop()
            raise RuntimeError("the baseline echo servers did not start")
        ports = json.loads(line)
        return int(ports["echo"]), int(ports["proxy"])

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


async def measure_echo(
    target: str,
    *,
    credentials: grpc.ChannelCredentials | None,
    seconds: float,
    concurrency: int,
    deadline: float = 5.0,
) -> dict[str, Any]:
    """Closed loop of ``concurrency`` callers for ``seconds`` (after a short warm-up): latency and rate."""
    hist = new_histogram()
    errors = 0
    async with open_channel(target, credentials=credentials) as channel:
        call = channel.unary_unary(METHOD, None, None)
        for _ in range(50):  # warm-up: connection, TLS, first calls
            await call(PAYLOAD, timeout=deadline)
        stop = time.monotonic() + seconds
        count = 0

        async def worker() -> None:
            nonlocal count, errors
            while (start := time.monotonic()) < stop:
                try:
                    await call(PAYLOAD, timeout=deadline)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                hist.record_value(max(1, round((time.monotonic() - start) * 1e6)))
                count += 1

        began = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - began
    return {
        "concurrency": concurrency,
        "requests": count,
        "errors": errors,
        "throughput_rps": round(count / elapsed, 2) if elapsed > 0 else 0.0,
        "latency_ms": summarize_histogram(hist),
    }


async def measure_baseline(
    *,
    tls: TlsPaths | None,
    seconds: float = 3.0,
    concurrency: int = 16,
    mode: str = "process",
) -> dict[str, Any]:
    """Latency (one caller) and throughput (``concurrency`` callers) of the echo, direct and via the proxy."""
    servers: EchoServers | ChildEchoServers = ChildEchoServers(tls) if mode == "process" else EchoServers(tls)
    echo_port, proxy_port = await servers.start()
    creds = tls.client() if tls else None
    try:
        out: dict[str, Any] = {"mode": mode, "tls": tls is not None, "payload_bytes": len(PAYLOAD)}
        for name, port in (("echo_direct", echo_port), ("echo_proxy", proxy_port)):
            target = f"127.0.0.1:{port}"
            single = await measure_echo(target, credentials=creds, seconds=seconds, concurrency=1)
            loaded = await measure_echo(target, credentials=creds, seconds=seconds, concurrency=concurrency)
            out[name] = {"latency": single, "throughput": loaded}
        return out
    finally:
        await servers.stop()


def ratios(
    summary: dict[str, Any], baseline: dict[str, Any] | None, hop: str = "echo_direct"
) -> dict[str, Any]:
    """A summary's p50 / p99 / throughput as multiples of the baseline's (one caller / loaded)."""
    if not baseline or hop not in baseline:
        return {}
    base = baseline[hop]
    lat, base_lat = summary["latency_ms"], base["latency"]["latency_ms"]
    out: dict[str, Any] = {}
    for key in ("p50", "p99"):
        if base_lat[key] > 0 and lat[key] > 0:
            out[key] = round(lat[key] / base_lat[key], 2)
    rate = base["throughput"]["throughput_rps"]
    if rate > 0:
        out["throughput"] = round(summary["throughput_rps"] / rate, 4)
    return out


async def _serve_child(tls: TlsPaths | None) -> None:
    servers = EchoServers(tls)
    echo_port, proxy_port = await servers.start()
    print(json.dumps({"echo": echo_port, "proxy": proxy_port}), flush=True)
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes the pipe
    finally:
        await servers.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="baseline echo servers for mycarenet-bench")
    parser.add_argument("--tls", nargs=5, metavar=("CA", "CERT", "KEY", "CLIENT_CERT", "CLIENT_KEY"))
    args = parser.parse_args(argv)
    tls = TlsPaths(*(Path(p) for p in args.tls)) if args.tls else None
    asyncio.run(_serve_child(tls))


if __name__ == "__main__":
    main()
