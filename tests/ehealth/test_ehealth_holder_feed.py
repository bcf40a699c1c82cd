"""The one durable channel of the DMG relation move (issue 13): eHealth follows each insurer's holder-change
feed — catch-up with ListHolderChanges from its stored position, then WatchHolderChanges — and moves the DMG
therapeutic relation from each change exactly once: the new holder's relation from the start date, the
previous holder's ended the day before, no holder = the previous holder's ended. Here against a stand-in
insurer (the real OA node: tests/ehealth/test_ehealth_holder_feed_oa.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from ehealth_support import GP, GP2, NOW, PATIENT, PATIENT2, Stubs, from_pdate, pdate
from holder_feed_support import StandInInsurer
from mycarenet_cluster import pki

from ehealth.app import EhealthApp
from ehealth.holders import AUDIT_METHOD
from ehealth.models import AuditRow, DmgTransferRow, HolderFeedPositionRow
from mycarenet_core.channels import client_credentials, open_channel, server_credentials
from mycarenet_core.clock import FixedClock
from mycarenet_core.db import create_engine
from mycarenet_core.gen.mycarenet.ehealth.v1 import therapeutic_relation_pb2 as tr
from mycarenet_core.gen.mycarenet.oa.v1 import holding_feed_service_pb2 as feed

D = dt.date
Dmg = tuple[str, D | None, D | None]


@pytest.fixture
async def insurer() -> AsyncIterator[StandInInsurer]:
    stand_in = StandInInsurer("100")
    await stand_in.start()
    try:
        yield stand_in
    finally:
        await stand_in.stop()


async def start_ehealth(database_url: str, targets: dict[str, str]) -> EhealthApp:
    app = await EhealthApp.create(database_url=database_url, clock=FixedClock(NOW), oa_targets=targets)
    await app.start()
    return app


async def dmg_relations(app: EhealthApp, patient: str = PATIENT) -> list[Dmg]:
    """The patient's DMG relations (holder, start, end) in start order, as the administrator lists them."""
    async with open_channel(f"127.0.0.1:{app.port}", identity="admin") as channel:
        listed = await Stubs(channel).relations.ListRelations(
            tr.ListRelationsRequest(patient_niss=patient, page_size=1000), timeout=10
        )
    return [
        (r.provider_inami, from_pdate(r.period.start), from_pdate(r.period.end))
        for r in listed.relations
        if r.proof == tr.RELATION_PROOF_DMG
    ]


async def check(app: EhealthApp, provider: str, day: D, patient: str = PATIENT) -> bool:
    async with open_channel(f"127.0.0.1:{app.port}", identity="hub") as channel:
        reply = await Stubs(channel).relations.CheckRelation(
            tr.CheckRelationRequest(provider_inami=provider, patient_niss=patient, date=pdate(day)),
            timeout=10,
        )
    return bool(reply.exists and reply.relation.proof == tr.RELATION_PROOF_DMG)


async def stored(database_url: str) -> tuple[dict[str, int], list[str], list[tuple[str, str, str]]]:
    """(positions per insurer, applied source references, feed audit rows (certificate, outcome, reason))."""
    position = HolderFeedPositionRow.__table__  # type: ignore[attr-defined]
    transfer = DmgTransferRow.__table__  # type: ignore[attr-defined]
    audit = AuditRow.__table__  # type: ignore[attr-defined]
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            positions = await conn.execute(sa.select(position.c.insurer_code, position.c.applied_sequence))
            references = await conn.execute(sa.select(transfer.c.source_reference))
            rows = await conn.execute(
                sa.select(audit.c.certificate, audit.c.outcome, audit.c.reason)
                .where(audit.c.method == AUDIT_METHOD)
                .order_by(audit.c.id)
            )
            return (
                {code: int(sequence) for code, sequence in positions.all()},
                sorted(references.scalars()),
                [(c, o, r) for c, o, r in rows.all()],
            )
    finally:
        await engine.dispose()


