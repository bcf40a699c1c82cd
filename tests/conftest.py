"""Shared fixtures and the classification of every test.

Databases: ``database_url`` gives each test an empty database, once on SQLite and once on PostgreSQL. The
modules in :data:`DATABASE_PER_MODULE` (marker ``database_per_module``) get one database per back end for
the whole module instead, emptied before each test (every table but the ``alembic_version_*`` ones): a
test sees what a new database looks like once its service has migrated it, without paying CREATE DATABASE,
the migrations and DROP DATABASE again. ``module_database_url`` is one database per module and back end
that is never emptied (its tests share their state).

Markers, applied here to every collected test (never by hand, unless a test overrides its module's class):

* ``cluster``: starts a local cluster (``mycarenet-cluster up``, processes of their own): the modules in
  :data:`CLUSTER` and any test using a cluster fixture (:data:`CLUSTER_FIXTURES`);
* ``integration``: starts servers in process or touches a database: a test using a database fixture
  (:data:`DATABASE_FIXTURES`) and the modules in :data:`INTEGRATION`;
* ``unit``: the modules in :data:`UNIT`; such a test that starts a gRPC server or opens a database fails
  (it belongs in :data:`INTEGRATION`).

A test in none of the lists is a collection error: a new module is classified when it is added.
``postgres`` is added to every test that runs on the PostgreSQL back end.

The quick loop is ``./dev test --quick``: ``pytest -m QUICK -x`` (:data:`QUICK`: the unit and integration
tests on SQLite, without the few :data:`SLOW` ones), under 2 minutes on a quiet 2-core box.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

PG_ADMIN_URL = os.environ.get("MCN_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TESTS = Path(__file__).resolve().parent
T = TypeVar("T")

# --- classification -------------------------------------------------------------------------------------
# Paths relative to tests/; an entry is a folder, a module or one test of it ("module.py::test_name"). A
# module goes where most of its tests belong; a test using a database fixture is integration wherever its
# module is listed.

CLUSTER = {
    "bench/test_bench_smoke.py",
    "cluster/test_admin_path.py",
    "cluster/test_cluster_invoicing.py",
    "cluster/test_cluster_story.py",
    "cluster/test_crash.py",
    "cluster/test_scenarios.py",
    "cluster/test_node_client.py",
    "cluster/test_pharmacy.py",
    "cluster/test_sandbox_clock.py",
    "cluster/test_sandbox_chaos.py",
    "telemetry/test_cluster_telemetry.py",
}
CLUSTER_FIXTURES = {"cluster", "insecure_cluster", "shared_cluster", "sqlite_cluster"}
# The tests on the one cluster of ``shared_cluster`` (tests/cluster/conftest.py), in the order they run, at
# the end of the session, one after the other: none kills a process nor stops the cluster, each has providers
# and patients of its own (the demo actors are the Node client's), and the last one moves the clock. A test
# using that fixture and not listed here is a collection error.
SHARED = [
    "cluster/test_admin_path.py::test_the_admin_path_under_mutual_tls",
    "cluster/test_node_client.py::test_node_client_plays_login_consult_notify_mailbox",
    # last: it moves the clock
    "cluster/test_cluster_invoicing.py::test_s1_by_efact_and_eattest_and_the_check_after_payment",
]
DATABASE_FIXTURES = {"database_url", "module_database_url"}
INTEGRATION = {
    # in-process servers (the mesh, one service, stand-ins), proxies, subprocesses of the bench
    "hub/test_abuse.py",
    "bench/test_bench_faults.py",
    "bench/test_bench_floor.py",
    "bench/test_bench_report.py::test_baseline_in_process",
    "core/test_audit_writer.py",
    "core/test_chaos_agent.py",
    "core/test_health_port.py",
    "core/test_hot_reads.py",
    "core/test_keepalive.py",
    "core/test_migrations.py",
    "core/test_patient_key.py",
    "core/test_server_bootstrap.py",
    "core/test_skeleton.py",
    "core/test_telemetry.py",
    "core/test_write_gate.py",
    "ehealth/test_ehealth_trust.py",
    "hub/test_authorization.py",
    "hub/test_cancelled_writes.py",
    "hub/test_consult_golden.py",
    "hub/test_hub_smoke.py",
    "hub/test_insurability.py",
    "hub/test_intake_mtls.py",
    "hub/test_invoicing.py",
    "hub/test_mailbox.py",
    "hub/test_patient_list.py",
    "hub/test_relation_cache.py",
    "hub/test_relation_move.py",
    "hub/test_routing_faults.py",
    "hub/test_tokens_throttle.py",
    "hub/test_trust.py",
    "oa_node/test_node_cadastre.py",
    "oa_node/test_node_cadastre_ehealth.py",
    "oa_node/test_node_holder_feed.py",
    "oa_node/test_node_peers.py",
    "oa_node/test_node_trust.py",
    "oa_node/test_node_year_ends.py",
    "scenario/test_scenarios_in_process.py",
    "sdk",  # the SDK's in-process mesh, as vendors use it
    "telemetry/test_mesh_telemetry.py",
    "trust/test_authorization_matrix.py",
    "trust/test_input_limits.py",
    "trust/test_rpc_fuzz.py",
}
UNIT = {
    "hub/test_abuse_rules.py",
    "oa_node/test_rules_purpose.py",
    "bench/test_bench_load.py",
    "bench/test_bench_report.py",
    "bench/test_bench_stats.py",
    "cluster/test_admin_units.py",
    "cluster/test_population.py",
    "core/test_generated_code.py",
    "core/test_test_clock.py",
    "deploy/test_chaos_engine.py",
    "deploy/test_cluster_plan.py",
    "deploy/test_dockerfile.py",
    "deploy/test_manifests.py",
    "deploy/test_secrets.py",
    "ehealth/test_ehealth_rules.py",
    "ehealth/test_ehealth_tokens.py",
    "hub/test_auth_unit.py",
    "hub/test_routing.py",  # its database tests are integration (database_url)
    "oa_node/test_node_settings.py",
    "oa_node/test_rules_fee_checks.py",
    "oa_node/test_rules_focused.py",
    "oa_node/test_rules_payment_dates.py",
    "oa_node/test_rules_holder_moves.py",
    "oa_node/test_rules_insurability.py",
    "oa_node/test_rules_properties.py",
    "oa_node/test_rules_scenarios.py",
    "scenario/test_scenario_files.py",
    "test_cli_help.py",
    "test_identifiers.py",
    "test_markers.py",
    "trust/test_trust_table.py",
}
KINDS = ("unit", "integration", "cluster")
# The unit and integration tests that take 2 s or more on a quiet box (marker ``slow``): left out of the quick
# loop with the PostgreSQL runs of the others (``./dev test --quick``); every run of the whole suite has them.
SLOW = {
    "bench/test_bench_faults.py::test_pause_then_resume_and_kill",
    "ehealth/test_ehealth_holder_feed.py::test_an_insurer_down_then_back_is_caught_up",
    "hub/test_consult_golden.py::test_a_sample_of_consults_and_notifies_answers_as_before",
    "hub/test_patient_list.py::test_list_across_seven_oas_with_one_failing_then_recovering",
    "oa_node/test_node_trust.py::test_every_rpc_answers_exactly_the_callers_the_table_grants",
    "scenario/test_scenarios_in_process.py::test_the_twelve_stories_pass_on_the_in_process_mesh",
    "oa_node/test_node_year_ends.py::test_time_running_past_midnight_on_31_december_runs_the_year_end",
    "telemetry/test_mesh_telemetry.py::test_fan_out_errors_per_oa_metrics_and_no_niss_in_clear",
    "trust/test_authorization_matrix.py::test_every_rpc_of_every_service_for_every_kind_of_caller",
    "trust/test_rpc_fuzz.py::test_every_rpc_answers_generated_input_without_internal_errors_or_writes",
    "sdk/test_pharmacy_rights.py::test_the_worked_examples_of_seed_003_end_to_end",
    "oa_node/test_node_cadastre_ehealth.py::test_one_registration_at_the_cadastre_lets_a_gp_enrol_at_all_seven_insurers",
    "core/test_keepalive.py::test_an_idle_watch_stream_keeps_its_connection",
    "sdk/test_insurability_callers.py::test_every_caller_kind_on_both_insurability_services",
    "hub/test_routing_faults.py::test_an_oa_down_fails_fast_for_its_patients_only_and_recovers",
    "hub/test_tokens_throttle.py::test_failed_attempts_give_their_tokens_back_and_a_patient_list_costs_one_per_insurer",
    "sdk/test_pharmacy_session.py::test_a_pharmacy_session_opened_by_its_pharmacist",
    "hub/test_invoicing.py::test_no_acknowledgement_while_an_insurer_of_the_batch_is_down_then_a_repost_completes",
    "hub/test_relation_move.py::test_a_notify_through_the_hub_moves_the_dmg_relation_through_the_insurers_feed",
    "core/test_patient_key.py::test_a_server_exporting_traces_without_a_key_refuses_to_start",
    "hub/test_relation_move.py::test_a_notify_the_insurer_committed_after_the_hub_died_moves_the_relation_all_the_same",
    "bench/test_bench_floor.py::test_the_floor_runs_in_child_processes_over_mutual_tls_with_cpu_per_process",
    "ehealth/test_ehealth_holder_feed.py::test_live_bursts_and_an_unusable_change",
    "bench/test_bench_report.py::test_baseline_in_process",
    "sdk/test_medical_house.py::test_a_medical_house_enrols_consults_and_notifies_its_contracted_patient",
    "sdk/test_in_process_mesh.py::test_under_mutual_tls_and_with_an_insurer_down_then_back",
    "sdk/test_invoicing_sdk.py::test_s1_by_efact_then_by_eattest",
    "sdk/test_in_process_mesh.py::test_a_vendor_plays_consult_notify_and_the_mailbox",
}
QUICK = "(unit or integration) and not postgres and not slow"

# Modules whose every database is the one of the service their tests start (migrated to head by it): one
# database per back end for the module, emptied before each test (marker ``database_per_module``). Not for
# modules that build databases at older revisions (migration tests, v0001/v0002 fixtures).
# MCN_TEST_FRESH_DATABASES=1 gives every test a new database again (to rule the sharing out).
DATABASE_PER_MODULE = {
    "ehealth/test_ehealth_audit.py",
    "ehealth/test_ehealth_auth.py",
    "ehealth/test_ehealth_cadastre.py",
    "ehealth/test_ehealth_check_path.py",
    "ehealth/test_ehealth_holder_feed.py",
    "ehealth/test_ehealth_mandates.py",
    "ehealth/test_ehealth_relations.py",
    "ehealth/test_ehealth_sessions.py",
    "ehealth/test_ehealth_trust.py",
    "hub/test_routing.py",
    "hub/test_storage.py",
    "oa_node/test_node_cadastre.py",
    "oa_node/test_node_controls.py",
    "oa_node/test_node_dmg.py",
    "oa_node/test_node_holder_feed.py",
    "oa_node/test_node_intake.py",
    "oa_node/test_node_payments.py",
    "oa_node/test_node_invoicing.py",
    "oa_node/test_node_members.py",
    "oa_node/test_node_outbox.py",
    "oa_node/test_node_trust.py",
}
FRESH_DATABASES = os.environ.get("MCN_TEST_FRESH_DATABASES", "") not in ("", "0")


def _listed(entries: set[str], module: str, test: str) -> bool:
    if f"{module}::{test}" in entries or module in entries:
        return True
    return any(module.startswith(entry + "/") for entry in entries)  # a whole folder


def classify(module: str, test: str, fixtures: set[str]) -> str | None:
    """``cluster``, ``integration`` or ``unit`` for one test (``module`` relative to tests/, ``test`` its
    function name); None when it is in no list."""
    if fixtures & CLUSTER_FIXTURES or _listed(CLUSTER, module, test):
        return "cluster"
    if fixtures & DATABASE_FIXTURES or _listed(INTEGRATION, module, test):
        return "integration"
    if _listed(UNIT, module, test):
        return "unit"
    return None


def stale_entries() -> list[str]:
    """List entries that name no file or folder any more."""
    out = []
    for entry in sorted(CLUSTER | INTEGRATION | UNIT | DATABASE_PER_MODULE | SLOW | set(SHARED)):
        if not (TESTS / entry.split("::")[0]).exists():
            out.append(entry)
    return out


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[Any]) -> None:
    stale = stale_entries()
    if stale:
        raise pytest.UsageError(f"tests/conftest.py lists tests that do not exist any more: {stale}")
    unknown: set[str] = set()
    shared: dict[Any, int] = {}  # the tests on the shared cluster: their place in SHARED
    for item in items:
        path = Path(str(item.path)).resolve()
        if not path.is_relative_to(TESTS):
            continue  # not ours (e.g. a doctest of another root)
        module = path.relative_to(TESTS).as_posix()
        test = getattr(item, "originalname", None) or item.name.split("[")[0]
        if "shared_cluster" in getattr(item, "fixturenames", ()):
            if f"{module}::{test}" not in SHARED:
                raise pytest.UsageError(
                    f"{module}::{test} uses shared_cluster but is not listed in SHARED (tests/conftest.py), "
                    "in the order the shared cluster's tests run"
                )
            shared[item] = SHARED.index(f"{module}::{test}")
        given = [kind for kind in KINDS if item.get_closest_marker(kind) is not None]
        kind = given[0] if given else classify(module, test, set(getattr(item, "fixturenames", ())))
        if kind is None:
            unknown.add(module)
            continue
        if not given:
            item.add_marker(kind)
        if _listed(SLOW, module, test):
            item.add_marker("slow")
        if module in DATABASE_PER_MODULE and not FRESH_DATABASES:
            item.add_marker("database_per_module")
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "postgres" in callspec.params.values():
            item.add_marker("postgres")
    if unknown:
        raise pytest.UsageError(
            "tests not classified as unit, integration or cluster (add them to UNIT, INTEGRATION or "
            f"CLUSTER in tests/conftest.py): {', '.join(sorted(unknown))}"
        )
    # The shared cluster's tests last, in their order: the cluster starts before the first and stops after the
    # last (the end of the session), and the clock moves only once every other one is done with it.
    items[:] = [item for item in items if item not in shared] + sorted(shared, key=shared.__getitem__)


class NotAUnitTest(AssertionError):
    pass


@pytest.fixture(autouse=True)
def _unit_tests_stay_units(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``unit`` test may not start a gRPC server nor open a database: it would belong in INTEGRATION."""
    if request.node.get_closest_marker("unit") is None:
        return
    import aiosqlite
    import asyncpg
    import grpc

    def refuse(what: str) -> Callable[..., Any]:
        def refused(*args: Any, **kwargs: Any) -> Any:
            raise NotAUnitTest(
                f"{request.node.nodeid} is classified 'unit' but {what}: list it under INTEGRATION in "
                "tests/conftest.py"
            )

        return refused

    monkeypatch.setattr(grpc.aio, "server", refuse("starts a gRPC server"))
    monkeypatch.setattr(grpc, "server", refuse("starts a gRPC server"))
    monkeypatch.setattr(aiosqlite, "connect", refuse("opens a SQLite database"))
    monkeypatch.setattr(asyncpg, "connect", refuse("connects to PostgreSQL"))
    monkeypatch.setattr(asyncpg, "create_pool", refuse("connects to PostgreSQL"))


