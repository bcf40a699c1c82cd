"""The DMG therapeutic relation moves through ONE durable channel: the insurer writes the holder change in the
transaction of the holding, and eHealth follows its holder-change feed. The hub has no part in it: a notify
through the hub moves the relation, and so does one the insurer committed while the hub was gone (it died
right after; its answer never left)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

from mycarenet_core.dates import to_proto
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import therapeutic_relation_pb2 as tr
from mycarenet_core.gen.mycarenet.ehealth.v1 import therapeutic_relation_pb2_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import context_pb2, oa_dmg_service_pb2_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import oa_dmg_service_pb2 as oa_pb
from tests.hub.helpers import notify_request
from tests.hub.mesh import TODAY, Mesh, Person, bearer, running_mesh

Span = tuple[dt.date, dt.date | None]


def _date(value: common_pb2.Date) -> dt.date | None:
    return dt.date(value.year, value.month, value.day) if value.year else None


async def dmg_relations(mesh: Mesh, person: Person, niss: str) -> list[Span]:
    """The DMG relations eHealth has for this provider and patient, as (start, end)."""
    stub = therapeutic_relation_pb2_grpc.TherapeuticRelationServiceStub(mesh.ehealth_admin)
    answer = await stub.ListRelations(
        tr.ListRelationsRequest(provider_inami=person.inami, patient_niss=niss), timeout=5
    )
    spans: list[Span] = []
    for relation in answer.relations:
        if relation.proof == tr.RELATION_PROOF_DMG:
            start = _date(relation.period.start)
            assert start is not None
            spans.append((start, _date(relation.period.end)))
    return spans


async def until_moved(mesh: Mesh, person: Person, niss: str, start: dt.date, within: float = 10) -> Span:
    """Wait until eHealth has this provider's DMG relation from ``start``; return it."""
    deadline = time.monotonic() + within
    while True:
        found = [s for s in await dmg_relations(mesh, person, niss) if s[0] == start]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no DMG relation of {person.name} from {start} at eHealth"
        await asyncio.sleep(0.1)


async def test_a_notify_through_the_hub_moves_the_dmg_relation_through_the_insurers_feed(
    tmp_path: Path,
) -> None:
    async with running_mesh(tmp_path, insurers=("100",), relations_for=("gp_a", "gp_b")) as mesh:
        gp_a, gp_b, niss = mesh.people["gp_a"], mesh.people["gp_b"], mesh.members["p100"].niss
        earlier = TODAY - dt.timedelta(days=5)
        answer = await mesh.dmg.NotifyDmg(
            notify_request(niss, "move-a", on=earlier), metadata=bearer(await mesh.login(gp_a)), timeout=10
        )
        assert answer.holder.inami == gp_a.inami
        assert list(answer.acknowledgement.items) == []  # nothing is left pending anywhere
        first = await until_moved(mesh, gp_a, niss, earlier)
        assert first[1] is None or first[1] >= TODAY

        await mesh.dmg.NotifyDmg(
            notify_request(niss, "move-b"), metadata=bearer(await mesh.login(gp_b)), timeout=10
        )
        await until_moved(mesh, gp_b, niss, TODAY)
        # ... and the previous holder's DMG relation ends the day before.
        assert await dmg_relations(mesh, gp_a, niss) == [(earlier, TODAY - dt.timedelta(days=1))]


async def test_a_notify_the_insurer_committed_after_the_hub_died_moves_the_relation_all_the_same(
    tmp_path: Path,
) -> None:
    async with running_mesh(tmp_path, insurers=("100",), relations_for=("gp_b",)) as mesh:
        assert mesh.hub is not None
        gp_b, niss = mesh.people["gp_b"], mesh.members["p100"].niss
        await mesh.hub.stop(0)  # the hub is gone; what it had sent the insurer was committed there
        stub = oa_dmg_service_pb2_grpc.OaDmgServiceStub(mesh.channel(mesh.oa_ports["100"], "hub"))
        committed = await stub.NotifyDmg(
            oa_pb.NotifyDmgRequest(
                context=context_pb2.RequestContext(
                    requester_inami=gp_b.inami,
                    requester_role=gp_b.role,
                    executor_id=gp_b.inami,
                    executor_kind="SUBJECT_KIND_PROVIDER",
                    requester_reference="hub-died",
                    processing_date=to_proto(TODAY),
                ),
                patient=common_pb2.PatientSelector(niss=niss),
                contact_date=to_proto(TODAY),
                nomenclature_code="101010",
            ),
            timeout=10,
        )
        assert committed.holder.inami == gp_b.inami
        await until_moved(mesh, gp_b, niss, TODAY)
