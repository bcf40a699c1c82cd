"""Shared fixtures of the OA node service tests: a started node on port 0 (SQLite and PostgreSQL), its
stubs, and a small seeded world (providers, a medical house, enrolments, members).

The node runs without TLS, so each channel declares the certificate kind it stands for (``x-mcn-peer``):
the DMG service is called as the hub, the intake, membership and reference data as the back office, as
the trust table grants them."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from sqlalchemy import text

from mycarenet_core import dates
from mycarenet_core.channels import open_channel
from mycarenet_core.clock import FixedClock
from mycarenet_core.errors import MeshError, parse_rpc_error
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import context_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import intake_service_pb2 as intake_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import intake_service_pb2_grpc as intake_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import membership_service_pb2 as ms_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import membership_service_pb2_grpc as ms_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import oa_dmg_service_pb2 as oa_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import oa_dmg_service_pb2_grpc as oa_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import reference_data_service_pb2 as rd_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import reference_data_service_pb2_grpc as rd_grpc
from mycarenet_core.identifiers import Profession, make_inami, make_niss
from mycarenet_core.trust import TABLE, TrustTable
from oa_node import models as m
from oa_node.app import OaNodeApp

INSURER = "100"
TODAY = dt.date(2024, 3, 15)

GP_A = make_inami(Profession.PHYSICIAN, 10001, "003")
GP_B = make_inami(Profession.PHYSICIAN, 10002, "004")
GP_NOT_ENROLLED = make_inami(Profession.PHYSICIAN, 10003, "003")
TRAINEE = make_inami(Profession.PHYSICIAN, 10004, "005")
SPECIALIST = make_inami(Profession.PHYSICIAN, 10005, "580")
PHARMACIST = make_inami(Profession.PHARMACIST, 10006, "000")
GP_UNKNOWN = make_inami(Profession.PHYSICIAN, 10099, "003")
HOUSE = make_inami(Profession.ORGANISATION, 20001, "100")

PATIENT = make_niss(dt.date(1970, 5, 17), 123)  # odd sequence: male
PATIENT_2 = make_niss(dt.date(1985, 1, 2), 44)
PATIENT_HOUSE = make_niss(dt.date(1990, 8, 8), 57)
PATIENT_LEFT = make_niss(dt.date(1960, 2, 2), 71)  # affiliated until 2023
OUTSIDER = make_niss(dt.date(1999, 9, 9), 83)  # not a member
NUMBER = {PATIENT: "1000001", PATIENT_2: "1000002", PATIENT_HOUSE: "1000003", PATIENT_LEFT: "1000004"}


def d(value: dt.date | None) -> common_pb2.Date | None:
    return dates.to_proto(value)


def context(
    requester: str = GP_A, *, reference: str = "ref-1", today: dt.date = TODAY, **extra: Any
) -> context_pb2.RequestContext:
    return context_pb2.RequestContext(
        requester_inami=requester,
        requester_reference=reference,
        processing_date=d(today),
        executor_id=requester,
        executor_kind="SUBJECT_KIND_PROVIDER",
        session_id="session-1",
        **extra,
    )


def by_niss(niss: str, sex: int = 0) -> common_pb2.PatientSelector:
    return common_pb2.PatientSelector(niss=niss, sex=sex)  # type: ignore[arg-type]


def member(niss: str, *, start: dt.date, end: dt.date | None = None, **extra: Any) -> ms_pb2.Member:
    return ms_pb2.Member(
        patient=common_pb2.Patient(
            niss=niss,
            first_name="Jan",
            last_name=f"Peeters-{niss[-3:]}",
            member=common_pb2.MemberNumber(mutuality_code=INSURER, registration_number=NUMBER.get(niss, "9")),
        ),
        affiliations=[common_pb2.Period(start=d(start), end=d(end))],
        **extra,
    )


def provider(inami: str, supervisor: str = "") -> rd_pb2.KnownProvider:
    return rd_pb2.KnownProvider(
        provider=common_pb2.Provider(inami=inami, first_name="Dr", last_name=inami[-6:]),
        supervisor_inami=supervisor,
    )


BANK = common_pb2.BankAccount(iban="BE68539007547034", bic="GKCCBEBB", holder_name="Dr A")


@dataclass
class Node:
    """A started node and its stubs: ``dmg`` on the hub's channel, the others on the back office's."""

    app: OaNodeApp
    channel: grpc.aio.Channel
    office: grpc.aio.Channel
    dmg: Any
    intake: Any
    members: Any
    reference: Any
    clock: FixedClock

    async def enrol(self, inami: str, since: dt.date = dt.date(2010, 1, 1)) -> None:
        await self.dmg.EnrolDmg(
            oa_pb2.EnrolDmgRequest(context=context(inami), bank_account=BANK, start_date=d(since)), timeout=10
        )

    async def notify(
        self,
        requester: str = GP_A,
        niss: str = PATIENT,
        *,
        contact: dt.date = TODAY,
        reference: str = "n-1",
        today: dt.date = TODAY,
        code: str = "101010",
        supervisor: str = "",
    ) -> oa_pb2.NotifyDmgResponse:
        return await self.dmg.NotifyDmg(
            oa_pb2.NotifyDmgRequest(
                context=context(requester, reference=reference, today=today),
                patient=by_niss(niss),
                contact_date=d(contact),
                nomenclature_code=code,
                supervisor_inami=supervisor,
            ),
            timeout=10,
        )

    async def contact(
        self, provider_inami: str, niss: str, contact: dt.date, submitted: dt.date, reference: str
    ) -> intake_pb2.RegisterContactResponse:
        return await self.intake.RegisterContact(
            intake_pb2.RegisterContactRequest(
                intake_reference=reference,
                patient_niss=niss,
                provider_inami=provider_inami,
                contact_date=d(contact),
                nomenclature_code="101010",
                submission_date=d(submitted),
            ),
            timeout=10,
        )


async def start_node(
    database_url: str,
    *,
    hub: str | None = None,
    ehealth: str | None = None,
    clock: FixedClock | None = None,
    max_notification_delay_days: int = 7,
    trust_table: TrustTable = TABLE,
) -> Node:
    clock = clock or FixedClock(dt.datetime(2024, 3, 15, 10, 0, tzinfo=dt.UTC))
    app = await OaNodeApp.create(
        insurer_code=INSURER,
        database_url=database_url,
        clock=clock,
        hub_intake_target=hub,
        ehealth_target=ehealth,
        max_notification_delay_days=max_notification_delay_days,
        trust_table=trust_table,
    )
    port = await app.start("127.0.0.1:0")
    channel = open_channel(f"127.0.0.1:{port}", identity="hub")
    office = open_channel(f"127.0.0.1:{port}", identity="backoffice")
    return Node(
        app,
        channel,
        office,
        oa_grpc.OaDmgServiceStub(channel),
        intake_grpc.InvoicingIntakeServiceStub(office),
        ms_grpc.MembershipServiceStub(office),
        rd_grpc.ReferenceDataServiceStub(office),
        clock,
    )


async def stop_node(node: Node) -> None:
    await node.channel.close()
    await node.office.close()
    await node.app.stop()


async def seed(node: Node) -> None:
    """Providers, a medical house, enrolments of GP A, GP B and the house, and four members."""
    await node.reference.UpsertProviders(
        rd_pb2.UpsertProvidersRequest(
            providers=[
                provider(GP_A),
                provider(GP_B),
                provider(GP_NOT_ENROLLED),
                provider(TRAINEE, supervisor=GP_A),
                provider(SPECIALIST),
                provider(PHARMACIST),
            ]
        ),
        timeout=10,
    )
    await node.reference.UpsertOrganisations(
        rd_pb2.UpsertOrganisationsRequest(
            organisations=[
                rd_pb2.KnownOrganisation(
                    organisation=common_pb2.Provider(inami=HOUSE, last_name="Maison médicale du Midi"),
                    members=[
                        rd_pb2.OrganisationMembership(
                            member_inami=GP_B, period=common_pb2.Period(start=d(dt.date(2000, 1, 1)))
                        )
                    ],
                )
            ]
        ),
        timeout=10,
    )
    for inami in (GP_A, GP_B, HOUSE):
        await node.enrol(inami)
    since = dt.date(2000, 1, 1)
    await node.members.UpsertMembers(
        ms_pb2.UpsertMembersRequest(
            members=[
                member(PATIENT, start=since),
                member(PATIENT_2, start=since),
                member(
                    PATIENT_HOUSE,
                    start=since,
                    medical_house_inami=HOUSE,
                    medical_house_period=common_pb2.Period(start=d(dt.date(2020, 1, 1))),
                ),
                member(PATIENT_LEFT, start=since, end=dt.date(2023, 12, 31)),
            ]
        ),
        timeout=10,
    )


@pytest.fixture
async def node(pg_admin_url: str, database_url: str) -> AsyncIterator[Node]:
    # pg_admin_url first: that shared session fixture probes with asyncio.run(), which must happen before
    # an event loop runs the async database_url fixture.
    started = await start_node(database_url)
    try:
        await seed(started)
        yield started
    finally:
        await stop_node(started)


async def rpc_error(call: Any) -> MeshError:
    """Await a call that must fail; return the parsed error."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return parse_rpc_error(caught.value)


BUSINESS_TABLES = [t.name for t in m.metadata.sorted_tables if t.name not in ("oa_audit",)]


async def snapshot(app: OaNodeApp) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table except the audit trail (which records rejections too)."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with app.engine.connect() as conn:
        for name in BUSINESS_TABLES:
            rows = (await conn.execute(text(f'SELECT * FROM "{name}"'))).all()
            out[name] = sorted((tuple(r) for r in rows), key=repr)
    return out
