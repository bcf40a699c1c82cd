"""The purpose check's job at an insurer node on SQLite and PostgreSQL (oa_node/purpose.py, migration 0009):
it reads the consultations the node answered from its audit and the contacts billed, writes one
USAGE_NOTICE per provider found against to the outbox with the period checked, once; pharmacies (whose
tarification lines the node does not record line by line) are not checked."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, insert, select
from sqlmodel import col

from mycarenet_core.clock import FixedClock
from mycarenet_core.db import transaction
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from oa_node import models as m
from oa_node.app import OaNodeApp
from oa_node.purpose import PurposeRule

NOW = dt.datetime(2025, 3, 4, 9, 0, tzinfo=dt.UTC)
GP, HONEST, PHARMACY = "11000095003", "11000194004", "51001511001"
PATIENTS = ["80051711820", "90051712331", "85073003427", "79031406135"]


async def test_the_purpose_check_writes_its_findings_to_the_outbox_once(database_url: str) -> None:
    clock = FixedClock(NOW)
    app = await OaNodeApp.create(
        insurer_code="300",
        database_url=database_url,
        clock=clock,
        purpose=PurposeRule(period_days=10, delay_days=5, min_consultations=3, max_unfollowed_share=0.5),
    )
    try:
        audit, contacts = m.table_of(m.AuditRecord), m.table_of(m.ContactRow)
        rows = []
        for provider, role in (
            (GP, common_pb2.PROVIDER_ROLE_GENERAL_PRACTITIONER),
            (HONEST, common_pb2.PROVIDER_ROLE_GENERAL_PRACTITIONER),
            (PHARMACY, common_pb2.PROVIDER_ROLE_PHARMACIST),
        ):
            for niss in PATIENTS:
                rows.append(
                    {
                        "at": NOW,
                        "rpc": "ConsultRights",
                        "requester_inami": provider,
                        "requester_role": role,
                        "patient_niss": niss,
                        "outcome": "OK",
                    }
                )
        rows.append(  # refused: not a consultation answered
            {
                "at": NOW,
                "rpc": "GetMemberData",
                "requester_inami": HONEST,
                "requester_role": 1,
                "patient_niss": "70010100155",
                "outcome": "REJECTED",
            }
        )
        async with transaction(app.sessions) as session:
            await session.execute(insert(audit), rows)
            await session.execute(
                insert(contacts),
                [
                    {
                        "niss": niss,
                        "provider": HONEST,
                        "contact_date": NOW.date(),
                        "code": "101010",
                        "submitted_on": NOW.date(),
                    }
                    for niss in PATIENTS
                ]
                + [
                    {
                        "niss": PATIENTS[0],
                        "provider": GP,
                        "contact_date": NOW.date() + dt.timedelta(days=2),
                        "code": "101010",
                        "submitted_on": NOW.date(),
                    }
                ],
            )
        assert await app.purpose.run_once() == 0  # not due yet
        clock.advance(dt.timedelta(days=20))
        assert await app.purpose.run_once() == 1
        assert await app.purpose.run_once() == 0

        async with app.sessions() as session:
            outbox = (await session.execute(select(m.OutboxMessage))).scalars().all()
            checked = (
                await session.execute(select(func.count()).select_from(m.PurposeCheckRow))
            ).scalar_one()
            with_findings = (
                (await session.execute(select(m.PurposeCheckRow).where(col(m.PurposeCheckRow.findings) > 0)))
                .scalars()
                .all()
            )
        [row] = outbox
        message = dmg_pb2.MailboxMessage.FromString(row.payload)
        assert (row.recipient_inami, row.kind) == (GP, dmg_pb2.MESSAGE_KIND_USAGE_NOTICE)
        assert message.insurer_code == "300"
        assert message.message_id.startswith(f"300-usage-{GP}-")
        notice = message.usage_notice
        assert (notice.consultation_count, notice.distinct_patients, notice.unfollowed_count) == (4, 4, 3)
        assert notice.consequence == dmg_pb2.USAGE_CONSEQUENCE_UNSPECIFIED  # the hub decides
        assert checked == 1  # the one period with consultations (the empty ones leave no row)
        assert [(r.consultations, r.findings) for r in with_findings] == [
            (8, 1)
        ]  # the physicians' 8; the pharmacy's 4 are not checked
    finally:
        await app.reads.close()
        await app.engine.dispose()
