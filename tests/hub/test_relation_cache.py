"""The therapeutic-relation check answered at the hub from eHealth's relation change log (issue 13): a
relation registered at eHealth reaches the hub's cache within moments and a consult is then two hops; a
revocation refuses the next consult once its change arrived; a hub that lost the stream (or has not caught
up) asks eHealth's CheckRelation and never answers a cached "yes".
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from hub.relations import RelationCheck, RelationFollower, RelationIndex
from hub.upstream import CallPolicy, EhealthClient
from mycarenet_core.clock import FixedClock
from mycarenet_core.dates import to_proto
from mycarenet_core.errors import MeshError
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import (
    cadastre_pb2,
    cadastre_pb2_grpc,
    therapeutic_relation_pb2_grpc,
)
from mycarenet_core.gen.mycarenet.ehealth.v1 import therapeutic_relation_pb2 as tr
from mycarenet_core.identifiers import Profession, make_inami
from mycarenet_core.lifecycle import Backoff
from tests.hub.helpers import consult_request, rejected
from tests.hub.mesh import NOW, TODAY, Mesh, bearer, running_mesh

GP, PATIENT = "10000101004", "80051703367"


def relation(relation_id: str, start: dt.date, end: dt.date | None = None, *, provider: str = GP) -> Any:
    return tr.TherapeuticRelation(
        relation_id=relation_id,
        provider_inami=provider,
        patient_niss=PATIENT,
        proof=tr.RELATION_PROOF_EID_READ,
        period=common_pb2.Period(start=to_proto(start), end=to_proto(end)),
    )


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.02)


# --- the index ----------------------------------------------------------------------------------------


def test_the_index_replaces_a_relation_by_its_id() -> None:
    index = RelationIndex()
    index.put(relation("r1", dt.date(2020, 1, 1)))
    assert index.allows(GP, PATIENT, TODAY)
    assert not index.allows(GP, PATIENT, dt.date(2019, 12, 31))
    assert not index.allows("10000202004", PATIENT, TODAY)
    index.put(relation("r1", dt.date(2020, 1, 1), TODAY - dt.timedelta(days=1)))  # revoked yesterday
    assert not index.allows(GP, PATIENT, TODAY)
    assert index.allows(GP, PATIENT, TODAY - dt.timedelta(days=1))
    index.put(relation("r2", TODAY))  # a second relation of the same pair
    assert index.allows(GP, PATIENT, TODAY)
    index.put(relation("r2", TODAY, provider="10000202004"))  # the same id for another provider: moved
    assert not index.allows(GP, PATIENT, TODAY)
    assert index.allows("10000202004", PATIENT, TODAY)
    index.put(tr.TherapeuticRelation(relation_id="r2", provider_inami=GP, patient_niss=PATIENT))  # no start
    assert not index.allows("10000202004", PATIENT, TODAY)
    assert len(index) == 1
    index.clear()
    assert len(index) == 0


HOUSE = make_inami(Profession.ORGANISATION, 30001, "100")


def organisation(
    validity: tuple[dt.date, dt.date | None], *members: tuple[str, dt.date, dt.date | None]
) -> cadastre_pb2.Organisation:
    return cadastre_pb2.Organisation(
        inami=HOUSE,
        kind=cadastre_pb2.ORGANISATION_KIND_MEDICAL_HOUSE,
        name="Maison médicale",
        validity=common_pb2.Period(start=to_proto(validity[0]), end=to_proto(validity[1])),
        members=[
            cadastre_pb2.OrganisationMember(
                inami=inami, period=common_pb2.Period(start=to_proto(start), end=to_proto(end))
            )
            for inami, start, end in members
        ],
    )


def test_an_organisations_relation_counts_for_its_members_while_both_are_valid() -> None:
    index = RelationIndex()
    index.put(relation("house", dt.date(2020, 1, 1), provider=HOUSE))
    assert not index.allows(GP, PATIENT, TODAY)  # not a member (yet)
    yesterday = TODAY - dt.timedelta(days=1)
    index.put_organisation(organisation((dt.date(2010, 1, 1), None), (GP, dt.date(2024, 1, 1), None)))
    assert index.allows(GP, PATIENT, TODAY)
    assert not index.allows(GP, PATIENT, TODAY, organisations=False)  # the organisations' follower is behind
    assert not index.allows(GP, PATIENT, dt.date(2023, 12, 31))  # before the membership
    index.put_organisation(organisation((dt.date(2010, 1, 1), None), (GP, dt.date(2024, 1, 1), yesterday)))
    assert not index.allows(GP, PATIENT, TODAY)  # the membership ended yesterday
    index.put_organisation(organisation((dt.date(2010, 1, 1), yesterday), (GP, dt.date(2024, 1, 1), None)))
    assert not index.allows(GP, PATIENT, TODAY)  # the organisation ended yesterday
    index.put_organisation(organisation((dt.date(2010, 1, 1), None), ("10000202004", TODAY, None)))
    assert not index.allows(GP, PATIENT, TODAY)  # no longer a member at all
    assert index.allows("10000202004", PATIENT, TODAY)
    index.clear_organisations()
    assert not index.allows("10000202004", PATIENT, TODAY)


# --- a stand-in eHealth ----------------------------------------------------------------------------------


class StandIn(therapeutic_relation_pb2_grpc.TherapeuticRelationServiceServicer):
    """eHealth's register with one relation in its log, a watch that the test can break, and a
    CheckRelation that always says no (so that an answer from eHealth is told apart from the cache's)."""

    def __init__(self) -> None:
        self.log = [tr.RelationChange(sequence=1, relation=relation("r1", dt.date(2020, 1, 1)))]
        self.break_watch = asyncio.Event()
        self.checks = 0
        self.lists = 0

    async def ListRelationChanges(self, request: Any, context: Any) -> tr.ListRelationChangesResponse:
        self.lists += 1
        return tr.ListRelationChangesResponse(
            changes=[c for c in self.log if c.sequence > request.after_sequence],
            head_sequence=self.log[-1].sequence,
        )

    async def WatchRelationChanges(self, request: Any, context: Any) -> AsyncIterator[Any]:
        await self.break_watch.wait()
        self.break_watch.clear()
        await context.abort(grpc.StatusCode.UNAVAILABLE, "watch lost")
        yield tr.WatchRelationChangesResponse()  # never reached

    async def CheckRelation(self, request: Any, context: Any) -> tr.CheckRelationResponse:
        self.checks += 1
        return tr.CheckRelationResponse(exists=False)


@pytest.fixture
async def stand_in() -> AsyncIterator[tuple[StandIn, grpc.aio.Server, int]]:
    servicer = StandIn()
    server = grpc.aio.server()
    therapeutic_relation_pb2_grpc.add_TherapeuticRelationServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, server, port
    finally:
        await server.stop(0)


async def test_with_its_stream_lost_the_hub_asks_ehealth_and_never_answers_a_cached_yes(
    stand_in: tuple[StandIn, grpc.aio.Server, int],
) -> None:
    servicer, server, port = stand_in
    ehealth = EhealthClient(f"127.0.0.1:{port}", CallPolicy(default_deadline=1.0))
    # Reconnects after 0.5-1 s: long enough to see the hub between the lost stream and the next one.
    follower = RelationFollower(ehealth, RelationIndex(), backoff=Backoff(1.0, 1.0))
    check = RelationCheck(follower, ehealth, FixedClock(NOW))
    task = asyncio.create_task(follower.run())
    try:
        await follower.wait_for(1, 5)
        await check.require(GP, PATIENT, 1.0)  # from the cache: eHealth is not asked
        assert (check.answered_here, check.asked_ehealth, servicer.checks) == (1, 0, 0)

        servicer.break_watch.set()  # the stream is lost: the relation is still in the index ...
        await eventually(lambda: not follower.following)
        assert follower.index.allows(GP, PATIENT, TODAY)
        with pytest.raises(MeshError) as refused:  # ... but eHealth is asked, and its "no" is the answer
            await check.require(GP, PATIENT, 1.0)
        assert (refused.value.status, refused.value.code) == (grpc.StatusCode.PERMISSION_DENIED, 140)
        assert servicer.checks == 1

        await follower.wait_for(1, 5)  # reconnected: caught up again, following again
        assert servicer.lists >= 2
        await check.require(GP, PATIENT, 1.0)
        assert servicer.checks == 1

        task.cancel()  # eHealth gone altogether (and the follower with it): UNAVAILABLE, not a cached yes
        await asyncio.gather(task, return_exceptions=True)
        await server.stop(0)
        assert not follower.following
        with pytest.raises(MeshError) as down:
            await check.require(GP, PATIENT, 1.0)
        assert (down.value.status, down.value.reason) == (grpc.StatusCode.UNAVAILABLE, "EHEALTH_UNAVAILABLE")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ehealth.close()


async def test_a_register_reset_at_ehealth_empties_the_cache(
    stand_in: tuple[StandIn, grpc.aio.Server, int],
) -> None:
    port = stand_in[2]
    ehealth = EhealthClient(f"127.0.0.1:{port}", CallPolicy(default_deadline=1.0))
    follower = RelationFollower(ehealth, RelationIndex())
    follower.sequence = 7  # applied further than eHealth's log now goes: its register was reset
    follower.index.put(relation("gone", dt.date(2020, 1, 1), provider="10000202004"))
    task = asyncio.create_task(follower.run())
    try:
        await follower.wait_for(1, 5)
        assert follower.sequence == 1
        assert not follower.index.allows("10000202004", PATIENT, TODAY)
        assert follower.index.allows(GP, PATIENT, TODAY)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ehealth.close()


# --- the real eHealth --------------------------------------------------------------------------------


async def consult(mesh: Mesh, token: str, niss: str) -> Any:
    return await mesh.dmg.ConsultDmg(consult_request(niss), metadata=bearer(token), timeout=5)


async def test_relations_registered_and_revoked_at_ehealth_reach_the_hub_and_a_consult_is_two_hops(
    tmp_path: Path,
) -> None:
    async with running_mesh(tmp_path, insurers=("100",), relations_for=("gp_a",)) as mesh:
        assert mesh.hub is not None
        check = mesh.hub.core.relations
        gp_b, patient = mesh.people["gp_b"], mesh.members["p100"]
        token = await mesh.login(gp_b)
        relations = therapeutic_relation_pb2_grpc.TherapeuticRelationServiceStub(mesh.ehealth_admin)

        # Registered at eHealth: in the hub's cache within moments, without any call of the hub's.
        registered = await relations.RegisterRelation(
            tr.RegisterRelationRequest(
                provider_inami=gp_b.inami,
                patient_niss=patient.niss,
                proof=tr.RELATION_PROOF_EID_READ,
                start_date=to_proto(dt.date(2024, 1, 1)),
            ),
            timeout=5,
        )
        await eventually(lambda: check.follower.index.allows(gp_b.inami, patient.niss, TODAY), 2.0)
        asked = check.asked_ehealth
        for _ in range(3):
            assert (await consult(mesh, token, patient.niss)).insurer_code == "100"
        assert check.asked_ehealth == asked  # two hops: hub -> OA

        # Revoked (its last day yesterday): once the change arrived, the next consult is refused.
        await relations.RevokeRelation(
            tr.RevokeRelationRequest(
                relation_id=registered.relation.relation_id, end_date=to_proto(TODAY - dt.timedelta(days=1))
            ),
            timeout=5,
        )
        await eventually(lambda: not check.follower.index.allows(gp_b.inami, patient.niss, TODAY), 2.0)
        error = await rejected(consult(mesh, token, patient.niss))
        assert (error.status, error.reason, error.code) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "NO_THERAPEUTIC_RELATION",
            140,
        )


