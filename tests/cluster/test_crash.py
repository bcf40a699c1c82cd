"""The crash test (issue 17): under a bounded notify load, insurer 100 and the hub are SIGKILLed several times
(the sandbox's ChaosService; the supervisor starts them again). Afterwards:

* every acknowledged notify is present once at the insurer;
* every holding change the insurer committed (acknowledged or not: the hub or the call may have died after
  the commit) has its DMG relation move done at eHealth, which follows the insurer's holder-change feed
  and catches up after the kills;
* every closure message of the insurer's outbox is delivered, once, to the hub's mailbox;
* the audit has a row for every acknowledged request, at the hub and at the insurer (the hub is killed
  right after a notify was answered: a row still queued in memory would be lost, as 281 were before).

SQLite only: the back end has no part in killing processes (their database side is tested on both by the
integration tests, e.g. tests/hub/test_cancelled_writes.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
from mycarenet_cluster import population as pop
from mycarenet_sdk import Client, MyCareNetError, admin_from_cluster

from tests.cluster.cluster_support import Cluster, free_base_port, wait_for
from tests.cluster.test_sandbox_chaos import provider_client

TODAY = dt.date(2026, 11, 20)
POPULATION = 40  # 20 patients of insurer 100 besides the demo patient
PATIENTS = 16  # of insurer 100, each taken over four times (gp_a, gp_b, gp_a, gp_b)
KILLS = [(1.5, "oa-100"), (4.5, "hub"), (7.5, "oa-100"), (10.5, "hub")]  # (after seconds, whom)
DOWN = 2.0  # seconds a killed process stays down before the supervisor starts it again
# Answers after which a notify is not tried again: the insurer's own refusals. Anything else (the hub or
# the insurer gone, a deadline) is retried with the same reference, which never applies twice.
FINAL = {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}


def query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return connection.execute(sql, args).fetchall()
    finally:
        connection.close()


async def load(desc: dict[str, Any], data: Path, patients: list[str]) -> dict[str, str]:
    """The notifies of the load, four per patient in turn, while processes are killed; the references that
    were acknowledged, with their patient."""
    demo = desc["demo"]
    gps = [demo["gp_a"], demo["gp_b"]]
    async with admin_from_cluster(desc) as admin:
        for niss in patients:
            for gp in gps:
                await admin.register_relation(gp, niss, start=TODAY - dt.timedelta(days=30), proof="eid")
    acknowledged: dict[str, str] = {}
    answered = asyncio.Event()  # set at each acknowledgement: the hub is killed right after one
    rng = random.Random(17)
    async with provider_client(desc) as client_a, provider_client(desc) as client_b:
        clients = {demo["gp_a"]: client_a, demo["gp_b"]: client_b}
        for gp, client in clients.items():
            await client.login(gp, data / "keys" / f"{gp}.pem")

        async def notify(client: Client, niss: str, day: dt.date, reference: str) -> None:
            deadline = time.monotonic() + 60
            while True:
                try:
                    await client.notify(
                        niss, contact_date=day, nomenclature_code=pop.CONTACT_CODES[0], reference=reference
                    )
                    acknowledged[reference] = niss
                    answered.set()
                    return
                except MyCareNetError as error:
                    if error.status in FINAL or time.monotonic() > deadline:
                        return
                    await asyncio.sleep(0.3)

        async def patient(n: int, niss: str) -> None:
            await asyncio.sleep(rng.uniform(0, 1.5))
            for step in range(4):
                gp = gps[step % 2]
                await notify(clients[gp], niss, TODAY - dt.timedelta(days=3 - step), f"crash-{n}-{step}")
                await asyncio.sleep(rng.uniform(1.5, 3.0))

        async def chaos() -> None:
            started = time.monotonic()
            async with admin_from_cluster(desc) as admin:
                for at, process in KILLS:
                    await asyncio.sleep(max(0.0, started + at - time.monotonic()))
                    if process == "hub":  # right after a notify was answered: its audit row must be there
                        answered.clear()
                        await answered.wait()
                    await admin.process_fault(process, "kill", DOWN)

        await asyncio.gather(chaos(), *(patient(n, niss) for n, niss in enumerate(patients)))
    return acknowledged


def test_sigkills_under_a_notify_load_lose_nothing(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "data", free_base_port(), population=POPULATION)
    try:
        desc = cluster.up(TODAY.isoformat())
        data = cluster.data
        members = pop.build(POPULATION, TODAY).members
        patients = [
            m.niss
            for m in members
            if m.affiliations[-1].insurer == "100" and m.niss != desc["demo"]["patient"]
        ][:PATIENTS]
        assert len(patients) == PATIENTS
        acknowledged = asyncio.run(load(desc, data, patients))
        check(data, acknowledged)
    finally:
        cluster.down()


def check(data: Path, acknowledged: dict[str, str]) -> None:
    oa, hub, ehealth = (data / "db" / f"{name}.db" for name in ("oa-100", "hub", "ehealth"))
    # Most of the load went through (the kills are short): the checks below have something to check.
    assert len(acknowledged) >= PATIENTS * 2, acknowledged

    # Every acknowledged notify is present once.
    stored = Counter(
        reference
        for (reference,) in query(oa, "SELECT requester_reference FROM oa_notification")
        if reference.startswith("crash-")
    )
    assert {r: stored[r] for r in acknowledged} == dict.fromkeys(acknowledged, 1)
    assert max(stored.values()) == 1

    # Every committed holding change has its DMG relation move at eHealth (eHealth catches up).
    def moves_missing() -> list[str]:
        changes = {r for (r,) in query(oa, "SELECT source_reference FROM oa_holder_change")}
        moved = {r for (r,) in query(ehealth, "SELECT source_reference FROM dmg_transfer")}
        return sorted(changes - moved)

    assert wait_for(lambda: not moves_missing(), timeout=60), moves_missing()
    # Each acknowledged notify was a holding change (the two GPs take turns): each is in the feed.
    changes = Counter(niss for (niss,) in query(oa, "SELECT patient_niss FROM oa_holder_change"))
    assert sum(changes[niss] for niss in set(acknowledged.values())) >= len(acknowledged)

    # Every closure of the insurer's outbox is delivered once to the hub's mailbox.
    def undelivered() -> list[str]:
        outbox = {m for (m,) in query(oa, "SELECT message_id FROM oa_outbox")}
        mailbox = Counter(
            m for (m,) in query(hub, "SELECT message_id FROM mailbox_message WHERE insurer_code = '100'")
        )
        assert all(n == 1 for n in mailbox.values())
        return sorted(m for m in outbox if mailbox[m] != 1)

    assert wait_for(lambda: not undelivered(), timeout=60), undelivered()
    assert query(oa, "SELECT count(*) FROM oa_outbox WHERE delivered = 0 OR dead_at IS NOT NULL") == [(0,)]

    # The audit has a row for every acknowledged request, at the hub and at the insurer.
    hub_rows = {
        r
        for (r,) in query(
            hub, "SELECT requester_reference FROM audit WHERE rpc = 'NotifyDmg' AND outcome = 'OK'"
        )
    }
    oa_rows = {
        r
        for (r,) in query(
            oa, "SELECT requester_reference FROM oa_audit WHERE rpc = 'NotifyDmg' AND status_code = 'OK'"
        )
    }
    assert sorted(set(acknowledged) - hub_rows) == []
    assert sorted(set(acknowledged) - oa_rows) == []
    print(  # the figures of the run (pytest -s)
        f"crash test: {len(acknowledged)} notifies acknowledged, {sum(changes.values())} holding changes "
        f"moved at eHealth, {len(query(oa, 'SELECT 1 FROM oa_outbox'))} closures delivered once"
    )
