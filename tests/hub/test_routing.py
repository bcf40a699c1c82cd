"""The routing index: NISS + date → insurer, in memory and in the hub DB (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt

import pytest

from hub.models import HubBase
from hub.routing import RoutingIndex, RoutingRepository, make_span, parse_periods, spans_of
from mycarenet_core.db import create_engine, create_schema, session_factory, transaction
from mycarenet_core.identifiers import make_niss

D = dt.date
A = make_niss(D(1980, 5, 17), 33)
B = make_niss(D(1975, 1, 2), 12)
C = make_niss(D(2001, 9, 9), 101)


def test_route_by_date_across_a_change_of_mutuality() -> None:
    index = RoutingIndex()
    index.replace(int(A), "100", [make_span("100", D(2010, 1, 1), D(2019, 12, 31))])
    index.replace(int(A), "300", [make_span("300", D(2020, 1, 1), None)])
    assert index.route(int(A), D(2015, 6, 1)) == "100"
    assert index.route(int(A), D(2019, 12, 31)) == "100"
    assert index.route(int(A), D(2020, 1, 1)) == "300"
    assert index.route(int(A), D(2099, 1, 1)) == "300"
    assert index.route(int(A), D(2009, 12, 31)) is None
    assert index.route(int(B), D(2015, 6, 1)) is None


@pytest.mark.parametrize("compact_every", [1, 2, 1000])
def test_compaction_keeps_every_answer(compact_every: int) -> None:
    index = RoutingIndex(min_delta=compact_every, delta_fraction=0.0)
    people = [make_niss(D(1950 + i % 50, 1 + i % 12, 1 + i % 28), 1 + i % 900) for i in range(300)]
    for i, niss in enumerate(people):
        index.replace(int(niss), "200", [make_span("200", D(2000, 1, 1), None)])
        if i % 3 == 0:  # a third move to 500 in 2021
            index.replace(int(niss), "200", [make_span("200", D(2000, 1, 1), D(2020, 12, 31))])
            index.replace(int(niss), "500", [make_span("500", D(2021, 1, 1), None)])
        if i % 7 == 0:  # some leave everything
            index.replace(int(niss), "200", [])
            index.replace(int(niss), "500", [])
    index.compact()
    for i, niss in enumerate(people):
        if i % 7 == 0:
            assert index.route(int(niss), D(2022, 1, 1)) is None
            assert not index.known(int(niss))
        elif i % 3 == 0:
            assert index.route(int(niss), D(2020, 6, 1)) == "200"
            assert index.route(int(niss), D(2022, 1, 1)) == "500"
        else:
            assert index.route(int(niss), D(2022, 1, 1)) == "200"


def test_bulk_load_then_update() -> None:
    index = RoutingIndex()
    rows = sorted((int(n), [make_span("900", D(2000, 1, 1), None)]) for n in (A, B, C))
    index.load_sorted(rows)
    assert len(index) == 3
    index.replace(int(B), "900", [])
    index.compact()
    assert index.route(int(B), D(2020, 1, 1)) is None
    assert index.route(int(C), D(2020, 1, 1)) == "900"


async def test_repository_round_trip(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await create_schema(engine, HubBase.metadata)
        sessions = session_factory(engine)
        async with transaction(sessions) as session:
            repo = RoutingRepository(session)
            await repo.apply("100", [(A, "12.345", [(D(2010, 1, 1), D(2019, 12, 31))])], 4)
            await repo.apply(
                "300", [(A, "x77", [(D(2020, 1, 1), None)]), (B, "555", [(D(2001, 1, 1), None)])], 9
            )
        async with transaction(sessions) as session:
            repo = RoutingRepository(session)
            await repo.apply("300", [(B, "555", [])], 10)  # B leaves 300
            assert await repo.cursors() == {"100": 4, "300": 10}
            assert await repo.niss_by_member("100", "12345") == A
            assert await repo.niss_by_member("300", "X77") == A
            assert await repo.niss_by_member("300", "555") is None
        index = RoutingIndex()
        async with sessions() as session:
            assert await RoutingRepository(session).load_into(index) == 1
        assert index.route(int(A), D(2015, 1, 1)) == "100"
        assert index.route(int(A), D(2021, 1, 1)) == "300"
        assert not index.known(int(B))
    finally:
        await engine.dispose()


def test_periods_text_round_trip() -> None:
    periods = [(D(2010, 1, 1), D(2019, 12, 31)), (D(2020, 1, 1), None)]
    from hub.routing import format_periods

    assert parse_periods(format_periods(periods)) == periods
    assert spans_of("600", periods)[1][2] == 0