# --- PostgreSQL ---------------------------------------------------------------------------------------


def _in_thread(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on its own loop in a worker thread: callable from sync fixtures and from inside a
    running event loop alike."""

    async def run() -> T:
        return await make()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def _pg_available() -> bool:
    import asyncpg

    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(PG_ADMIN_URL, timeout=3)
        except (OSError, asyncpg.PostgresError):
            return False
        await conn.close()
        return True

    return _in_thread(probe)


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """The PostgreSQL server; its absence fails the run (CI must exercise PostgreSQL, never skip it)."""
    if not _pg_available():
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL} (see README: start it, or set MCN_TEST_PG_URL)"
        )
    return PG_ADMIN_URL


async def _create_pg_database(admin: str) -> str:
    """A new empty database; its SQLAlchemy async URL."""
    import asyncpg

    name = f"mcn_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{name}"


async def _drop_pg_database(admin: str, url: str) -> None:
    import asyncpg

    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _empty_pg_database(url: str) -> None:
    """Every table but the migration histories' (``alembic_version_<service>``) emptied, identities
    restarted: the database as its migrations leave it (none inserts rows of its own into an empty
    database; what a service writes at start, it writes again)."""
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await conn.execute("SET lock_timeout = '10s'")
        tables = await conn.fetch(
            "SELECT quote_ident(tablename) AS t FROM pg_tables "
            "WHERE schemaname = 'public' AND tablename NOT LIKE 'alembic_version%'"
        )
        if tables:
            names = ", ".join(row["t"] for row in tables)
            await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


def _empty_sqlite_database(path: Path) -> None:
    if not path.exists():
        return
    with sqlite3.connect(path) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                "AND name NOT LIKE 'alembic_version%'"
            )
        ]
        for table in tables:
            conn.execute(f'DELETE FROM "{table}"')
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone():
            conn.execute("DELETE FROM sqlite_sequence")
    conn.close()


class ModuleDatabases:
    """The databases of one test module, one per back end, made on first use and dropped after the
    module."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.urls: dict[str, str] = {}
        self.admin: str | None = None

    def url(self, backend: str, request: pytest.FixtureRequest) -> str:
        if backend not in self.urls:
            if backend == "sqlite":
                self.urls[backend] = f"sqlite+aiosqlite:///{self.folder / 'module.db'}"
            else:
                admin: str = request.getfixturevalue("pg_admin_url")
                self.admin = admin
                self.urls[backend] = _in_thread(lambda: _create_pg_database(admin))
        return self.urls[backend]

    async def emptied(self, backend: str, request: pytest.FixtureRequest) -> str:
        url = self.url(backend, request)
        if backend == "sqlite":
            _empty_sqlite_database(self.folder / "module.db")
            return url
        import asyncpg

        try:
            await _empty_pg_database(url)
        except asyncpg.PostgresError:  # e.g. a lock a previous test left behind: a new database then
            assert self.admin is not None
            await _drop_pg_database(self.admin, url)
            self.urls[backend] = url = await _create_pg_database(self.admin)
        return url

    def drop(self) -> None:
        postgres = self.urls.get("postgres")
        if postgres is not None and self.admin is not None:
            admin = self.admin
            _in_thread(lambda: _drop_pg_database(admin, postgres))


@pytest.fixture(scope="module")
def _module_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleDatabases]:
    databases = ModuleDatabases(tmp_path_factory.mktemp("module-db"))
    try:
        yield databases
    finally:
        databases.drop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def module_database_url(request: pytest.FixtureRequest, _module_databases: ModuleDatabases) -> str:
    """One database per module and back end, shared by its tests as they leave it (never emptied)."""
    return _module_databases.url(str(request.param), request)


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, _module_databases: ModuleDatabases
) -> AsyncIterator[str]:
    """An empty database URL (SQLAlchemy async form), once on SQLite and once on PostgreSQL: a new one per
    test, or the module's, emptied, when the module is marked ``database_per_module``."""
    backend = str(request.param)
    if request.node.get_closest_marker("database_per_module") is not None:
        yield await _module_databases.emptied(backend, request)
        return
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    admin = request.getfixturevalue("pg_admin_url")
    url = await _create_pg_database(admin)
    try:
        yield url
    finally:
        await _drop_pg_database(admin, url)