async def test_with_ehealth_stopped_a_consult_is_unavailable_not_a_cached_yes_and_the_cache_comes_back(
    tmp_path: Path,
) -> None:
    async with running_mesh(tmp_path, insurers=("100",), relations_for=("gp_a",)) as mesh:
        assert mesh.hub is not None
        assert mesh.ehealth is not None
        follower = mesh.hub.relations
        gp_a, patient = mesh.people["gp_a"], mesh.members["p100"]
        token = await mesh.login(gp_a)
        await consult(mesh, token, patient.niss)  # the session is verified (and kept) while eHealth is up
        assert follower.index.allows(gp_a.inami, patient.niss, TODAY)

        port = mesh.ehealth.port
        await mesh.ehealth.stop(0)
        await eventually(lambda: not follower.following)
        assert follower.index.allows(gp_a.inami, patient.niss, TODAY)  # still there, but not used
        error = await rejected(consult(mesh, token, patient.niss))
        assert (error.status, error.reason) == (grpc.StatusCode.UNAVAILABLE, "EHEALTH_UNAVAILABLE")

        await mesh.start_ehealth(port)
        await eventually(lambda: follower.following, 10)
        asked = mesh.hub.core.relations.asked_ehealth
        assert (await consult(mesh, token, patient.niss)).insurer_code == "100"
        assert mesh.hub.core.relations.asked_ehealth == asked


