"""An insurer node on the sandbox's movable clock runs each year end once (issue 15): when the clock is moved
over 31 December through ProcessClockService (the call answers after the run) or when time runs past the
mesh's midnight, never again for a year it ran, not after a restart, and never for a year before the node's
first day."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2
from sqlalchemy import select

from mycarenet_core.channels import open_channel
from mycarenet_core.clock import BRUSSELS, OffsetClock, moved_offset
from mycarenet_core.gen.mycarenet.oa.v1 import intake_service_pb2 as intake_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import intake_service_pb2_grpc as intake_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import membership_service_pb2 as ms_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import membership_service_pb2_grpc as ms_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import reference_data_service_pb2 as rd_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import reference_data_service_pb2_grpc as rd_grpc
from mycarenet_core.gen.mycarenet.sandbox.v1 import clock_pb2, clock_pb2_grpc
from oa_node import models as m
from oa_node.app import OaNodeApp
from tests.oa_node.node_support import GP_A, INSURER, PATIENT, d, member, provider


async def start(url: str, clock: OffsetClock) -> tuple[OaNodeApp, str]:
    app = await OaNodeApp.create(insurer_code=INSURER, database_url=url, clock=clock)
    return app, f"127.0.0.1:{await app.start('127.0.0.1:0')}"


async def move_to(address: str, clock: OffsetClock, day: dt.date) -> clock_pb2.ProcessClock:
    """Move the node's clock as the cluster supervisor does (the administrator's certificate)."""
    offset = duration_pb2.Duration()
    offset.FromTimedelta(moved_offset(clock.offset, day))
    async with open_channel(address, identity="admin") as channel:
        stub = clock_pb2_grpc.ProcessClockServiceStub(channel)
        answer = await stub.SetOffset(clock_pb2.SetOffsetRequest(offset=offset), timeout=30)
    return answer.clock


async def payments(app: OaNodeApp) -> list[tuple[int, str, dt.date, dt.date]]:
    async with app.sessions() as session:
        rows = (await session.execute(select(m.PaymentRow).where(m.PaymentRow.patient == PATIENT))).scalars()
        return sorted((p.year, p.kind, p.registered_on, p.due_by) for p in rows)


async def runs(app: OaNodeApp) -> list[tuple[int, dt.date]]:
    assert app.year_ends is not None
    return sorted((year, row.processing_date) for year, row in (await app.year_ends.done()).items())


async def test_year_ends_run_once_per_year_whichever_way_the_clock_moves(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'oa.db'}"
    clock = OffsetClock(dt.date(2023, 6, 1))
    app, address = await start(url, clock)
    try:
        office = open_channel(address, identity="backoffice")
        async with office:
            reference = rd_grpc.ReferenceDataServiceStub(office)
            await reference.UpsertProviders(
                rd_pb2.UpsertProvidersRequest(providers=[provider(GP_A)]), timeout=10
            )
            members = ms_grpc.MembershipServiceStub(office)
            since = dt.date(2000, 1, 1)
            await members.UpsertMembers(
                ms_pb2.UpsertMembersRequest(members=[member(PATIENT, start=since)]), timeout=10
            )
            intake = intake_grpc.InvoicingIntakeServiceStub(office)
            # A paper holder: 102771 attested in 2022, a contact in 2023 (the conditions of a prolongation),
            # the 102771 handed in after the contact (paper arrives late): the year end pays the prolongation.
            await intake.RegisterContact(
                intake_pb2.RegisterContactRequest(
                    intake_reference="contact-2023",
                    patient_niss=PATIENT,
                    provider_inami=GP_A,
                    contact_date=d(dt.date(2023, 3, 3)),
                    nomenclature_code="101010",
                    submission_date=d(dt.date(2023, 4, 1)),
                ),
                timeout=10,
            )
            await intake.RegisterPaperAttestation(
                intake_pb2.RegisterPaperAttestationRequest(
                    intake_reference="paper-2022",
                    patient_niss=PATIENT,
                    provider_inami=GP_A,
                    attestation_date=d(dt.date(2022, 5, 2)),
                    submission_date=d(dt.date(2023, 4, 15)),
                ),
                timeout=10,
            )
        # The node was born on 01.06.2023: the year end of 2022 is not its to run.
        assert await runs(app) == []

        moved = await move_to(address, clock, dt.date(2024, 1, 5))
        assert (moved.observed, moved.today.year, list(moved.year_ends_run)) == (True, 2024, [2023])
        assert await runs(app) == [(2023, dt.date(2024, 1, 1))]
        prolonged = [
            (2022, "PAPER_ATTESTATION", dt.date(2023, 4, 15), dt.date(2023, 5, 15)),
            (2023, "ADMINISTRATIVE_PROLONGATION", dt.date(2024, 1, 1), dt.date(2024, 1, 31)),
        ]
        assert await payments(app) == prolonged
        # Moving again within the year runs nothing.
        assert list((await move_to(address, clock, dt.date(2024, 1, 20))).year_ends_run) == []
    finally:
        await app.stop()

    # A restart (later, at the moved clock) runs nothing it ran already; a big step runs each year once.
    clock = OffsetClock(dt.date(2024, 2, 1))
    app, address = await start(url, clock)
    try:
        assert list((await move_to(address, clock, dt.date(2026, 3, 1))).year_ends_run) == [2024, 2025]
        assert [year for year, _ in await runs(app)] == [2023, 2024, 2025]
        assert await payments(app) == prolonged  # no contact in 2024: no prolongation for 2024
    finally:
        await app.stop()


async def test_a_move_is_checked_before_it_happens(tmp_path: Path) -> None:
    clock = OffsetClock(dt.date(2023, 6, 1))
    app, address = await start(f"sqlite+aiosqlite:///{tmp_path / 'oa.db'}", clock)
    try:
        async with open_channel(address, identity="admin") as channel:
            stub = clock_pb2_grpc.ProcessClockServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.SetOffset(clock_pb2.SetOffsetRequest(), timeout=10)
            assert missing.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            too_far = duration_pb2.Duration(seconds=200 * 365 * 86400)
            with pytest.raises(grpc.aio.AioRpcError) as far:
                await stub.SetOffset(clock_pb2.SetOffsetRequest(offset=too_far), timeout=10)
            assert far.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            read = await stub.GetOffset(clock_pb2.GetOffsetRequest(), timeout=10)
        assert read.clock.today.year == 2023
        assert clock.today() == dt.date(2023, 6, 1)
    finally:
        await app.stop()


async def test_time_running_past_midnight_on_31_december_runs_the_year_end(tmp_path: Path) -> None:
    # Seconds before the mesh's midnight of 31.12.2023 (Brussels): no move, the node wakes up at midnight.
    midnight = dt.datetime(2024, 1, 1, tzinfo=BRUSSELS)
    clock = OffsetClock(offset=midnight - dt.timedelta(seconds=5) - dt.datetime.now(dt.UTC))
    app, _ = await start(f"sqlite+aiosqlite:///{tmp_path / 'oa.db'}", clock)
    try:
        assert app.year_ends is not None
        await asyncio.wait_for(app.year_ends.ran.wait(), 20)
        assert await runs(app) == [(2023, dt.date(2024, 1, 1))]
        run_at = (await app.year_ends.done())[2023].run_at
        assert run_at.replace(tzinfo=run_at.tzinfo or dt.UTC) >= midnight  # at the mesh's midnight
    finally:
        await app.stop()
