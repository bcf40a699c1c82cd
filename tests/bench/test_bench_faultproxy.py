"""The cluster's fault-injecting TCP proxy: transparent, adds latency, resets connections, reloads its
control file."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mycarenet_cluster.faultproxy import FaultProxy, LinkFaults, read_control, write_control


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def _round_trip(port: int, payload: bytes = b"ping") -> tuple[bytes, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        started = time.monotonic()
        writer.write(payload)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(4096), 5)
        return data, time.monotonic() - started
    finally:
        writer.close()


async def _refused(port: int) -> bool:
    """True when the proxy resets or closes the connection instead of echoing."""
    try:
        data, _ = await _round_trip(port)
    except ConnectionError:
        return True
    return not data


async def _broken(reader: asyncio.StreamReader) -> bool:
    try:
        return not await asyncio.wait_for(reader.read(10), 5)
    except ConnectionError:
        return True


async def test_transparent_then_added_latency(echo_port: int) -> None:
    proxy = FaultProxy("127.0.0.1:0", f"127.0.0.1:{echo_port}")
    port = await proxy.start()
    try:
        assert (await _round_trip(port))[0] == b"ping"
        proxy.faults = LinkFaults(latency_ms=120)
        data, took = await _round_trip(port)
        assert data == b"ping"
        assert took >= 0.12 - 0.005  # held half the latency each way
    finally:
        await proxy.stop()


async def test_resets_connections(echo_port: int) -> None:
    proxy = FaultProxy("127.0.0.1:0", f"127.0.0.1:{echo_port}", rng=random.Random(3))
    port = await proxy.start()
    try:
        proxy.faults = LinkFaults(reset_fraction=1.0)
        assert await _refused(port)
        assert proxy.resets >= 1
        proxy.faults = LinkFaults()
        assert (await _round_trip(port))[0] == b"ping"
    finally:
        await proxy.stop()


async def test_reset_mid_connection_breaks_the_link(echo_port: int) -> None:
    proxy = FaultProxy("127.0.0.1:0", f"127.0.0.1:{echo_port}")
    port = await proxy.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"a")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(10), 5) == b"a"
        proxy.faults = LinkFaults(reset_fraction=1.0)
        writer.write(b"b")
        await writer.drain()
        assert await _broken(reader)
    finally:
        writer.close()
        await proxy.stop()


async def test_control_file_is_reloaded(tmp_path: Path, echo_port: int) -> None:
    control = tmp_path / "faults" / "oa-100.json"
    assert read_control(control) == LinkFaults()
    write_control(control, LinkFaults())
    proxy = FaultProxy("127.0.0.1:0", f"127.0.0.1:{echo_port}", control=control)
    await proxy.start()
    try:
        write_control(control, LinkFaults(latency_ms=50, reset_fraction=0.25))
        for _ in range(100):
            if proxy.faults != LinkFaults():
                break
            await asyncio.sleep(0.02)
        assert proxy.faults == LinkFaults(latency_ms=50, reset_fraction=0.25)
    finally:
        await proxy.stop()
    control.write_text("not json")
    assert read_control(control) == LinkFaults()


async def test_target_down_resets_the_client() -> None:
    proxy = FaultProxy("127.0.0.1:0", "127.0.0.1:1")
    port = await proxy.start()
    try:
        assert await _refused(port)
    finally:
        await proxy.stop()
