"""Members, the affiliation feed (catch-up, then live watch that ends when the node stops), reference data
and the serialisation of concurrent changes of one patient."""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
from node_support import (
    GP_A,
    GP_B,
    INSURER,
    NUMBER,
    PATIENT,
    PATIENT_2,
    TODAY,
    Node,
    by_niss,
    member,
    node,
    rpc_error,
    seed,
    start_node,
    stop_node,
)
from sqlalchemy import select

from mycarenet_core.channels import open_channel
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import membership_service_pb2 as ms_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import membership_service_pb2_grpc as ms_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import reference_data_service_pb2 as rd_pb2
from mycarenet_core.identifiers import make_niss
from oa_node import models as m

__all__ = ["node"]


async def test_get_member_by_niss_and_member_number(node: Node) -> None:
    found = await node.members.GetMember(ms_pb2.GetMemberRequest(patient=by_niss(PATIENT)), timeout=10)
    assert found.member.patient.member.registration_number == NUMBER[PATIENT]
    assert [p.start.year for p in found.member.affiliations] == [2000]
    selector = common_pb2.PatientSelector(
        member=common_pb2.MemberNumber(mutuality_code=INSURER, registration_number=NUMBER[PATIENT_2])
    )
    other = await node.members.GetMember(ms_pb2.GetMemberRequest(patient=selector), timeout=10)
    assert other.member.patient.niss == PATIENT_2
    missing = await rpc_error(
        node.members.GetMember(
            ms_pb2.GetMemberRequest(patient=by_niss(make_niss(dt.date(1950, 1, 1), 3))), timeout=10
        )
    )
    assert missing.status == grpc.StatusCode.NOT_FOUND
    assert missing.codes == (120,)


async def test_feed_catch_up_pages_and_only_real_changes(node: Node) -> None:
    first = await node.members.ListAffiliationChanges(ms_pb2.ListAffiliationChangesRequest(), timeout=10)
    assert [c.sequence for c in first.changes] == [1, 2, 3, 4]
    assert first.last_sequence == 4
    assert {c.insurer_code for c in first.changes} == {INSURER}
    # The same data again is no change; a new period is one.
    unchanged = await node.members.UpsertMembers(
        ms_pb2.UpsertMembersRequest(members=[member(PATIENT, start=dt.date(2000, 1, 1))]), timeout=10
    )
    assert (unchanged.created, unchanged.updated, unchanged.last_sequence) == (0, 1, 4)
    left = await node.members.UpsertMembers(
        ms_pb2.UpsertMembersRequest(
            members=[member(PATIENT, start=dt.date(2000, 1, 1), end=dt.date(2024, 6, 30))]
        ),
        timeout=10,
    )
    assert left.last_sequence == 5
    page = await node.members.ListAffiliationChanges(
        ms_pb2.ListAffiliationChangesRequest(after_sequence=3, page_size=1), timeout=10
    )
    assert [c.sequence for c in page.changes] == [4]
    assert page.last_sequence == 5
    last = await node.members.ListAffiliationChanges(
        ms_pb2.ListAffiliationChangesRequest(after_sequence=4), timeout=10
    )
    assert [(c.niss, c.periods[0].end.month) for c in last.changes] == [(PATIENT, 6)]


async def test_watch_replays_the_backlog_then_streams_live_changes_until_stop(
    database_url: str, pg_admin_url: str
) -> None:
    node = await start_node(database_url)
    try:
        await seed(node)
        watcher = open_channel(f"127.0.0.1:{node.app.port}", identity="hub")
        stub = ms_grpc.MembershipServiceStub(watcher)
        call = stub.WatchAffiliationChanges(ms_pb2.WatchAffiliationChangesRequest(after_sequence=2))
        seen = [(await call.read()).change.sequence for _ in range(2)]
        assert seen == [3, 4]
        newcomer = make_niss(dt.date(2001, 4, 4), 12)
        await node.members.UpsertMembers(
            ms_pb2.UpsertMembersRequest(members=[member(newcomer, start=dt.date(2024, 1, 1))]), timeout=10
        )
        live = await asyncio.wait_for(call.read(), 5)
        assert (live.change.sequence, live.change.niss) == (5, newcomer)
    finally:
        await stop_node(node)
    try:
        # The stop ends the stream (the node closes its watches); it does not hang.
        ended = await asyncio.wait_for(call.code(), 5)
        assert ended in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    finally:
        await watcher.close()


async def test_upsert_members_rejects_bad_input_with_field_paths_and_stores_nothing(node: Node) -> None:
    bad = member(make_niss(dt.date(1980, 1, 1), 5), start=dt.date(2020, 1, 1))
    bad.patient.member.mutuality_code = "300"
    backwards = member(make_niss(dt.date(1980, 1, 2), 7), start=dt.date(2020, 1, 1), end=dt.date(2019, 1, 1))
    error = await rpc_error(
        node.members.UpsertMembers(ms_pb2.UpsertMembersRequest(members=[bad, backwards]), timeout=10)
    )
    assert [(v.field, v.code) for v in error.violations] == [
        ("members[0].patient.member.mutuality_code", 155),
        ("members[1].affiliations[0].end", 113),
    ]
    feed = await node.members.ListAffiliationChanges(ms_pb2.ListAffiliationChangesRequest(), timeout=10)
    assert feed.last_sequence == 4


async def test_reference_data_tariffs_and_organisation_checks(node: Node) -> None:
    tariffs = await node.reference.ListTariffs(rd_pb2.ListTariffsRequest(year=2016), timeout=10)
    assert {(t.category, t.amount.amount) for t in tariffs.tariffs} == {
        ("STANDARD", "30.00"),
        ("CHRONIC_45_74", "55.00"),
    }
    error = await rpc_error(
        node.reference.UpsertOrganisations(
            rd_pb2.UpsertOrganisationsRequest(
                organisations=[rd_pb2.KnownOrganisation(organisation=common_pb2.Provider(inami=GP_A))]
            ),
            timeout=10,
        )
    )
    assert error.codes == (130,)


async def test_concurrent_notifications_for_one_patient_are_serialised(node: Node) -> None:
    calls = [
        node.notify(gp, PATIENT, contact=TODAY - dt.timedelta(days=days), reference=f"c-{gp}")
        for gp, days in ((GP_A, 3), (GP_B, 1))
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException)]
    assert ok, results
    async with node.app.sessions() as session:
        holdings = list(
            (await session.execute(select(m.HoldingRow).where(m.HoldingRow.niss == PATIENT))).scalars()
        )
        payments = list(
            (await session.execute(select(m.PaymentRow).where(m.PaymentRow.patient == PATIENT))).scalars()
        )
    assert len({h.seq for h in holdings}) == len(holdings) == len(ok)
    assert len([h for h in holdings if h.status == "ACTIVE"]) == 1
    assert len([p for p in payments if not p.recovered]) == 1
    assert sum(1 for r in ok if r.payment == dmg_pb2.PAYMENT_INDICATOR_WITH_PAYMENT) == 1
