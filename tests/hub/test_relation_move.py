"""A DMG relation move that eHealth cannot take at once is kept in the hub DB and pushed when eHealth is
back (the notification itself already succeeded at the OA)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sqlmodel import select

from ehealth.app import EhealthApp
from hub.models import PendingTransfer
from mycarenet_core.dates import to_proto
from mycarenet_core.gen.mycarenet.ehealth.v1 import therapeutic_relation_pb2 as tr
from mycarenet_core.gen.mycarenet.ehealth.v1 import therapeutic_relation_pb2_grpc
from tests.hub.mesh import TODAY, running_mesh


async def test_a_postponed_relation_move_is_retried_until_ehealth_takes_it(tmp_path: Path) -> None:
    async with running_mesh(tmp_path, insurers=("100",)) as mesh:
        assert mesh.hub is not None
        assert mesh.ehealth is not None
        port = mesh.ehealth.port
        patient, gp = mesh.members["p100"].niss, mesh.people["gp_c"].inami
        move = tr.TransferDmgRelationRequest(
            patient_niss=patient,
            new_holder_inami=gp,
            start_date=to_proto(TODAY),
            source_reference="100:late-1",
        )
        await mesh.ehealth.stop(0)
        assert not await mesh.hub.core.transfer_relation(move, 1.0)
        async with mesh.hub.core.sessions() as session:
            assert [
                r.source_reference for r in (await session.execute(select(PendingTransfer))).scalars()
            ] == ["100:late-1"]
        mesh.ehealth = await EhealthApp.create(database_url=mesh.db("ehealth"), clock=mesh.clock)
        await mesh.ehealth.start(f"127.0.0.1:{port}")
        deadline = time.monotonic() + 10
        while True:
            async with mesh.hub.core.sessions() as session:
                if not (await session.execute(select(PendingTransfer))).scalars().all():
                    break
            assert time.monotonic() < deadline, "the move was never pushed"
            await asyncio.sleep(0.1)
        relations = therapeutic_relation_pb2_grpc.TherapeuticRelationServiceStub(mesh.ehealth_admin)
        check = await relations.CheckRelation(
            tr.CheckRelationRequest(provider_inami=gp, patient_niss=patient, date=to_proto(TODAY)), timeout=5
        )
        assert check.exists
        assert check.relation.proof == tr.RELATION_PROOF_DMG
