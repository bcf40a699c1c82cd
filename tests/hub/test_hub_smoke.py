"""Smoke: a consult through the real mesh."""

from __future__ import annotations

from pathlib import Path

from mycarenet_core.dates import to_proto
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_service_pb2 as pub
from tests.hub.mesh import TODAY, bearer, running_mesh


async def test_consult(tmp_path: Path) -> None:
    async with running_mesh(tmp_path, insurers=("100", "200")) as mesh:
        token = await mesh.login(mesh.people["gp_a"])
        answer = await mesh.dmg.ConsultDmg(
            pub.ConsultDmgRequest(
                requester_reference="c1",
                patient=common_pb2.PatientSelector(niss=mesh.members["p100"].niss),
                request_date=to_proto(TODAY),
            ),
            metadata=bearer(token),
            timeout=5,
        )
        assert answer.insurer_code == "100"
