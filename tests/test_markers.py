"""The classification of tests (tests/conftest.py): every test is unit, integration or cluster, and a unit
test cannot start a server nor open a database."""

from __future__ import annotations

from pathlib import Path

import aiosqlite
import asyncpg
import grpc
import pytest

from tests.conftest import QUICK, classify, stale_entries


def test_the_lists_name_only_what_exists() -> None:
    assert stale_entries() == []


def test_fixtures_and_lists_decide_the_class() -> None:
    # A cluster fixture wins; a database fixture makes a test integration wherever its module is listed.
    assert classify("cluster/test_cluster_story.py", "test_story", {"cluster", "tmp_path"}) == "cluster"
    assert classify("hub/test_routing.py", "test_anything", {"database_url"}) == "integration"
    assert classify("hub/test_routing.py", "test_bulk_load_then_update", set()) == "unit"
    assert classify("bench/test_bench_report.py", "test_baseline_in_process", set()) == "integration"
    assert classify("bench/test_bench_report.py", "test_report_structure_and_recovery", set()) == "unit"
    assert classify("sdk/test_in_process_mesh.py", "test_x", {"tmp_path"}) == "integration"
    # A module nobody classified is not guessed.
    assert classify("newdir/test_new.py", "test_new", {"tmp_path"}) is None


def test_this_test_is_marked_unit(request: pytest.FixtureRequest) -> None:
    marks = {m.name for m in request.node.iter_markers()}
    assert "unit" in marks
    assert not marks & {"integration", "cluster"}


async def test_a_unit_test_may_not_start_a_server_nor_open_a_database() -> None:
    # (NotAUnitTest, an AssertionError: pytest imports tests/conftest.py under another module name)
    with pytest.raises(AssertionError, match="starts a gRPC server"):
        grpc.aio.server()
    with pytest.raises(AssertionError, match="opens a SQLite database"):
        aiosqlite.connect(":memory:")
    with pytest.raises(AssertionError, match="connects to PostgreSQL"):
        await asyncpg.connect("postgresql://nobody@127.0.0.1:1/none")


def test_the_quick_loop_of_dev_is_the_documented_one() -> None:
    dev = (Path(__file__).resolve().parents[1] / "dev").read_text()
    assert f'quick="{QUICK}"' in dev
    assert QUICK == "(unit or integration) and not postgres and not slow"
