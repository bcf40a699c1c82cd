"""The real multi-process cluster, started by the README command's entry point, playing the seed story
through the `mycarenet` CLI (issue 6):

GP A holds the DMG; the patient goes to GP B; B consults (sees A, a payment made this year), notifies
(without payment); A finds the closure in its inbox; next year B's first contact is registered and B finds
the prolongation.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent
TODAY = "2026-11-20"
NEXT_YEAR = "2027-01-20"


def _free_base_port() -> int:
    for _ in range(50):
        base = random.randrange(20000, 40000, 20)
        ports = [base, base + 1, *range(base + 10, base + 17)]
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
    def __init__(self, data: Path, base_port: int) -> None:
        self.data, self.base_port = data, base_port
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
                "300",
                "--today",
                today,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
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


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "data", _free_base_port())
    try:
        yield c
    finally:
        c.down()


def cli(data: Path, session: Path, *args: str) -> Any:
    env = {**os.environ, "MYCARENET_DATA": str(data), "MYCARENET_SESSION": str(session), "COLUMNS": "200"}
    done = subprocess.run(
        [str(BIN / "mycarenet"), *args, "--json"], capture_output=True, env=env, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr.decode() + done.stdout.decode()
    return json.loads(done.stdout)


def wait_for(fn: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def test_seed_story_through_the_cli(cluster: Cluster, tmp_path: Path) -> None:
    desc = cluster.up(TODAY)
    assert {p["health"] for p in desc["processes"]} == {"SERVING"}
    assert len(desc["processes"]) == 9
    demo = desc["demo"]
    data, patient, gp_a, gp_b = cluster.data, demo["patient"], demo["gp_a"], demo["gp_b"]
    session_a, session_b = tmp_path / "a.json", tmp_path / "b.json"

    cli(data, session_b, "login", gp_b)
    seen = cli(data, session_b, "consult", patient)
    assert seen["holding"]["holder"]["inami"] == gp_a
    assert seen["payment_made_this_year"] is True

    notified = cli(data, session_b, "notify", patient, "--contact-date", TODAY)
    assert notified["holder"]["inami"] == gp_b
    assert notified["payment"] == "PAYMENT_INDICATOR_WITHOUT_PAYMENT"
    assert notified["end_date"] == {"year": 2028, "month": 12, "day": 31}

    cli(data, session_a, "login", gp_a)

    def closures() -> list[Any]:
        return [
            m
            for m in cli(data, session_a, "inbox")
            if m["kind"] == "MESSAGE_KIND_CLOSURE" and m["closure"]["patient"]["niss"] == patient
        ]

    found = wait_for(closures)
    assert found, "A never received the closure"
    assert found[0]["closure"]["end_date"] == {"year": 2026, "month": 11, "day": 19}
    assert found[0]["closure"]["new_holder"]["inami"] == gp_b

    # Next year: the cluster restarts on the same data, B's first contact of 2027 is registered.
    cluster.down()
    desc = cluster.up(NEXT_YEAR)
    assert desc["today"] == NEXT_YEAR
    effects = cli(
        data,
        session_b,
        "oa",
        "contact",
        patient,
        "--provider",
        gp_b,
        "--contact-date",
        "2027-01-12",
        "--submitted",
        NEXT_YEAR,
    )
    assert effects["effects"]["payments"], effects
    cli(data, session_b, "login", gp_b)

    def extensions() -> list[Any]:
        return [
            m
            for m in cli(data, session_b, "inbox")
            if m["kind"] == "MESSAGE_KIND_EXTENSION" and m["extension"]["patient"]["niss"] == patient
        ]

    found = wait_for(extensions)
    assert found, "B never received the prolongation"
    assert found[0]["extension"]["contact_date"] == {"year": 2027, "month": 1, "day": 12}
    assert found[0]["extension"]["new_end_date"] == {"year": 2029, "month": 12, "day": 31}
    cluster.down()
    assert not (data / "cluster.json").exists()
