"""Abuse control through the in-process mesh (seed 003 §7.2–§7.3, seed 001 §3; hub/abuse.py): a provider who
consults many distinct patients gets a warning in its mailbox, on a repeat within 365 days an exclusion from
the insurability services (refused with the reason and its end), admitted again once it ends, and the
exclusion survives a restart of the hub; a repeat after 365 days is a warning again; an honest provider is
never flagged; an insurer's finding (the purpose check's notice) counts once however often it is delivered."""

from __future__ import annotations

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
from mycarenet_core.identifiers import make_niss
from tests.hub.mesh import FAST, GENEROUS, Mesh, MemberSpec, bearer, running_mesh

D = dt.date
TIGHT = AbuseConfig(window=dt.timedelta(minutes=60), max_distinct_patients=3, exclusion=dt.timedelta(days=30))
PATIENTS = [make_niss(D(1960 + i, 1 + i % 12, 3), 301 + 2 * i) for i in range(5)]


def tighten(mesh: Mesh) -> None:
    assert mesh.hub is not None
    mesh.hub.core.abuse.config = TIGHT


async def seed(mesh: Mesh) -> pub_grpc.InsurabilityServiceStub:
    await mesh.upsert_members(
        "100",
        [MemberSpec(f"x{i}", niss, {"100": [(D(2000, 1, 1), None)]}) for i, niss in enumerate(PATIENTS)],
    )
    tighten(mesh)
    return pub_grpc.InsurabilityServiceStub(mesh.channel(mesh.hub_port))


async def member_data(stub: pub_grpc.InsurabilityServiceStub, token: str, niss: str) -> None:
    await stub.GetMemberData(
        pub.GetMemberDataRequest(patient=common_pb2.PatientSelector(niss=niss)),
        metadata=bearer(token),
        timeout=10,
    )


async def rights(stub: pub_grpc.InsurabilityServiceStub, token: str, niss: str, day: dt.date) -> None:
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
        pharmacist = mesh.people["pharmacist"]
        token = await mesh.login(pharmacist)
        # Four distinct patients within the hour (a mix of both services): the fourth is answered, and the
        # finding is a warning in the pharmacist's mailbox.
        for niss in PATIENTS[:3]:
            await member_data(stub, token, niss)
        await rights(stub, token, PATIENTS[3], mesh.clock.today())
        [warning] = await notices(mesh, token)
        notice = warning.usage_notice
        assert warning.recipient_inami == pharmacist.inami and warning.insurer_code == ""
        assert notice.finding == dmg_pb2.USAGE_FINDING_DISTINCT_PATIENTS
        assert notice.consequence == dmg_pb2.USAGE_CONSEQUENCE_WARNING
        assert (notice.distinct_patients, notice.HasField("excluded_until")) == (4, False)
        assert "more than 3 distinct patients in 60 minutes" in notice.rule
        await member_data(stub, token, PATIENTS[0])  # a warning refuses nothing

        # A repeat ten days later: excluded for 30 days, told in the mailbox and on every call.
        mesh.clock.advance(dt.timedelta(days=10))
        token = await mesh.login(pharmacist)
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
        token = await mesh.login(pharmacist)
        await member_data(stub, token, PATIENTS[0])


async def test_a_repeat_after_365_days_is_a_warning_and_an_honest_provider_is_never_flagged(
    tmp_path: Path,
) -> None:
    async with running_mesh(tmp_path, insurers=("100",), relations_for=()) as mesh:
        stub = await seed(mesh)
        pharmacist, dentist = mesh.people["pharmacist"], mesh.people["dentist"]
        token = await mesh.login(pharmacist)
        for niss in PATIENTS[:4]:
            await member_data(stub, token, niss)
        # An honest dentist: three patients, each many times (once per contact), over the day.
        honest = await mesh.login(dentist)
        for _ in range(5):
            for niss in PATIENTS[:3]:
                await member_data(stub, honest, niss)
            mesh.clock.advance(dt.timedelta(minutes=30))

        mesh.clock.advance(dt.timedelta(days=366))
        token = await mesh.login(pharmacist)
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
