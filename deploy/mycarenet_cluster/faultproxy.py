"""A fault-injecting TCP proxy for one hub → OA link, controlled at run time through a small JSON file.

The mesh speaks mutual TLS end to end, so the proxy forwards raw bytes and never looks inside: the hub's
TLS session still ends at the OA node (the OA's certificate is valid for 127.0.0.1 whatever the port).

The control file (``<data>/faults/oa-<code>.json``, polled every 50 ms) holds a :class:`LinkFaults`:

- ``latency_ms``: added round-trip latency; every chunk is held ``latency_ms / 2`` in each direction (order
  kept), so one request/response exchange takes about ``latency_ms`` longer.
- ``reset_fraction``: the probability that a new connection is reset at once, and that a chunk sent by the
  hub resets its connection (TCP RST both ways). gRPC multiplexes every call on one connection, so a reset
  fails the calls in flight on it (UNAVAILABLE) and the hub reconnects: about that fraction of requests fail.

An absent or empty file means no fault. ``mycarenet-bench`` writes the file with :func:`write_control`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import struct
import time
from dataclasses import asdict, dataclass
from pathlib import Path

POLL_SECONDS = 0.05
CHUNK = 65536


@dataclass(frozen=True)
class LinkFaults:
    """What the proxy does to the link now (all zero: a transparent proxy)."""

    latency_ms: float = 0.0
    reset_fraction: float = 0.0


def write_control(path: Path, faults: LinkFaults) -> None:
    """Atomically replace the control file of one proxy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(faults)))
    tmp.replace(path)


def read_control(path: Path) -> LinkFaults:
    """The faults a control file asks for (none when the file is missing, empty or unreadable)."""
    try:
        raw = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return LinkFaults()
    if not isinstance(raw, dict):
        return LinkFaults()
    return LinkFaults(
        latency_ms=max(0.0, float(raw.get("latency_ms", 0.0))),
        reset_fraction=min(1.0, max(0.0, float(raw.get("reset_fraction", 0.0)))),
    )


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0) rather than an orderly FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """Listens on ``listen`` and forwards every connection to ``target`` (both ``host:port``)."""

    def __init__(
        self,
        listen: str,
        target: str,
        *,
        control: Path | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.listen_host, _, port = listen.rpartition(":")
        self.listen_port = int(port)
        self.target_host, _, tport = target.rpartition(":")
        self.target_port = int(tport)
        self.target = target
        self.control = control
        self.faults = LinkFaults()
        self.resets = 0
        self._rng = rng or random.Random()
        self._server: asyncio.Server | None = None
        self._poller: asyncio.Task[None] | None = None
        self._links: set[asyncio.Task[None]] = set()
        self._mtime: float | None = None

    @property
    def address(self) -> str:
        return f"{self.listen_host}:{self.listen_port}"

    async def start(self) -> int:
        """Start listening (port 0 picks a free port); returns the bound port."""
        if self.control is not None:
            self._reload()
            self._poller = asyncio.create_task(self._poll(), name=f"fault proxy control {self.control}")
        self._server = await asyncio.start_server(self._accept, self.listen_host, self.listen_port)
        self.listen_port = self._server.sockets[0].getsockname()[1]
        return self.listen_port

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        if self._server is not None:
            self._server.close()
        for task in list(self._links):
            task.cancel()
        await asyncio.gather(*self._links, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    def _reload(self) -> None:
        assert self.control is not None
        try:
            mtime = self.control.stat().st_mtime_ns
        except OSError:
            mtime = None
        if mtime != self._mtime:
            self._mtime = mtime
            self.faults = read_control(self.control)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            self._reload()

    def _should_reset(self) -> bool:
        fraction = self.faults.reset_fraction
        return fraction > 0 and self._rng.random() < fraction

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        try:
            await self._link(reader, writer)
        finally:
            self._links.discard(task)

    async def _link(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._should_reset():
            self.resets += 1
            _reset(client_w)
            return
        try:
            up_r, up_w = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            _reset(client_w)  # the OA is down: the hub sees the connection refused as a reset
            return
        broken = asyncio.Event()
        pipes = [
            asyncio.create_task(self._pipe(client_r, up_w, broken, from_hub=True)),
            asyncio.create_task(self._pipe(up_r, client_w, broken, from_hub=False)),
        ]
        try:
            await broken.wait()
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            for w in (client_w, up_w):
                _reset(w)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        broken: asyncio.Event,
        *,
        from_hub: bool,
    ) -> None:
        """Copy one direction; each chunk waits for its due time (now + half the added latency)."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
                queue.task_done()

        sender = asyncio.create_task(deliver())
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:  # the peer closed: deliver what is still held back first
                    joined = asyncio.ensure_future(queue.join())
                    await asyncio.wait([joined, sender], return_when=asyncio.FIRST_COMPLETED)
                    joined.cancel()
                    break
                if from_hub and self._should_reset():
                    self.resets += 1
                    break
                queue.put_nowait((time.monotonic() + self.faults.latency_ms / 2000.0, data))
                if sender.done():
                    break
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            broken.set()
