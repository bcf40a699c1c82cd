"""Abuse control through the in-process mesh (seed 003 §7.2–§7.3, seed 001 §3; hub/abuse.py): a provider who
consults many distinct patients gets a warning in its mailbox, on a repeat within 365 days an exclusion from
the insurability services (refused with the reason and its end), admitted again once it ends, and the
exclusion survives a restart of the hub; a repeat after 365 days is a warning again; an honest provider is
never flagged; an insurer's finding (the purpose check's notice) counts once however often it is delivered."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import grpc
import pytest

from hub.abuse import EXCLUDED_REASON, AbuseConfig
from mycarenet_core.dates import to_proto
from mycarenet_core.errors import parse_rpc_error
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import mailbox_service_pb2 as mbx
from mycarenet_core.gen.mycarenet.hub.v1 import mailbox_intake_service_pb2 as intake
from mycarenet_core.gen.mycarenet.insurability.v1 import insurability_service_pb2 as pub
from mycarenet_core.gen.mycarenet.insurability.v1 import insurability_service_pb2_grpc as pub_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import intake_service_pb2 as oa_intake
from mycarenet_core.gen.mycarenet.oa.v1 import intake_service_pb2_grpc as oa_intake_grpc
from mycarenet_core.identifiers import make_niss
from oa_node.purpose import PurposeRule
from tests.hub.mesh import FAST, GENEROUS, PHARMACY, MemberSpec, Mesh, bearer, running_mesh

D = dt.date
TIGHT = AbuseConfig(window=dt.timedelta(minutes=60), max_distinct_patients=3, exclusion=dt.timedelta(days=30))
PATIENTS = [make_niss(D(1960 + i, 1 + i % 12, 3), 301 + 2 * i) for i in range(5)]


def tighten(mesh: Mesh, config: AbuseConfig = TIGHT) -> None:
    assert mesh.hub is not None
    mesh.hub.core.abuse.config = config


async def seed(mesh: Mesh, config: AbuseConfig = TIGHT) -> pub_grpc.InsurabilityServiceAsyncStub:
    await mesh.upsert_members(
        "100",
        [MemberSpec(f"x{i}", niss, {"100": [(D(2000, 1, 1), None)]}) for i, niss in enumerate(PATIENTS)],
    )
    tighten(mesh, config)
    return pub_grpc.InsurabilityServiceStub(mesh.channel(mesh.hub_port))


async def member_data(stub: pub_grpc.InsurabilityServiceAsyncStub, token: str, niss: str) -> None:
    await stub.GetMemberData(
        pub.GetMemberDataRequest(patient=common_pb2.PatientSelector(niss=niss)),
        metadata=bearer(token),
        timeout=10,
    )


async def rights(stub: pub_grpc.InsurabilityServiceAsyncStub, token: str, niss: str, day: dt.date) -> None:
    await stub.ConsultRights(
        pub.ConsultRightsRequest(
            patient=common_pb2.PatientSelector(niss=niss), dispensing_date=to_proto(day)
        ),
        metadata=bearer(token),
        timeout=10,
    )


async def notices(mesh: Mesh, token: str) -> list[dmg_pb2.MailboxMessage]:
    answer = await mesh.mailbox.GetMessages(
        mbx.GetMessagesRequest(kinds=[dmg_pb2.MESSAGE_KIND_USAGE_NOTICE]), metadata=bearer(token), timeout=10
    )
    return list(answer.messages)


async def test_warning_then_exclusion_then_admitted_again_and_it_survives_a_restart(tmp_path: Path) -> None:
    async with running_mesh(tmp_path, insurers=("100",), relations_for=()) as mesh:
        stub = await seed(mesh)
        token = await mesh.login_pharmacy()
        # Four distinct patients within the hour (a mix of both services): the fourth is answered, and the
        # finding is a warning in the pharmacy's mailbox.
        for niss in PATIENTS[:3]:
            await member_data(stub, token, niss)
        await rights(stub, token, PATIENTS[3], mesh.clock.today())
        [warning] = await notices(mesh, token)
        notice = warning.usage_notice
        assert warning.recipient_inami == PHARMACY  # the pharmacy, requester of record
        assert warning.insurer_code == ""
        assert notice.finding == dmg_pb2.USAGE_FINDING_DISTINCT_PATIENTS
        assert notice.consequence == dmg_pb2.USAGE_CONSEQUENCE_WARNING
        assert (notice.distinct_patients, notice.HasField("excluded_until")) == (4, False)
        assert "more than 3 distinct patients in 60 minutes" in notice.rule
        await member_data(stub, token, PATIENTS[0])  # a warning refuses nothing

        # A repeat ten days later: excluded for 30 days, told in the mailbox and on every call.
        mesh.clock.advance(dt.timedelta(days=10))
        token = await mesh.login_pharmacy()
        for niss in PATIENTS[:4]:
            await member_data(stub, token, niss)
        exclusion = [m for m in await notices(mesh, token) if m.message_id != warning.message_id]
        assert [m.usage_notice.consequence for m in exclusion] == [dmg_pb2.USAGE_CONSEQUENCE_EXCLUSION]
        assert exclusion[0].usage_notice.repeats_notice_id == warning.message_id
        until = exclusion[0].usage_notice.excluded_until.ToDatetime(dt.UTC)
        assert until == mesh.clock.now() + dt.timedelta(days=30)

        async def refused() -> None:
            for call in (
                member_data(stub, token, PATIENTS[0]),
                rights(stub, token, PATIENTS[1], mesh.clock.today()),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call
                error = parse_rpc_error(caught.value)
                assert (error.status, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, EXCLUDED_REASON)
                assert dt.datetime.fromisoformat(error.metadata["excluded_until"]) == until

        await refused()
        # Another provider is not concerned; the DMG services are not concerned.
        await member_data(stub, await mesh.login(mesh.people["dentist"]), PATIENTS[0])

        # The hub restarts: the exclusion holds (the registry is loaded from its table).
        assert mesh.hub is not None
        await mesh.hub.stop(0)
        await mesh.start_hub(GENEROUS, FAST)
        tighten(mesh)
        stub = pub_grpc.InsurabilityServiceStub(mesh.channel(mesh.hub_port))
        await mesh.hub.wait_until_synced(10)
        await refused()

        # Once the exclusion ends, admitted again.
        mesh.clock.advance(dt.timedelta(days=30))
        token = await mesh.login_pharmacy()
        await member_data(stub, token, PATIENTS[0])


async def test_a_repeat_after_365_days_is_a_warning_and_an_honest_provider_is_never_flagged(
    tmp_path: Path,
) -> None:
    async with running_mesh(tmp_path, insurers=("100",), relations_for=()) as mesh:
        stub = await seed(mesh)
        dentist = mesh.people["dentist"]
        token = await mesh.login_pharmacy()
        for niss in PATIENTS[:4]:
            await member_data(stub, token, niss)
        # An honest dentist: three patients, each many times (once per contact), over the day.
        honest = await mesh.login(dentist)
        for _ in range(5):
            for niss in PATIENTS[:3]:
                await member_data(stub, honest, niss)
            mesh.clock.advance(dt.timedelta(minutes=30))

        mesh.clock.advance(dt.timedelta(days=366))
        token = await mesh.login_pharmacy()
        for niss in PATIENTS[:4]:
            await member_data(stub, token, niss)
        consequences = [m.usage_notice.consequence for m in await notices(mesh, token)]
        assert consequences == [dmg_pb2.USAGE_CONSEQUENCE_WARNING, dmg_pb2.USAGE_CONSEQUENCE_WARNING]
        await member_data(stub, token, PATIENTS[0])
        # Spread thin, four patients over four hours stay under the window's three.
        honest = await mesh.login(dentist)
        for niss in PATIENTS[:4]:
            await member_data(stub, honest, niss)
            mesh.clock.advance(dt.timedelta(minutes=61))
        assert await notices(mesh, await mesh.login(dentist)) == []


async def test_an_insurers_finding_counts_once_however_often_delivered(tmp_path: Path) -> None:
    async with running_mesh(tmp_path, insurers=("100",), relations_for=()) as mesh:
        stub = await seed(mesh)
        gp = mesh.people["gp_a"]

        def finding(message_id: str) -> dmg_pb2.MailboxMessage:
            return dmg_pb2.MailboxMessage(
                message_id=message_id,
                kind=dmg_pb2.MESSAGE_KIND_USAGE_NOTICE,
                insurer_code="100",
                recipient_inami=gp.inami,
                usage_notice=dmg_pb2.UsageNotice(
                    finding=dmg_pb2.USAGE_FINDING_UNFOLLOWED_CONSULTATIONS,
                    consultation_count=40,
                    distinct_patients=40,
                    unfollowed_count=38,
                    rule="more than 50% of at least 20 consultations never followed by a billed service",
                ),
            )

        relay = mesh.intake_for("100")
        # Bad input changes nothing: a rule over its documented 300 characters is refused, no strike.
        oversized = finding("100-usage-0")
        oversized.usage_notice.rule = "x" * 301
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await relay.DeliverMessages(
                intake.DeliverMessagesRequest(insurer_code="100", messages=[oversized]), timeout=10
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert mesh.hub is not None
        assert mesh.hub.core.abuse.strikes(gp.inami) == []
        for _ in range(3):  # the relay retries (its answer lost): one strike, one warning
            await relay.DeliverMessages(
                intake.DeliverMessagesRequest(insurer_code="100", messages=[finding("100-usage-1")]),
                timeout=10,
            )
        assert mesh.hub is not None
        assert [s.consequence.value for s in mesh.hub.core.abuse.strikes(gp.inami)] == ["WARNING"]
        token = await mesh.login(gp)
        await member_data(stub, token, PATIENTS[0])
        # A second finding of the insurer within the year: excluded.
        await relay.DeliverMessages(
            intake.DeliverMessagesRequest(insurer_code="100", messages=[finding("100-usage-2")]), timeout=10
        )
        [first, second] = await notices(mesh, token)
        assert first.usage_notice.consequence == dmg_pb2.USAGE_CONSEQUENCE_WARNING
        assert first.usage_notice.unfollowed_count == 38
        assert second.usage_notice.consequence == dmg_pb2.USAGE_CONSEQUENCE_EXCLUSION
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await member_data(stub, token, PATIENTS[0])
        assert parse_rpc_error(caught.value).reason == EXCLUDED_REASON


async def test_the_purpose_check_finds_consultations_never_billed_and_the_hub_warns(tmp_path: Path) -> None:
    """Seed 003 §7.3 through the mesh: insurer 100 checks a period once its delay has passed (the clock
    moved), finds against the GP whose consultations were mostly never followed by a billed contact, and its
    notice reaches the GP's mailbox through the outbox relay and the hub, which makes it a warning; the
    honest GP (each consultation followed by a contact) is never found against; a rerun finds nothing new."""
    async with running_mesh(tmp_path, insurers=("100",), relations_for=()) as mesh:
        stub = await seed(mesh, AbuseConfig(max_distinct_patients=100))
        node = mesh.oas["100"]
        node.purpose.rule = PurposeRule(
            period_days=10, delay_days=5, min_consultations=3, max_unfollowed_share=0.5
        )
        backoffice = oa_intake_grpc.InvoicingIntakeServiceStub(
            mesh.channel(mesh.oa_ports["100"], "backoffice")
        )
        gp_a, gp_b = mesh.people["gp_a"], mesh.people["gp_b"]
        today = mesh.clock.today()

        async def contact(gp: str, niss: str, reference: str) -> None:
            await backoffice.RegisterContact(
                oa_intake.RegisterContactRequest(
                    intake_reference=reference,
                    patient_niss=niss,
                    provider_inami=gp,
                    contact_date=to_proto(today),
                    nomenclature_code="101010",
                    submission_date=to_proto(today),
                ),
                timeout=10,
            )

        token_a, token_b = await mesh.login(gp_a), await mesh.login(gp_b)
        for i, niss in enumerate(PATIENTS[:4]):  # four consultations, one followed by a contact
            await member_data(stub, token_a, niss)
            await member_data(stub, token_a, niss)  # twice at one contact: one consultation
            if i == 0:
                await contact(gp_a.inami, niss, f"a-{i}")
        for i, niss in enumerate(PATIENTS[:3]):  # the honest GP: each consultation followed
            await member_data(stub, token_b, niss)
            await contact(gp_b.inami, niss, f"b-{i}")

        assert await node.purpose.run_once() == 0  # the period's delay has not passed yet
        mesh.clock.advance(dt.timedelta(days=20))
        assert await node.purpose.run_once() == 1
        assert await node.purpose.run_once() == 0  # each period is checked once

        token_a = await mesh.login(gp_a)
        for _ in range(100):
            found = await notices(mesh, token_a)
            if found:
                break
            await asyncio.sleep(0.05)
        [notice] = found
        assert (notice.insurer_code, notice.recipient_inami) == ("100", gp_a.inami)
        usage = notice.usage_notice
        assert usage.finding == dmg_pb2.USAGE_FINDING_UNFOLLOWED_CONSULTATIONS
        assert usage.consequence == dmg_pb2.USAGE_CONSEQUENCE_WARNING  # decided by the hub
        assert (usage.consultation_count, usage.distinct_patients, usage.unfollowed_count) == (4, 4, 3)
        assert (
            usage.period_start.ToDatetime(dt.UTC).date() <= today < usage.period_end.ToDatetime(dt.UTC).date()
        )
        assert mesh.hub is not None
        assert [s.finding for s in mesh.hub.core.abuse.strikes(gp_a.inami)] == ["UNFOLLOWED_CONSULTATIONS"]
        assert mesh.hub.core.abuse.strikes(gp_b.inami) == []
        assert await notices(mesh, await mesh.login(gp_b)) == []
