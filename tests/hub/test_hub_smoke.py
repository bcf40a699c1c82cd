"""Smoke: a consult through the real mesh; a request with several bad fields gets every violation at once,
before anything is looked up; the audit rows of the last calls are written by a clean stop."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import grpc
from sqlalchemy import select

from hub.audit import AUDIT
from mycarenet_core.dates import to_proto
from mycarenet_core.db import create_engine
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_service_pb2 as pub
from mycarenet_core.gen.mycarenet.dmg.v1 import mailbox_service_pb2 as mbx
from tests.hub.helpers import rejected
from tests.hub.mesh import FAST, TODAY, bearer, running_mesh


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


async def test_every_violation_at_once_and_the_audit_written_by_a_clean_stop(tmp_path: Path) -> None:
    # Each call answers once its audit row is committed (issue 17), whatever the tuning says.
    async with running_mesh(tmp_path, insurers=("100",), tuning=replace(FAST, audit_seconds=60)) as mesh:
        assert mesh.hub is not None
        token = await mesh.login(mesh.people["gp_b"])
        niss = mesh.members["p100"].niss
        bad_check_digit = niss[:-1] + str((int(niss[-1]) + 1) % 10)
        error = await rejected(
            mesh.dmg.NotifyDmg(
                pub.NotifyDmgRequest(
                    requester_reference="x" * 201,
                    requester_inami=mesh.people["gp_a"].inami,
                    patient=common_pb2.PatientSelector(niss=bad_check_digit),
                    contact_date=common_pb2.Date(year=2025, month=2, day=30),
                ),
                metadata=bearer(token),
                timeout=5,
            )
        )
        assert error.status is grpc.StatusCode.INVALID_ARGUMENT
        assert sorted((v.field, v.code) for v in error.violations) == [
            ("contact_date", 113),
            ("patient.niss", 112),
            ("requester_inami", 156),
            ("requester_reference", 111),
        ]
        error = await rejected(
            mesh.mailbox.GetMessages(
                mbx.GetMessagesRequest(page_size=-1, page_token="m12", kinds=[1] * 17),
                metadata=bearer(token),
                timeout=5,
            )
        )
        assert sorted((v.field, v.code) for v in error.violations) == [
            ("kinds", 130),
            ("page_size", 130),
            ("page_token", 111),
        ]
        assert mesh.hub.core.audit.queued == 0  # each call answered once its row was committed
        await mesh.hub.stop(0)
        engine = create_engine(mesh.db("hub"))
        try:
            async with engine.connect() as connection:
                rows = (
                    await connection.execute(
                        select(AUDIT.c.rpc, AUDIT.c.outcome, AUDIT.c.codes).order_by(AUDIT.c.id)
                    )
                ).all()
        finally:
            await engine.dispose()
        assert [tuple(r) for r in rows][-2:] == [
            ("NotifyDmg", "INVALID_ARGUMENT", "111,156,113,112"),
            ("GetMessages", "INVALID_ARGUMENT", "130,111"),
        ]
