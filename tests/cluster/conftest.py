"""The cluster fixtures: one local cluster per test, on SQLite files and on PostgreSQL (``cluster``), or on
SQLite files only (``sqlite_cluster``) for what the database back end has no part in (processes killed and
paused, the clock moved: their database side is tested on both back ends by the integration tests); and
one SQLite cluster for several tests (``shared_cluster``), for the tests that neither kill its
processes nor stop it, each with providers and patients of its own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.cluster_support import SHARED_TODAY, Cluster, drop_databases, free_base_port


@pytest.fixture
def sqlite_cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "data", free_base_port())
    try:
        yield c
    finally:
        c.down()


@pytest.fixture(scope="session")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, dict[str, Any]]]:
    """One cluster under mutual TLS started at :data:`SHARED_TODAY`, and its description, for the tests of
    SHARED (tests/conftest.py), which run one after the other in that order at the end of the session:
    none kills a process or stops the cluster, each uses providers and patients no other one touches (the
    demo actors belong to one of them), and only the last one moves the clock. Stopped after the last of
    them."""
    c = Cluster(tmp_path_factory.mktemp("shared") / "data", free_base_port())
    try:
        yield c, c.up(SHARED_TODAY)
    finally:
        c.down()


@pytest.fixture(params=["sqlite", "postgres"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    if request.param == "sqlite":
        c = Cluster(tmp_path / "data", free_base_port())
        try:
            yield c
        finally:
            c.down()
        return
    admin: str = request.getfixturevalue("pg_admin_url")
    prefix = f"mcn_t{uuid.uuid4().hex[:10]}_"
    c = Cluster(tmp_path / "data", free_base_port(), admin.rsplit("/", 1)[0] + f"/{prefix}{{name}}")
    try:
        yield c
    finally:
        try:
            c.down()
        finally:
            dropped = drop_databases(admin, prefix)
    # One database per process: eHealth, the hub and each of the seven insurers.
    assert len(dropped) == 9, dropped
