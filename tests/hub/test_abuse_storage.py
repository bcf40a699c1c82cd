"""The hub's abuse registry on SQLite and PostgreSQL (hub/abuse.py, migration 0005): a strike and its notice
are written in one transaction, the registry is rebuilt from the table at start (an exclusion holds across a
restart), an insurer's finding delivered twice is one strike, and a notice without its payload is stored but
counts for nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import grpc
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlmodel import col, select

from hub.abuse import EXCLUDED_REASON, AbuseConfig, AbuseControl
from hub.mailbox import MailboxNotifier, MailboxRepository
from hub.models import AbuseStrike, StoredMessage
from mycarenet_core import telemetry
from mycarenet_core.clock import FixedClock
from mycarenet_core.db import create_engine, session_factory, transaction
from mycarenet_core.errors import MeshError
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from mycarenet_core.migrations import HISTORIES, upgrade

NOW = dt.datetime(2025, 3, 4, 9, 0, tzinfo=dt.UTC)
GP = "11000095003"
CONFIG = AbuseConfig(window=dt.timedelta(minutes=10), max_distinct_patients=2, exclusion=dt.timedelta(days=7))


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await upgrade(engine, HISTORIES["hub"].script_location)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


async def control(sessions: async_sessionmaker[AsyncSession], clock: FixedClock) -> AbuseControl:
    made = AbuseControl(sessions, MailboxNotifier(), clock, CONFIG)
    await made.load()
    return made


async def strikes(sessions: async_sessionmaker[AsyncSession]) -> list[tuple[str, str, str]]:
    async with sessions() as session:
        rows = await session.execute(
            select(AbuseStrike.source_key, AbuseStrike.consequence, AbuseStrike.finding).order_by(
                col(AbuseStrike.id)
            )
        )
        return [(str(k), str(c), str(f)) for k, c, f in rows.all()]


def finding(message_id: str, *, payload: bool = True) -> dmg_pb2.MailboxMessage:
    message = dmg_pb2.MailboxMessage(
        message_id=message_id, kind=dmg_pb2.MESSAGE_KIND_USAGE_NOTICE, insurer_code="300", recipient_inami=GP
    )
    if payload:
        message.usage_notice.CopyFrom(
            dmg_pb2.UsageNotice(finding=dmg_pb2.USAGE_FINDING_UNFOLLOWED_CONSULTATIONS, unfollowed_count=9)
        )
    return message


async def deliver(
    abuse: AbuseControl, sessions: async_sessionmaker[AsyncSession], *messages: dmg_pb2.MailboxMessage
) -> None:
    now = abuse.clock.now()
    async with abuse.findings_of("300", messages, now) as found, transaction(sessions) as session:
        await found.record(session)
        await MailboxRepository(session).store(list(messages), now)


async def test_strikes_survive_a_restart_and_exclude(sessions: async_sessionmaker[AsyncSession]) -> None:
    clock = FixedClock(NOW)
    abuse = await control(sessions, clock)
    for niss in ("p1", "p2", "p3"):  # three distinct patients in ten minutes: a warning
        await abuse.consulted(GP, niss, clock.now())
    assert [c for _, c, _ in await strikes(sessions)] == ["WARNING"]
    async with sessions() as session:
        [(_, notice)] = await MailboxRepository(session).pending(GP, [dmg_pb2.MESSAGE_KIND_USAGE_NOTICE])
    assert notice.usage_notice.consequence == dmg_pb2.USAGE_CONSEQUENCE_WARNING
    abuse.admit(GP, clock.now())

    clock.advance(dt.timedelta(days=2))
    await deliver(abuse, sessions, finding("300-usage-1"))
    await deliver(abuse, sessions, finding("300-usage-1"))  # the relay's retry: no second strike
    assert [(k, c) for k, c, _ in await strikes(sessions)][1:] == [("300:300-usage-1", "EXCLUSION")]

    # A new process: the registry is the table's.
    again = await control(sessions, clock)
    with pytest.raises(MeshError) as caught:
        again.admit(GP, clock.now())
    assert (caught.value.status, caught.value.reason) == (grpc.StatusCode.PERMISSION_DENIED, EXCLUDED_REASON)
    until = dt.datetime.fromisoformat(caught.value.metadata["excluded_until"])
    assert until == NOW + dt.timedelta(days=2 + 7)
    assert again.excluded(clock.now()) == {GP: until}
    again.admit("19000122003", clock.now())  # nobody else
    clock.advance(dt.timedelta(days=7))
    again.admit(GP, clock.now())
    assert again.excluded(clock.now()) == {}


async def test_a_notice_without_its_payload_is_stored_but_is_no_strike(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    abuse = await control(sessions, FixedClock(NOW))
    await deliver(abuse, sessions, finding("300-odd", payload=False))
    assert await strikes(sessions) == []
    async with sessions() as session:
        stored = (await session.execute(select(StoredMessage.message_id))).scalars().all()
    assert list(stored) == ["300-odd"]


async def test_the_operator_sees_findings_refusals_and_exclusions_as_metrics(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    reader = InMemoryMetricReader()
    tel = telemetry.setup("hub", metric_readers=[reader])
    try:
        clock = FixedClock(NOW)
        abuse = AbuseControl(sessions, MailboxNotifier(), clock, CONFIG, meter=tel.meter)
        await abuse.load()
        for niss in ("p1", "p2", "p3"):
            await abuse.consulted(GP, niss, clock.now())
        await deliver(abuse, sessions, finding("300-usage-9"))
        with pytest.raises(MeshError):
            abuse.admit(GP, clock.now())
        data = reader.get_metrics_data()
        assert data is not None
        points: dict[str, list[tuple[dict[str, object], float]]] = {}
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points[metric.name] = [
                        (dict(p.attributes or {}), p.value)  # type: ignore[union-attr]
                        for p in metric.data.data_points
                    ]
        assert sorted(points["mycarenet.abuse.findings"], key=repr) == [
            ({"finding": "DISTINCT_PATIENTS", "consequence": "WARNING"}, 1),
            ({"finding": "UNFOLLOWED_CONSULTATIONS", "consequence": "EXCLUSION"}, 1),
        ]
        assert [v for _, v in points["mycarenet.abuse.refusals"]] == [1]
        assert [v for _, v in points["mycarenet.abuse.excluded"]] == [1]
    finally:
        tel.shutdown()
