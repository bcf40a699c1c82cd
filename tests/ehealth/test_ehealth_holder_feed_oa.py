"""eHealth follows a REAL insurer node's holder-change feed (``oa_node``'s HoldingFeedService): a
notification accepted by the insurer moves the DMG therapeutic relation at eHealth without anyone calling
TransferDmgRelation; a restart of eHealth, then of the insurer, loses nothing and applies nothing twice.
eHealth's database on SQLite and PostgreSQL; the node on a SQLite file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import sqlalchemy as sa

from ehealth.app import EhealthApp
from ehealth.models import DmgTransferRow
from mycarenet_core.channels import open_channel
from mycarenet_core.clock import FixedClock
from mycarenet_core.dates import to_proto
from mycarenet_core.db import create_engine
from mycarenet_core.gen.mycarenet.ehealth.v1 import therapeutic_relation_pb2 as tr
from mycarenet_core.gen.mycarenet.ehealth.v1 import therapeutic_relation_pb2_grpc as tr_grpc
from oa_node.app import OaNodeApp
from tests.oa_node.node_support import (
    GP_A,
    GP_B,
    INSURER,
    PATIENT,
    PATIENT_2,
    TODAY,
    seed,
    start_node,
    stop_node,
)

D = dt.date
NOW = dt.datetime(2024, 3, 15, 10, 0, tzinfo=dt.UTC)


async def dmg_holders(app: EhealthApp, patient: str) -> list[tuple[str, D | None, D | None]]:
    async with open_channel(f"127.0.0.1:{app.port}", identity="admin") as channel:
        listed = await tr_grpc.TherapeuticRelationServiceStub(channel).ListRelations(
            tr.ListRelationsRequest(patient_niss=patient), timeout=10
        )
    out = []
    for r in listed.relations:
        if r.proof == tr.RELATION_PROOF_DMG:
            end = r.period.end
            out.append(
                (
                    r.provider_inami,
                    D(r.period.start.year, r.period.start.month, r.period.start.day),
                    D(end.year, end.month, end.day) if end.year else None,
                )
            )
    return out


async def may_see(app: EhealthApp, provider: str, patient: str, day: D) -> bool:
    async with open_channel(f"127.0.0.1:{app.port}", identity="hub") as channel:
        reply = await tr_grpc.TherapeuticRelationServiceStub(channel).CheckRelation(
            tr.CheckRelationRequest(provider_inami=provider, patient_niss=patient, date=to_proto(day)),
            timeout=10,
        )
    return reply.exists


async def applied_references(database_url: str) -> list[str]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            table = DmgTransferRow.__table__  # type: ignore[attr-defined]
            return sorted((await conn.execute(sa.select(table.c.source_reference))).scalars())
    finally:
        await engine.dispose()


async def test_a_notification_at_the_insurer_moves_the_relation_at_ehealth(
    tmp_path: Path, pg_admin_url: str, database_url: str
) -> None:
    node = await start_node(f"sqlite+aiosqlite:///{tmp_path / 'oa-100.db'}")
    ehealth: EhealthApp | None = None
    try:
        await seed(node)
        target = f"127.0.0.1:{node.app.port}"
        ehealth = await EhealthApp.create(
            database_url=database_url, clock=FixedClock(NOW), oa_targets={INSURER: target}
        )
        await ehealth.start()
        follower = ehealth.followers[INSURER]

        await node.notify(GP_A, PATIENT, reference="n-1")
        await follower.wait_for(1, within=15)
        # The relation ends with the holding: 31 December of the contact year + 2 (issue 14).
        end = dt.date(TODAY.year + 2, 12, 31)
        assert await dmg_holders(ehealth, PATIENT) == [(GP_A, TODAY, end)]
        assert await may_see(ehealth, GP_A, PATIENT, TODAY)
        assert not await may_see(ehealth, GP_B, PATIENT, TODAY)

        # eHealth stops; meanwhile the insurer accepts GP B's notification and another patient's.
        await ehealth.stop(0)
        later = TODAY + dt.timedelta(days=10)
        node.clock.set(NOW + dt.timedelta(days=10))
        await node.notify(GP_B, PATIENT, contact=later, today=later, reference="n-2")
        await node.notify(GP_A, PATIENT_2, contact=later, today=later, reference="n-3")
        ehealth = await EhealthApp.create(
            database_url=database_url, clock=FixedClock(NOW), oa_targets={INSURER: target}
        )
        await ehealth.start()
        follower = ehealth.followers[INSURER]
        await follower.wait_for(3, within=15)
        assert follower.applied == 2  # only what it had missed
        assert await dmg_holders(ehealth, PATIENT) == [
            (GP_A, TODAY, later - dt.timedelta(days=1)),
            (GP_B, later, end),
        ]
        assert await may_see(ehealth, GP_B, PATIENT, later)
        assert not await may_see(ehealth, GP_A, PATIENT, later)
        assert await dmg_holders(ehealth, PATIENT_2) == [(GP_A, later, end)]

        # The insurer restarts on the same port; eHealth reconnects and goes on from where it was.
        port = node.app.port
        await node.app.stop()
        restarted = await OaNodeApp.create(
            insurer_code=INSURER,
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'oa-100.db'}",
            clock=node.clock,
        )
        await restarted.start(f"127.0.0.1:{port}")
        node.app = restarted
        again = later + dt.timedelta(days=5)
        node.clock.set(NOW + dt.timedelta(days=15))
        await node.notify(GP_A, PATIENT, contact=again, today=again, reference="n-4")
        await follower.wait_for(4, within=20)
        assert (await dmg_holders(ehealth, PATIENT))[-1] == (GP_A, again, end)
    finally:
        if ehealth is not None:
            await ehealth.stop(0)
        await stop_node(node)
    references = await applied_references(database_url)
    assert len(references) == 4  # each holder change of the insurer applied once
    assert all(r.startswith(f"{INSURER}:") for r in references)
