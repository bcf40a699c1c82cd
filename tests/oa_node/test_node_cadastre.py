"""The insurer follows eHealth's cadastre (the authentic source): a provider registered only there becomes
known to the node, later changes arrive live, the position survives restarts (each change applied exactly
once), the follower reconnects when eHealth comes back, and what the cadastre says (supervisor, validity,
organisations) is what the node enforces. eHealth is a stand-in here (tests/oa_node/cadastre_support.py);
test_node_cadastre_ehealth.py runs the same against the real eHealth."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
from cadastre_support import FakeCadastre, FakeEhealth, period
from node_support import (
    BANK,
    INSURER,
    PATIENT,
    TODAY,
    Node,
    by_niss,
    context,
    d,
    member,
    provider,
    rpc_error,
    snapshot,
    start_node,
    stop_node,
)
from sqlalchemy import func, select

from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import cadastre_pb2 as cad_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import membership_service_pb2 as ms_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import oa_dmg_service_pb2 as oa_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import reference_data_service_pb2 as rd_pb2
from mycarenet_core.identifiers import Profession, make_inami
from oa_node import models as m
from oa_node.cadastre import AUDIT_RPC, apply_changes, translate

NEW_GP = make_inami(Profession.PHYSICIAN, 10201, "003")
NEW_GP_2 = make_inami(Profession.PHYSICIAN, 10202, "004")
NEW_TRAINEE = make_inami(Profession.PHYSICIAN, 10203, "005")
GROUP = make_inami(Profession.ORGANISATION, 20201, "200")
HOUSE = make_inami(Profession.ORGANISATION, 20202, "100")


@pytest.fixture
async def ehealth() -> AsyncIterator[FakeEhealth]:
    fake = FakeEhealth(FakeCadastre())
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{check.__name__} still false after {within} s")
        await asyncio.sleep(0.02)


async def position(node: Node) -> rd_pb2.GetCadastrePositionResponse:
    reply: rd_pb2.GetCadastrePositionResponse = await node.reference.GetCadastrePosition(
        rd_pb2.GetCadastrePositionRequest(), timeout=10
    )
    return reply


async def following(node: Node, sequence: int) -> None:
    async def there() -> bool:
        now = await position(node)
        return now.following and now.applied_sequence >= sequence

    await eventually(there)


async def known(node: Node, inami: str) -> m.KnownProvider | None:
    async with node.app.sessions() as session:
        return await session.get(m.KnownProvider, inami)


async def audit_rows(node: Node) -> list[m.AuditRecord]:
    async with node.app.sessions() as session:
        stmt = select(m.AuditRecord).where(m.AuditRecord.rpc == AUDIT_RPC).order_by(m.AuditRecord.id)  # type: ignore[arg-type]
        return list((await session.execute(stmt)).scalars())


async def enrol(node: Node, inami: str) -> oa_pb2.EnrolDmgResponse:
    reply: oa_pb2.EnrolDmgResponse = await node.dmg.EnrolDmg(
        oa_pb2.EnrolDmgRequest(context=context(inami), bank_account=BANK, start_date=d(dt.date(2010, 1, 1))),
        timeout=10,
    )
    return reply


async def test_without_ehealth_the_node_has_applied_nothing_and_follows_nothing(
    pg_admin_url: str, database_url: str
) -> None:
    node = await start_node(database_url)
    try:
        now = await position(node)
        assert (now.applied_sequence, now.following) == (0, False)
        assert node.app.cadastre is None
    finally:
        await stop_node(node)


async def test_a_provider_registered_only_in_the_cadastre_enrols_and_later_changes_arrive_live(
    pg_admin_url: str, database_url: str, ehealth: FakeEhealth
) -> None:
    cadastre = ehealth.cadastre
    await cadastre.provider(NEW_GP, "Nora", "Janssens")
    node = await start_node(database_url, ehealth=ehealth.target)
    try:
        await following(node, 1)
        reply = await enrol(node, NEW_GP)  # the back office never wrote it: before the follower, 141
        assert reply.insurer_code == INSURER
        row = await known(node, NEW_GP)
        assert row is not None
        assert (row.first_name, row.last_name, row.supervisor_inami) == ("Nora", "Janssens", None)
        assert row.role == common_pb2.PROVIDER_ROLE_GENERAL_PRACTITIONER  # from the INAMI competence 003

        # Live, while the watch is open: a trainee under NEW_GP, a renamed GP, a group practice.
        await cadastre.provider(NEW_TRAINEE, "Tom", "Stagiair", supervisor=NEW_GP)
        await cadastre.provider(NEW_GP, "Nora", "Janssens-Peeters")
        last = await cadastre.organisation(
            GROUP,
            cad_pb2.ORGANISATION_KIND_GROUP_PRACTICE,
            "Groep Zuid",
            [(NEW_GP, dt.date(2020, 1, 1), None)],
        )
        await following(node, last)
        trainee = await known(node, NEW_TRAINEE)
        assert trainee is not None
        assert trainee.supervisor_inami == NEW_GP
        renamed = await known(node, NEW_GP)
        assert renamed is not None
        assert renamed.last_name == "Janssens-Peeters"
        async with node.app.sessions() as session:
            group = await session.get(m.Organisation, GROUP)
            members = (await session.execute(select(m.OrganisationMember))).scalars().all()
        assert group is not None
        assert (group.name, group.role) == ("Groep Zuid", common_pb2.PROVIDER_ROLE_GROUP_PRACTICE)
        assert [(x.organisation_inami, x.member_inami, x.start) for x in members] == [
            (GROUP, NEW_GP, dt.date(2020, 1, 1))
        ]

        # What the cadastre says is what the node enforces: the trainee notifies under NEW_GP.
        await node.members.UpsertMembers(
            ms_pb2.UpsertMembersRequest(members=[member(PATIENT, start=dt.date(2000, 1, 1))]), timeout=10
        )
        done = await node.notify(NEW_TRAINEE, supervisor=NEW_GP, reference="cad-1")
        assert done.holder.inami == NEW_GP

        # The feed was read once from the start, then watched from where the catch-up ended, as oa-100.
        assert cadastre.list_requests[0] == 0
        assert cadastre.watch_requests == [1]
        assert cadastre.peers == {"oa-100"}
    finally:
        await stop_node(node)


async def test_a_restart_resumes_from_the_stored_position_and_applies_nothing_twice(
    pg_admin_url: str, database_url: str, ehealth: FakeEhealth
) -> None:
    cadastre = ehealth.cadastre
    for inami in (NEW_GP, NEW_GP_2):
        await cadastre.provider(inami, "From", "Cadastre")
    node = await start_node(database_url, ehealth=ehealth.target)
    try:
        await following(node, 2)
        # The back office corrects GP 2 locally; were the cadastre's change 2 applied again, it would undo it.
        await node.reference.UpsertProviders(
            rd_pb2.UpsertProvidersRequest(providers=[provider(NEW_GP_2)]), timeout=10
        )
        started = time.monotonic()
    finally:
        await stop_node(node)  # with the watch open
    assert time.monotonic() - started < 3  # the follower stops at once

    last = await cadastre.provider(NEW_TRAINEE, "While", "Down", supervisor=NEW_GP)
    cadastre.replay_everything = True  # and eHealth now replays its whole log, whatever it is asked
    again = await start_node(database_url, ehealth=ehealth.target, clock=node.clock)
    try:
        await following(again, last)
        assert cadastre.list_requests[-1] == 2  # asked from the stored position
        assert again.app.cadastre is not None
        assert again.app.cadastre.applied == 1
        corrected = await known(again, NEW_GP_2)
        assert corrected is not None
        assert corrected.last_name == NEW_GP_2[-6:]
        trainee = await known(again, NEW_TRAINEE)
        assert trainee is not None
        assert trainee.last_name == "Down"
        rows = await audit_rows(again)
        assert [r.incidents.split(":")[0] for r in rows] == ["cadastre #1..#2", "cadastre #3..#3"]
        # Live replays of old changes are ignored too.
        extra = await cadastre.provider(NEW_GP, "Late", "Rename")
        await following(again, extra)
        assert again.app.cadastre.applied == 2
        renamed = await known(again, NEW_GP)
        assert renamed is not None
        assert renamed.last_name == "Rename"
    finally:
        await stop_node(again)


async def test_a_source_replaying_its_whole_log_does_not_trap_the_catch_up(
    pg_admin_url: str, database_url: str, ehealth: FakeEhealth
) -> None:
    """Asked for the changes after #600, a broken source answers the first page of its log again: the
    catch-up stops asking (no progress) and the watch brings the new change."""
    cadastre = ehealth.cadastre
    for index in range(600):
        await cadastre.provider(make_inami(Profession.PHYSICIAN, 30000 + index, "003"))
    node = await start_node(database_url, ehealth=ehealth.target)
    try:
        await following(node, 600)
    finally:
        await stop_node(node)
    cadastre.replay_everything = True
    last = await cadastre.provider(NEW_GP)
    again = await start_node(database_url, ehealth=ehealth.target, clock=node.clock)
    try:
        await following(again, last)
        assert cadastre.list_requests[-1] == 600
        assert await known(again, NEW_GP) is not None
        assert again.app.cadastre is not None
        assert again.app.cadastre.applied == 1
    finally:
        await stop_node(again)


async def test_the_follower_reconnects_when_ehealth_comes_back(
    pg_admin_url: str, database_url: str, ehealth: FakeEhealth
) -> None:
    cadastre = ehealth.cadastre
    await cadastre.provider(NEW_GP)
    node = await start_node(database_url, ehealth=ehealth.target)
    try:
        await following(node, 1)
        await ehealth.stop()

        async def not_following() -> bool:
            return not (await position(node)).following

        await eventually(not_following)
        assert (await position(node)).applied_sequence == 1
        last = await cadastre.provider(NEW_GP_2)  # registered while the node cannot see eHealth
        await ehealth.start()  # same port
        await following(node, last)
        assert await known(node, NEW_GP_2) is not None
        assert node.app.cadastre is not None
        assert node.app.cadastre.failures >= 1
    finally:
        await stop_node(node)


async def test_a_large_backlog_is_caught_up_in_pages_and_a_live_burst_in_few_transactions(
    pg_admin_url: str, database_url: str, ehealth: FakeEhealth
) -> None:
    cadastre = ehealth.cadastre
    for index in range(1200):
        await cadastre.provider(make_inami(Profession.PHYSICIAN, 30000 + index, "003"))
    node = await start_node(database_url, ehealth=ehealth.target)
    try:
        await following(node, 1200)
        assert cadastre.list_requests == [0, 500, 1000]  # three pages of 500
        assert len(await audit_rows(node)) == 3  # one transaction per page
        for index in range(600):
            await cadastre.provider(make_inami(Profession.PHYSICIAN, 40000 + index, "004"))
        await following(node, 1800)
        async with node.app.sessions() as session:
            count = (await session.execute(select(func.count()).select_from(m.KnownProvider))).scalar_one()
        assert count == 1800
        live = len(await audit_rows(node)) - 3
        assert 1 <= live < 100  # bursts, not one transaction per change
    finally:
        await stop_node(node)


async def test_an_entry_the_node_cannot_use_is_skipped_with_an_incident_and_the_feed_goes_on(
    pg_admin_url: str, database_url: str, ehealth: FakeEhealth
) -> None:
    cadastre = ehealth.cadastre
    await cadastre.provider("12345678901")  # bad check digits
    await cadastre.organisation(HOUSE, cad_pb2.ORGANISATION_KIND_GROUP_PRACTICE, "Says group, is house", [])
    await cadastre.raw(cad_pb2.CadastreChange())  # neither a provider nor an organisation
    last = await cadastre.provider(NEW_GP)
    node = await start_node(database_url, ehealth=ehealth.target)
    try:
        await following(node, last)
        assert await known(node, NEW_GP) is not None
        assert await known(node, "12345678901") is None
        async with node.app.sessions() as session:
            assert await session.get(m.Organisation, HOUSE) is None
        (row,) = await audit_rows(node)
        assert row.outcome == "APPLIED_WITH_SKIPS"
        assert "#1 provider '12345678901'" in row.incidents
        assert "#2 organisation" in row.incidents
        assert "kind contradicts" in row.incidents
        assert "#3 a change with neither" in row.incidents
    finally:
        await stop_node(node)


async def test_the_validity_the_cadastre_records_bounds_what_a_provider_may_do(
    pg_admin_url: str, database_url: str, ehealth: FakeEhealth
) -> None:
    cadastre = ehealth.cadastre
    ended = make_inami(Profession.PHYSICIAN, 10211, "003")
    future = make_inami(Profession.PHYSICIAN, 10212, "003")
    await cadastre.provider(NEW_GP, validity=period(dt.date(2000, 1, 1), TODAY))  # valid until today
    await cadastre.provider(ended, validity=period(dt.date(2000, 1, 1), TODAY - dt.timedelta(days=1)))
    last = await cadastre.provider(future, validity=period(TODAY + dt.timedelta(days=1)))
    node = await start_node(database_url, ehealth=ehealth.target)
    try:
        await following(node, last)
        await node.members.UpsertMembers(
            ms_pb2.UpsertMembersRequest(members=[member(PATIENT, start=dt.date(2000, 1, 1))]), timeout=10
        )
        consult = oa_pb2.ConsultDmgRequest(patient=by_niss(PATIENT), request_date=d(TODAY))
        consult.context.CopyFrom(context(NEW_GP))
        await node.dmg.ConsultDmg(consult, timeout=10)
        before = await snapshot(node.app)
        for inami in (ended, future):
            consult.context.CopyFrom(context(inami))
            error = await rpc_error(node.dmg.ConsultDmg(consult, timeout=10))
            assert error.status == grpc.StatusCode.INVALID_ARGUMENT
            assert [(v.field, v.code) for v in error.violations] == [("context.requester_inami", 140)]
            assert "cadastre" in error.violations[0].description
            error = await rpc_error(enrol(node, inami))
            assert [v.code for v in error.violations] == [140]
        assert await snapshot(node.app) == before
    finally:
        await stop_node(node)


async def test_two_appliers_given_the_same_changes_apply_each_once(
    pg_admin_url: str, database_url: str
) -> None:
    """The position row is claimed first: concurrent appliers (or a replay) never apply a change twice."""
    node = await start_node(database_url)
    try:
        changes = [
            cad_pb2.CadastreChange(
                sequence=index + 1,
                provider=cad_pb2.CadastreProvider(
                    inami=make_inami(Profession.PHYSICIAN, 50000 + index, "003"), last_name=f"P{index}"
                ),
            )
            for index in range(50)
        ]
        now = node.clock.now()
        results = await asyncio.gather(*(apply_changes(node.app.sessions, changes, now) for _ in range(3)))
        assert sorted(applied for _, applied in results) == [0, 0, 50]
        assert {last for last, _ in results} == {50}
        assert len(await audit_rows(node)) == 1
        assert (await position(node)).applied_sequence == 50
    finally:
        await stop_node(node)


# --- from changes to reference data (pure) -------------------------------------------------------------


def test_translate_takes_the_role_from_the_number_and_keeps_the_last_change_of_an_entry() -> None:
    changes = [
        cad_pb2.CadastreChange(
            sequence=1,
            provider=cad_pb2.CadastreProvider(inami=NEW_TRAINEE, last_name="Old", supervisor_inami=NEW_GP),
        ),
        cad_pb2.CadastreChange(
            sequence=2,
            provider=cad_pb2.CadastreProvider(
                inami=NEW_TRAINEE,
                last_name="New",
                role=common_pb2.PROVIDER_ROLE_GENERAL_PRACTITIONER,  # read-only in the cadastre: ignored
                supervisor_inami=NEW_GP_2,
                validity=period(dt.date(2023, 1, 1), dt.date(2025, 12, 31)),
            ),
        ),
        cad_pb2.CadastreChange(
            sequence=3,
            organisation=cad_pb2.Organisation(
                inami=HOUSE,
                kind=cad_pb2.ORGANISATION_KIND_MEDICAL_HOUSE,
                name="MM",
                members=[
                    cad_pb2.OrganisationMember(inami=NEW_GP, period=period(dt.date(2021, 1, 1))),
                    cad_pb2.OrganisationMember(inami=NEW_GP_2, period=period(None)),  # no start: dropped
                    cad_pb2.OrganisationMember(inami="1", period=period(dt.date(2021, 1, 1))),  # bad number
                ],
            ),
        ),
        cad_pb2.CadastreChange(
            sequence=4,
            provider=cad_pb2.CadastreProvider(inami=GROUP),  # an organisation's number
        ),
    ]
    found = translate(changes)
    trainee = found.providers[NEW_TRAINEE]
    assert (trainee.last_name, trainee.supervisor_inami) == ("New", NEW_GP_2)
    assert trainee.role == common_pb2.PROVIDER_ROLE_GP_IN_TRAINING
    assert (trainee.valid_from, trainee.valid_until) == (dt.date(2023, 1, 1), dt.date(2025, 12, 31))
    house = found.organisations[HOUSE]
    assert house.members == ((NEW_GP, dt.date(2021, 1, 1), None),)
    assert set(found.providers) == {NEW_TRAINEE}
    assert len(found.skipped) == 3
    assert found.skipped[0].startswith("#3 organisation")
    assert "without a start" in found.skipped[0]
    assert found.skipped[2].startswith("#4 provider")
    assert "organisation" in found.skipped[2]