async def test_a_holder_change_moves_the_dmg_relation(
    pg_admin_url: str, database_url: str, insurer: StandInInsurer
) -> None:
    changes = insurer.feed
    changes.add(PATIENT, GP, "", D(2024, 6, 1))  # before eHealth starts: caught up
    app = await start_ehealth(database_url, {"100": insurer.target})
    try:
        follower = app.followers["100"]
        await follower.wait_for(1, within=10)
        assert await dmg_relations(app) == [(GP, D(2024, 6, 1), None)]
        assert await check(app, GP, D(2025, 1, 1))

        changes.add(PATIENT, GP2, GP, D(2025, 3, 1))  # live: the watch
        await follower.wait_for(2, within=10)
        assert await dmg_relations(app) == [(GP, D(2024, 6, 1), D(2025, 2, 28)), (GP2, D(2025, 3, 1), None)]
        assert not await check(app, GP, D(2025, 3, 1))
        assert await check(app, GP2, D(2025, 3, 1))
        assert follower.following

        changes.add(PATIENT, "", GP2, D(2025, 6, 1))  # the holding ended: nobody holds it from then on
        await follower.wait_for(3, within=10)
        assert await dmg_relations(app) == [
            (GP, D(2024, 6, 1), D(2025, 2, 28)),
            (GP2, D(2025, 3, 1), D(2025, 5, 31)),
        ]
        assert not await check(app, GP2, D(2025, 6, 1))

        # The hub's cache learns every move from the register's change log.
        async with open_channel(f"127.0.0.1:{app.port}", identity="hub") as channel:
            log = await Stubs(channel).relations.ListRelationChanges(
                tr.ListRelationChangesRequest(), timeout=10
            )
        assert [(c.relation.provider_inami, from_pdate(c.relation.period.end)) for c in log.changes] == [
            (GP, D(2025, 2, 28)),
            (GP2, D(2025, 5, 31)),
        ]
    finally:
        await app.stop(0)
    assert set(changes.callers) == {"ehealth"}  # eHealth called as itself, let in by the insurer's table
    positions, references, audit = await stored(database_url)
    assert positions == {"100": 3}
    assert references == ["100:ref-1", "100:ref-2", "100:ref-3"]
    assert audit == [("oa-100", "OK", "")] * 3


async def test_the_dmg_relation_ends_with_the_holding_and_follows_its_prolongation(
    pg_admin_url: str, database_url: str, insurer: StandInInsurer
) -> None:
    """Issue 14 correction 5: the relation follows the holder on every change and ends when the holding
    ends (the change's end date); a prolongation (same holder, a later end) moves its end."""
    changes = insurer.feed
    changes.add(PATIENT, GP, "", D(2024, 6, 1), end=D(2026, 12, 31))
    app = await start_ehealth(database_url, {"100": insurer.target})
    try:
        follower = app.followers["100"]
        await follower.wait_for(1, within=10)
        assert await dmg_relations(app) == [(GP, D(2024, 6, 1), D(2026, 12, 31))]
        assert await check(app, GP, D(2026, 12, 31))
        assert not await check(app, GP, D(2027, 1, 1))  # the holding ended: so did the relation

        changes.add(PATIENT, GP, GP, D(2024, 6, 1), end=D(2027, 12, 31))  # prolonged
        await follower.wait_for(2, within=10)
        assert await dmg_relations(app) == [(GP, D(2024, 6, 1), D(2027, 12, 31))]
        assert await check(app, GP, D(2027, 6, 1))

        changes.add(PATIENT, GP2, GP, D(2025, 3, 1), end=D(2027, 12, 31))  # a takeover
        await follower.wait_for(3, within=10)
        assert await dmg_relations(app) == [
            (GP, D(2024, 6, 1), D(2025, 2, 28)),
            (GP2, D(2025, 3, 1), D(2027, 12, 31)),
        ]
        # A change whose end comes before its start is skipped, with the reason audited.
        changes.add(PATIENT2, GP, "", D(2025, 3, 1), end=D(2025, 2, 1))
        await follower.wait_for(4, within=10)
        assert await dmg_relations(app, PATIENT2) == []
    finally:
        await app.stop(0)
    _, _, audit = await stored(database_url)
    assert audit[-1] == ("oa-100", "SKIPPED", "INVALID_CHANGE")


