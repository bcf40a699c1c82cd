"""A real local cluster for the tests: ``mycarenet-cluster up`` as a subprocess on free ports, its
description, the ``mycarenet`` CLI against it, and the PostgreSQL databases it made."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
# Members seeded by default: the demo actors (GPs A and B, the demo patient, the pharmacy and its pharmacist,
# the newborns) are always there, and a cluster's start (its seeding) grows with the population: a test that
# needs more members says so.
POPULATION = 40
SHARED_TODAY = "2026-11-20"  # the date the shared cluster starts at (tests/cluster/conftest.py)


def free_base_port(*, metrics: bool = False) -> int:
    """A base port whose cluster ports are free (and their metrics ports, + 1000, with ``metrics``)."""
    for _ in range(50):
        base = random.randrange(20000, 39000, 20)
        ports = [base, base + 1, base + 2, *range(base + 10, base + 17)]  # hub, eHealth, sandbox, OA nodes
        ports += [p + 1000 for p in ports] if metrics else []
        try:
            socks = []
            for p in ports:
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise RuntimeError("no free port range")


class Cluster:
    def __init__(
        self,
        data: Path,
        base_port: int,
        database_template: str | None = None,
        population: int = POPULATION,
        *,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.data, self.base_port, self.population = data, base_port, population
        self.database_template = database_template
        self.extra_args, self.env = list(extra_args), dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    def up(self, today: str) -> dict[str, Any]:
        log = open(self.data.parent / f"cluster-{today}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                str(BIN / "mycarenet-cluster"),
                "up",
                "--data",
                str(self.data),
                "--base-port",
                str(self.base_port),
                "--population",
                str(self.population),
                "--today",
                today,
                *(["--database-template", self.database_template] if self.database_template else []),
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
        )
        deadline = time.monotonic() + 240
        desc_path = self.data / "cluster.json"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError((self.data.parent / f"cluster-{today}.log").read_text()[-4000:])
            if desc_path.is_file():
                desc: dict[str, Any] = json.loads(desc_path.read_text())
                if desc.get("supervisor_pid") == self.proc.pid:
                    return desc
            time.sleep(0.3)
        raise AssertionError("cluster did not come up")

    def down(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def drop_databases(admin_url: str, prefix: str) -> list[str]:
    import asyncio

    import asyncpg

    async def drop() -> list[str]:
        conn = await asyncpg.connect(admin_url)
        try:
            names = [
                r["datname"]
                for r in await conn.fetch(
                    "SELECT datname FROM pg_database WHERE starts_with(datname, $1)", prefix
                )
            ]
            for name in names:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
        return names

    return asyncio.run(drop())


def run_cli(data: Path, session: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``mycarenet ARGS --json`` against the cluster of ``data``, with its own session file."""
    env = {**os.environ, "MYCARENET_DATA": str(data), "MYCARENET_SESSION": str(session), "COLUMNS": "200"}
    return subprocess.run(
        [str(BIN / "mycarenet"), *args, "--json"], capture_output=True, env=env, timeout=120, check=False
    )


def cli(data: Path, session: Path, *args: str) -> Any:
    """The JSON answer of a ``mycarenet`` command that must succeed."""
    done = run_cli(data, session, *args)
    assert done.returncode == 0, done.stderr.decode() + done.stdout.decode()
    return json.loads(done.stdout)


def cli_refused(data: Path, session: Path, *args: str) -> str:
    """The error output (status, reason, codes) of a ``mycarenet`` command that must fail."""
    done = run_cli(data, session, *args)
    assert done.returncode == 1, (done.returncode, done.stdout.decode(), done.stderr.decode())
    return " ".join(done.stderr.decode().split())


def wait_for(fn: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.5)