async def test_a_member_of_a_medical_house_holding_the_relation_is_answered_from_the_cache(
    tmp_path: Path,
) -> None:
    async with running_mesh(tmp_path, insurers=("100",), relations_for=()) as mesh:
        assert mesh.hub is not None
        check = mesh.hub.core.relations
        gp_c, patient = mesh.people["gp_c"], mesh.members["p100"]
        cadastre = cadastre_pb2_grpc.CadastreServiceStub(mesh.ehealth_admin)
        house = organisation((dt.date(2010, 1, 1), None), (gp_c.inami, dt.date(2024, 1, 1), None))
        written = await cadastre.UpsertOrganisation(
            cadastre_pb2.UpsertOrganisationRequest(organisation=house), timeout=5
        )
        await mesh.hub.organisations.wait_for(written.change_sequence, 5)
        relations = therapeutic_relation_pb2_grpc.TherapeuticRelationServiceStub(mesh.ehealth_admin)
        await relations.RegisterRelation(
            tr.RegisterRelationRequest(
                provider_inami=HOUSE,
                patient_niss=patient.niss,
                proof=tr.RELATION_PROOF_PATIENT_DECLARATION,
                start_date=to_proto(dt.date(2024, 1, 1)),
            ),
            timeout=5,
        )
        await mesh.hub_has_relations()
        token = await mesh.login(gp_c)
        asked = check.asked_ehealth
        assert (await consult(mesh, token, patient.niss)).insurer_code == "100"
        assert check.asked_ehealth == asked

        # The membership ends yesterday: the cache no longer says yes, and eHealth says no.
        house = organisation(
            (dt.date(2010, 1, 1), None), (gp_c.inami, dt.date(2024, 1, 1), TODAY - dt.timedelta(days=1))
        )
        written = await cadastre.UpsertOrganisation(
            cadastre_pb2.UpsertOrganisationRequest(organisation=house), timeout=5
        )
        await mesh.hub.organisations.wait_for(written.change_sequence, 5)
        error = await rejected(consult(mesh, token, patient.niss))
        assert (error.reason, error.code) == ("NO_THERAPEUTIC_RELATION", 140)
        assert check.asked_ehealth == asked + 1
