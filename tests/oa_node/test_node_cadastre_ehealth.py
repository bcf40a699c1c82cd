"""The insurers follow the REAL eHealth cadastre: one registration through the administrator's path reaches
every insurer (enrolment no longer 141 at those a vendor forgot), later changes arrive live, and a restarted
node resumes from its stored position."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from node_support import (
    BANK,
    PATIENT,
    TODAY,
    Node,
    context,
    d,
    member,
    rpc_error,
    snapshot,
    start_node,
    stop_node,
)

from ehealth.app import EhealthApp
from mycarenet_core import dates
from mycarenet_core.channels import open_channel
from mycarenet_core.clock import FixedClock
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import cadastre_pb2 as cad_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import cadastre_pb2_grpc as cad_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import membership_service_pb2 as ms_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import oa_dmg_service_pb2 as oa_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import oa_dmg_service_pb2_grpc as oa_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import reference_data_service_pb2 as rd_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import reference_data_service_pb2_grpc as rd_grpc
from mycarenet_core.identifiers import INSURER_CODES, Profession, make_inami, make_niss
from oa_node import models as m
from oa_node.app import OaNodeApp

CLOCK = FixedClock(dt.datetime(2024, 3, 15, 10, 0, tzinfo=dt.UTC))
GP = make_inami(Profession.PHYSICIAN, 10301, "003")
OTHER_GP = make_inami(Profession.PHYSICIAN, 10302, "004")
TRAINEE = make_inami(Profession.PHYSICIAN, 10303, "005")
LATE_GP = make_inami(Profession.PHYSICIAN, 10304, "003")
GROUP = make_inami(Profession.ORGANISATION, 20301, "200")


def period(start: dt.date, end: dt.date | None = None) -> common_pb2.Period:
    return common_pb2.Period(start=dates.to_proto(start), end=dates.to_proto(end))


class Admin:
    """The sandbox administrator's channel to eHealth's cadastre."""

    def __init__(self, target: str) -> None:
        self.channel = open_channel(target, identity="admin")
        self.cadastre = cad_grpc.CadastreServiceStub(self.channel)

    async def provider(self, inami: str, sequence: int, *, supervisor: str = "") -> int:
        reply = await self.cadastre.UpsertProvider(
            cad_pb2.UpsertProviderRequest(
                provider=cad_pb2.CadastreProvider(
                    inami=inami,
                    niss=make_niss(dt.date(1980, 1, 1), sequence),
                    first_name="Dr",
                    last_name=f"Cadastre {inami[:6]}",
                    validity=period(dt.date(2000, 1, 1)),
                    supervisor_inami=supervisor,
                )
            ),
            timeout=10,
        )
        assert reply.change_sequence > 0
        return int(reply.change_sequence)

    async def group(self, inami: str, members: list[str]) -> int:
        reply = await self.cadastre.UpsertOrganisation(
            cad_pb2.UpsertOrganisationRequest(
                organisation=cad_pb2.Organisation(
                    inami=inami,
                    name="Groepspraktijk Noord",
                    validity=period(dt.date(2000, 1, 1)),
                    members=[
                        cad_pb2.OrganisationMember(inami=x, period=period(dt.date(2020, 1, 1)))
                        for x in members
                    ],
                )
            ),
            timeout=10,
        )
        assert reply.change_sequence > 0
        return int(reply.change_sequence)


@pytest.fixture
async def ehealth(tmp_path: Path) -> AsyncIterator[tuple[EhealthApp, Admin]]:
    app = await EhealthApp.create(database_url=f"sqlite+aiosqlite:///{tmp_path / 'ehealth.db'}", clock=CLOCK)
    port = await app.start("127.0.0.1:0")
    admin = Admin(f"127.0.0.1:{port}")
    try:
        yield app, admin
    finally:
        await admin.channel.close()
        await app.stop()


def target(app: EhealthApp) -> str:
    return f"127.0.0.1:{app.server.port}"


async def reached(reference: rd_grpc.ReferenceDataServiceStub, sequence: int, within: float = 10.0) -> None:
    """Wait until the insurer has applied the cadastre up to ``sequence`` and holds the watch open: how a
    vendor's test set-up knows the mesh knows its provider."""
    deadline = time.monotonic() + within
    while True:
        now = await reference.GetCadastrePosition(rd_pb2.GetCadastrePositionRequest(), timeout=10)
        if now.applied_sequence >= sequence and now.following:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"cadastre position {now.applied_sequence} (following={now.following}) < {sequence}"
            )
        await asyncio.sleep(0.02)