async def test_a_restart_resumes_from_the_stored_position_and_applies_nothing_twice(
    pg_admin_url: str, database_url: str, insurer: StandInInsurer
) -> None:
    changes = insurer.feed
    changes.add(PATIENT, GP, "", D(2024, 6, 1))
    changes.add(PATIENT2, GP, "", D(2024, 7, 1))
    app = await start_ehealth(database_url, {"100": insurer.target})
    try:
        await app.followers["100"].wait_for(2, within=10)
    finally:
        await app.stop(0)

    # While eHealth is down the insurer commits a move; and from now on it replays its whole log, whatever
    # position it is asked for. A change with a new position but a reference already applied is a replay.
    changes.add(PATIENT, GP2, GP, D(2025, 3, 1))
    changes.replay_everything = True
    app = await start_ehealth(database_url, {"100": insurer.target})
    try:
        follower = app.followers["100"]
        await follower.wait_for(3, within=10)
        assert follower.applied == 1  # only what it had missed
        changes.add(PATIENT2, GP, "", D(2024, 7, 1), reference="100:ref-2")
        await follower.wait_for(4, within=10)
        assert await dmg_relations(app) == [(GP, D(2024, 6, 1), D(2025, 2, 28)), (GP2, D(2025, 3, 1), None)]
        assert await dmg_relations(app, PATIENT2) == [(GP, D(2024, 7, 1), None)]
    finally:
        await app.stop(0)
    positions, references, audit = await stored(database_url)
    assert positions == {"100": 4}
    assert references == ["100:ref-1", "100:ref-2", "100:ref-3"]
    assert [outcome for _, outcome, _ in audit] == ["OK", "OK", "OK", "REPLAYED"]


async def test_an_insurer_down_then_back_is_caught_up(
    pg_admin_url: str, database_url: str, insurer: StandInInsurer
) -> None:
    changes = insurer.feed
    changes.add(PATIENT, GP, "", D(2024, 6, 1))
    app = await start_ehealth(database_url, {"100": insurer.target})
    try:
        follower = app.followers["100"]
        await follower.wait_for(1, within=10)
        await insurer.stop()
        failures = follower.failures
        await asyncio.sleep(1.0)  # eHealth tries again, with backoff, and fails while the insurer is down
        assert follower.failures > failures
        assert not follower.following
        changes.add(PATIENT, GP2, GP, D(2025, 3, 1), publish=False)
        changes.add(PATIENT2, GP2, "", D(2025, 4, 1), publish=False)
        await insurer.start()  # same port
        await follower.wait_for(3, within=15)
        assert await dmg_relations(app) == [(GP, D(2024, 6, 1), D(2025, 2, 28)), (GP2, D(2025, 3, 1), None)]
        assert await dmg_relations(app, PATIENT2) == [(GP2, D(2025, 4, 1), None)]
    finally:
        await app.stop(0)


async def test_live_bursts_and_an_unusable_change(
    pg_admin_url: str, database_url: str, insurer: StandInInsurer
) -> None:
    changes = insurer.feed
    app = await start_ehealth(database_url, {"100": insurer.target})
    try:
        follower = app.followers["100"]
        await asyncio.wait_for(follower.caught_up.wait(), 10)
        bursts = 0
        apply = app.moves.apply

        async def counted(code: str, batch: list[feed.HolderChange]) -> tuple[int, int]:
            nonlocal bursts
            bursts += 1
            return await apply(code, batch)

        app.moves.apply = counted  # type: ignore[method-assign]
        holders = [GP, GP2]
        for i in range(200):
            previous = holders[(i + 1) % 2] if i else ""
            start = D(2024, 1, 1) + dt.timedelta(days=i)
            changes.add(PATIENT, holders[i % 2], previous, start, publish=False)
        changes.add(PATIENT2, "123", "", None, publish=False)  # a malformed holder, no start date
        changes.add(PATIENT2, GP, "", D(2025, 1, 1), publish=False)
        changes.publish()
        await follower.wait_for(202, within=30)
        assert bursts < 202  # several changes per transaction
        relations = await dmg_relations(app)
        assert len(relations) == 200
        assert relations[-1] == (GP2, D(2024, 1, 1) + dt.timedelta(days=199), None)
        assert all(end == start for _, start, end in relations[:-1])  # each ended the day before the next
        assert await dmg_relations(app, PATIENT2) == [
            (GP, D(2025, 1, 1), None)
        ]  # the bad one did not stall it
    finally:
        await app.stop(0)
    positions, _, audit = await stored(database_url)
    assert positions == {"100": 202}
    assert audit[200] == ("oa-100", "SKIPPED", "INVALID_CHANGE")
    assert [outcome for _, outcome, _ in audit].count("OK") == 201


async def test_two_appliers_on_one_database_apply_each_change_once(
    pg_admin_url: str, database_url: str, insurer: StandInInsurer
) -> None:
    first = await start_ehealth(database_url, {"100": insurer.target})
    second = await start_ehealth(database_url, {"100": insurer.target})
    try:
        for i in range(40):
            insurer.feed.add(PATIENT, [GP, GP2][i % 2], "", D(2024, 1, 1) + dt.timedelta(days=i))
        for app in (first, second):
            await app.followers["100"].wait_for(40, within=30)
    finally:
        await second.stop(0)
        await first.stop(0)
    positions, references, audit = await stored(database_url)
    assert positions == {"100": 40}
    assert len(references) == 40
    assert len(audit) == 40  # each change applied (and audited) once, by one of the two


async def test_insurers_are_followed_under_mutual_tls_with_ehealths_own_certificate(
    tmp_path: Path, database_url: str, pg_admin_url: str
) -> None:
    folder = tmp_path / "pki"
    node, own = pki.ensure_identity(folder, "oa-100"), pki.ensure_identity(folder, "ehealth")
    insurer = StandInInsurer("100", credentials=server_credentials(node.ca, node.cert, node.key))
    await insurer.start()
    insurer.feed.add(PATIENT, GP, "", D(2024, 6, 1))
    app = await EhealthApp.create(
        database_url=database_url,
        clock=FixedClock(NOW),
        credentials=server_credentials(own.ca, own.cert, own.key),
        oa_targets={"100": insurer.target},
        oa_credentials=client_credentials(own.ca, own.cert, own.key),
    )
    try:
        await app.start()
        await app.followers["100"].wait_for(1, within=10)
    finally:
        await app.stop(0)
        await insurer.stop()
    assert set(insurer.feed.callers) == {"ehealth"}  # the certificate's name, not a declaration


async def test_a_follower_added_while_running_starts_at_once(
    pg_admin_url: str, database_url: str, insurer: StandInInsurer
) -> None:
    app = await start_ehealth(database_url, {})
    try:
        insurer.feed.add(PATIENT, GP, "", D(2024, 6, 1))
        follower = app.follow_insurer("100", insurer.target)
        await follower.wait_for(1, within=10)
        with pytest.raises(ValueError, match="followed already"):
            app.follow_insurer("100", insurer.target)
    finally:
        await app.stop(0)


async def test_a_poisoned_change_never_blocks_the_feed(
    pg_admin_url: str, database_url: str, insurer: StandInInsurer
) -> None:
    """Issue 17: a reference longer than eHealth keeps is skipped at once; a change the database refuses
    (a NUL character, which PostgreSQL cannot store in text) is skipped after its attempts; the changes
    behind them are applied."""
    changes = insurer.feed
    app = await start_ehealth(database_url, {"100": insurer.target})
    try:
        follower = app.followers["100"]
        await asyncio.wait_for(follower.caught_up.wait(), 10)
        changes.add(PATIENT, GP, "", D(2024, 1, 1), reference="r" * 300, publish=False)
        changes.add(PATIENT, GP, "", D(2024, 2, 1), reference="nul-\x00-ref", publish=False)
        changes.add(PATIENT2, GP2, "", D(2024, 3, 1), publish=False)
        changes.publish()
        await follower.wait_for(3, within=30)
        assert await dmg_relations(app, PATIENT2) == [(GP2, D(2024, 3, 1), None)]
    finally:
        await app.stop(0)
    positions, references, audit = await stored(database_url)
    assert positions == {"100": 3}
    outcomes = [(outcome, reason) for _, outcome, reason in audit]
    assert outcomes[0] == ("SKIPPED", "INVALID_CHANGE")
    if database_url.startswith("postgresql"):
        assert outcomes[1:] == [("SKIPPED", "APPLY_FAILED"), ("OK", "")]
        assert references == ["100:ref-3"]
    else:  # SQLite stores a NUL: that change is applied
        assert outcomes[1:] == [("OK", ""), ("OK", "")]