async def enrol(dmg: oa_grpc.OaDmgServiceStub, inami: str) -> oa_pb2.EnrolDmgResponse:
    reply: oa_pb2.EnrolDmgResponse = await dmg.EnrolDmg(
        oa_pb2.EnrolDmgRequest(context=context(inami), bank_account=BANK, start_date=d(dt.date(2010, 1, 1))),
        timeout=10,
    )
    return reply


async def test_the_insurer_follows_the_real_cadastre_live_and_across_a_restart(
    pg_admin_url: str, database_url: str, ehealth: tuple[EhealthApp, Admin]
) -> None:
    app, admin = ehealth
    first = await admin.provider(GP, 1)
    node = await start_node(database_url, ehealth=target(app), clock=CLOCK)
    try:
        await reached(node.reference, first)
        assert (await enrol(node.dmg, GP)).enrolled_since.year == 2010  # registered once, at the cadastre

        # Live: a trainee under GP, another GP, GP's group practice.
        await admin.provider(OTHER_GP, 2)
        await admin.provider(TRAINEE, 3, supervisor=GP)
        last = await admin.group(GROUP, [GP, OTHER_GP])
        await reached(node.reference, last)
        async with node.app.sessions() as session:
            trainee = await session.get(m.KnownProvider, TRAINEE)
            group = await session.get(m.Organisation, GROUP)
        assert trainee is not None
        assert trainee.supervisor_inami == GP
        assert group is not None
        assert group.name == "Groepspraktijk Noord"

        await node.members.UpsertMembers(
            ms_pb2.UpsertMembersRequest(members=[member(PATIENT, start=dt.date(2000, 1, 1))]), timeout=10
        )
        await enrol(node.dmg, OTHER_GP)
        before = await snapshot(node.app)
        error = await rpc_error(node.notify(TRAINEE, supervisor=OTHER_GP, reference="e-1", today=TODAY))
        assert error.status == grpc.StatusCode.INVALID_ARGUMENT
        assert [(v.field, v.code) for v in error.violations] == [("supervisor_inami", 156)]
        assert await snapshot(node.app) == before
        done = await node.notify(TRAINEE, supervisor=GP, reference="e-2")
        assert done.holder.inami == GP
    finally:
        await stop_node(node)

    late = await admin.provider(LATE_GP, 4)  # registered while the insurer is down
    again = await start_node(database_url, ehealth=target(app), clock=CLOCK)
    try:
        await reached(again.reference, late)
        assert again.app.cadastre is not None
        assert again.app.cadastre.applied == 1  # only what it had not applied yet
        await enrol(again.dmg, LATE_GP)
    finally:
        await stop_node(again)


async def test_one_registration_at_the_cadastre_lets_a_gp_enrol_at_all_seven_insurers(
    tmp_path: Path, ehealth: tuple[EhealthApp, Admin]
) -> None:
    app, admin = ehealth
    nodes: list[OaNodeApp] = []
    channels: list[grpc.aio.Channel] = []
    try:
        for code in INSURER_CODES:
            node = await OaNodeApp.create(
                insurer_code=code,
                database_url=f"sqlite+aiosqlite:///{tmp_path / f'oa-{code}.db'}",
                clock=CLOCK,
                ehealth_target=target(app),
            )
            nodes.append(node)
            await node.start("127.0.0.1:0")
        sequence = await admin.provider(GP, 1)  # the one and only registration
        for node in nodes:
            office = open_channel(f"127.0.0.1:{node.port}", identity="backoffice")
            hub = open_channel(f"127.0.0.1:{node.port}", identity="hub")
            channels += [office, hub]
            await reached(rd_grpc.ReferenceDataServiceStub(office), sequence)
            reply = await enrol(oa_grpc.OaDmgServiceStub(hub), GP)
            assert reply.insurer_code == node.insurer_code
        assert len(nodes) == len(INSURER_CODES) == 7
    finally:
        for channel in channels:
            await channel.close()
        for node in nodes:
            await node.stop()


async def test_without_following_the_cadastre_the_insurer_does_not_know_the_provider(
    pg_admin_url: str, database_url: str, ehealth: tuple[EhealthApp, Admin]
) -> None:
    """The counterpart: the same registration, a node that does not follow eHealth: 141, as before."""
    _app, admin = ehealth
    await admin.provider(GP, 1)
    node: Node = await start_node(database_url, clock=CLOCK)
    try:
        error = await rpc_error(enrol(node.dmg, GP))
        assert [(v.field, v.code) for v in error.violations] == [("context.requester_inami", 141)]
    finally:
        await stop_node(node)
