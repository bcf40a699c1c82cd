"""Run the mesh as real processes: eHealth, the seven OA nodes and the hub, each with its own database.

Starts them in order, waits until every one reports SERVING (grpc health), seeds a synthetic population on
first start, writes the cluster description (``<data>/cluster.json``), restarts a process that crashes,
and stops all of them cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mycarenet_cluster import chaos, pki, population, sandbox, seed, testclock
from mycarenet_cluster.chaos import ChaosEngine
from mycarenet_cluster.probe import CALLERS, DESCRIPTION, channel_credentials, health
from mycarenet_core.clock import ClockBackwards
from mycarenet_core.gen.mycarenet.sandbox.v1 import chaos_pb2
from mycarenet_core.identifiers import INSURER_CODES
from mycarenet_core.server import MeshServer
from mycarenet_core.telemetry import KEY_FILE_VARIABLE

log = logging.getLogger("mycarenet-cluster")
# The environment prefix of each role's settings.
ENV_PREFIX = {"ehealth": "MCN_EHEALTH_", "oa": "MCN_OA_", "hub": "MCN_HUB_"}
STABLE_AFTER = 30.0  # seconds up after which a crash no longer counts towards the restart back-off


@dataclass
class ClusterConfig:
    """Everything `up` can be told."""

    data: Path = Path("var/cluster")
    host: str = "127.0.0.1"
    base_port: int = 7400
    population: int = 500
    insecure: bool = False
    today: dt.date | None = None
    database_template: str | None = None  # e.g. "postgresql://postgres@127.0.0.1:5432/mcn_{name}"
    seed_value: int = 2014
    startup_timeout: float = 90.0
    otlp_endpoint: str | None = None  # OTLP/gRPC collector for every process's traces
    metrics: bool = False  # a Prometheus endpoint per process, on its gRPC port + 1000
    postgres: str | None = None  # a PostgreSQL server URL: one database per process, created when missing

    def __post_init__(self) -> None:
        if self.postgres and not self.database_template:
            self.database_template = self.postgres.rstrip("/") + "/mcn_{name}"


@dataclass
class ProcSpec:
    name: str
    role: str
    module: str
    port: int
    oa_code: str | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Running:
    spec: ProcSpec
    process: asyncio.subprocess.Process
    restarts: int = 0
    started: float = field(default_factory=time.monotonic)
    quick_crashes: int = 0  # consecutive crashes within STABLE_AFTER of a start: they grow the back-off
    hold: asyncio.Event | None = None  # a chaos fault keeps the process down until this is set


def database_url(cfg: ClusterConfig, name: str) -> str:
    if cfg.database_template:
        return cfg.database_template.format(name=name.replace("-", "_"))
    return f"sqlite+aiosqlite:///{(cfg.data / 'db' / f'{name}.db').resolve()}"


def plan(cfg: ClusterConfig) -> list[ProcSpec]:
    """The processes of the cluster with their settings (environment variables)."""
    hub_port, ehealth_port = cfg.base_port, cfg.base_port + 1

    def addr(port: int) -> str:
        return f"{cfg.host}:{port}"

    oa_ports = {code: cfg.base_port + 10 + i for i, code in enumerate(INSURER_CODES)}
    specs = [ProcSpec("ehealth", "ehealth", "ehealth", ehealth_port)]
    specs += [ProcSpec(f"oa-{c}", "oa", "oa_node", p, oa_code=c) for c, p in oa_ports.items()]
    specs.append(ProcSpec("hub", "hub", "hub", hub_port))
    certs = cfg.data / "pki"
    patient_key = pki.ensure_patient_key(certs).resolve()
    for spec in specs:
        prefix = ENV_PREFIX[spec.role]
        env = {"BIND": addr(spec.port), "DATABASE_URL": database_url(cfg, spec.name)}
        if cfg.insecure:
            env["INSECURE"] = "true"
        else:
            ident = pki.ensure_identity(certs, spec.name)
            env |= {"TLS_CA": str(ident.ca), "TLS_CERT": str(ident.cert), "TLS_KEY": str(ident.key)}
        if cfg.today:
            env["SANDBOX_DATE"] = cfg.today.isoformat()
        if spec.role == "oa":
            assert spec.oa_code
            # Each insurer follows eHealth's cadastre (the authentic source of providers): a provider
            # written once in eHealth becomes known to all seven (over mutual TLS with its own certificate).
            env |= {
                "INSURER_CODE": spec.oa_code,
                "HUB_INTAKE_TARGET": addr(hub_port),
                "EHEALTH_TARGET": addr(ehealth_port),
            }
        if cfg.metrics:
            env["METRICS_PORT"] = str(spec.port + 1000)
        if spec.role == "ehealth":
            # eHealth follows each insurer's holder-change feed (the DMG relation moves).
            env["OA_TARGETS"] = ",".join(f"{c}={addr(p)}" for c, p in oa_ports.items())
        if spec.role == "hub":
            env |= {
                "EHEALTH_TARGET": addr(ehealth_port),
                "OA_TARGETS": ",".join(f"{c}={addr(p)}" for c, p in oa_ports.items()),
            }
        spec.env = {prefix + k: v for k, v in env.items()}
        spec.env["OTEL_SERVICE_NAME"] = spec.name
        spec.env[KEY_FILE_VARIABLE] = str(patient_key)  # the patients' pseudonyms in traces
        if cfg.otlp_endpoint:
            spec.env["OTEL_EXPORTER_OTLP_ENDPOINT"] = cfg.otlp_endpoint
    return specs


async def database_sizes(cfg: ClusterConfig, specs: list[ProcSpec]) -> dict[str, int]:
    """Size on disk of each process's database (SQLite file with its WAL, or pg_database_size)."""
    from sqlalchemy.engine import make_url

    sizes: dict[str, int] = {}
    for spec in specs:
        url = make_url(database_url(cfg, spec.name))
        if url.get_backend_name() == "sqlite" and url.database:
            sizes[spec.name] = sum(
                p.stat().st_size for p in Path(url.database).parent.glob(Path(url.database).name + "*")
            )
        else:
            import asyncpg

            admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
            conn = await asyncpg.connect(admin)
            try:
                sizes[spec.name] = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
            finally:
                await conn.close()
    return sizes


async def create_databases(cfg: ClusterConfig, specs: list[ProcSpec]) -> None:
    """With a PostgreSQL template, create each process's database when it does not exist yet."""
    if not cfg.database_template or not cfg.database_template.startswith("postgres"):
        return
    import asyncpg
    from sqlalchemy.engine import make_url

    for spec in specs:
        url = make_url(database_url(cfg, spec.name))
        admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
        conn = await asyncpg.connect(admin)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", url.database)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{url.database}"')
        finally:
            await conn.close()


def client_tls(cfg: ClusterConfig) -> dict[str, str] | None:
    """The CA and each caller's certificate and key (``<caller>_cert``, ``<caller>_key``); None when
    insecure."""
    if cfg.insecure:
        return None
    tls: dict[str, str] = {}
    for caller in CALLERS:
        ident = pki.ensure_identity(cfg.data / "pki", caller)
        tls["ca"] = str(ident.ca.resolve())
        tls[f"{caller}_cert"] = str(ident.cert.resolve())
        tls[f"{caller}_key"] = str(ident.key.resolve())
    return tls


class Supervisor:
    """Starts, watches, restarts and stops the processes of one cluster."""

    def __init__(self, cfg: ClusterConfig) -> None:
        self.cfg = cfg
        self.specs = plan(cfg)
        self.tls = client_tls(cfg)
        self.credentials = channel_credentials(self.tls)
        self.backoffice_credentials = channel_credentials(self.tls, "backoffice")
        self.admin_credentials = channel_credentials(self.tls, "admin")
        self.running: dict[str, Running] = {}
        self.stopping = asyncio.Event()
        self.seed_info: dict[str, Any] = {}
        self.started_at = dt.datetime.now(dt.UTC)
        self.demo: dict[str, str] = {}
        self.chaos = ChaosEngine(self)
        (cfg.data / "logs").mkdir(parents=True, exist_ok=True)
        # The test clock: its offset on disk, given to every process at each (re)start; ``--today`` moves
        # it (never backwards: ClockBackwards).
        self.clock = testclock.ClockState(cfg.data, cfg.today)
        self.clock_servicer = testclock.SandboxClockServicer(
            self.clock,
            lambda: [(spec.name, self.address(spec)) for spec in self.specs],
            self.admin_credentials,
            on_moved=self.write_description,
        )
        # The sandbox server's services (the administrator's controls of the running mesh).
        self.sandbox_services = [testclock.service(self.clock_servicer), chaos.service(self.chaos)]
        self.sandbox: MeshServer | None = None

    def address(self, spec: ProcSpec) -> str:
        return f"{self.cfg.host}:{spec.port}"

    async def _spawn(self, spec: ProcSpec) -> asyncio.subprocess.Process:
        logfile = open(self.cfg.data / "logs" / f"{spec.name}.log", "ab")  # noqa: SIM115, ASYNC230 - handed to the child
        try:
            return await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                spec.module,
                env={**os.environ, **spec.env, **self.clock_env(spec)},
                stdout=logfile,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            logfile.close()

    def clock_env(self, spec: ProcSpec) -> dict[str, str]:
        """The test clock's offset as it is now, for a process that starts."""
        return {ENV_PREFIX[spec.role] + "SANDBOX_OFFSET_SECONDS": str(self.clock.offset.total_seconds())}

    async def start_sandbox(self) -> None:
        """Serve the sandbox's services (:mod:`mycarenet_cluster.sandbox`)."""
        self.sandbox = sandbox.build_server(self.sandbox_services, self.cfg)
        await self.sandbox.start(sandbox.address(self.cfg))

    async def _wait_serving(self, spec: ProcSpec) -> None:
        deadline = time.monotonic() + self.cfg.startup_timeout
        while time.monotonic() < deadline:
            run = self.running.get(spec.name)
            if run and run.process.returncode is not None:
                tail = (self.cfg.data / "logs" / f"{spec.name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{spec.name} exited with {run.process.returncode}:\n{tail}")
            if await health(self.address(spec), self.credentials) == "SERVING":
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"{spec.name} not SERVING after {self.cfg.startup_timeout:.0f}s")

    async def start(self) -> None:
        """Start every process in dependency order and wait until all are SERVING."""
        await create_databases(self.cfg, self.specs)
        for group in (["ehealth"], [s.name for s in self.specs if s.role == "oa"], ["hub"]):
            specs = [s for s in self.specs if s.name in group]
            for spec in specs:
                self.running[spec.name] = Running(spec, await self._spawn(spec))
            await asyncio.gather(*(self._wait_serving(s) for s in specs))
            log.info("serving: %s", ", ".join(group))

    async def seed_if_new(self) -> None:
        marker = self.cfg.data / "seeded.json"
        today = self.clock.today()
        pop = population.build(self.cfg.population, today, self.cfg.seed_value)
        self.demo = pop.demo
        if marker.is_file():
            self.seed_info = json.loads(marker.read_text())
            return
        started = time.monotonic()
        oas = {s.oa_code: self.address(s) for s in self.specs if s.role == "oa" and s.oa_code}
        ehealth = next(self.address(s) for s in self.specs if s.role == "ehealth")
        info = await seed.seed(
            pop,
            ehealth=ehealth,
            oas=oas,
            keys_folder=self.cfg.data / "keys",
            today=today,
            admin_credentials=self.admin_credentials,
            backoffice_credentials=self.backoffice_credentials,
        )
        info["seconds"] = round(time.monotonic() - started, 2)
        info["database_bytes"] = await database_sizes(self.cfg, self.specs)
        self.seed_info = info
        marker.write_text(json.dumps(info, indent=2))

    # --- what the chaos engine needs (mycarenet_cluster.chaos.Processes) -----------------------------------

    def process_names(self) -> list[str]:
        return [spec.name for spec in self.specs]

    def hold(self, name: str) -> None:
        """Keep ``name`` down when it exits (a deliberate kill or stop), until :meth:`release`."""
        self.running[name].hold = asyncio.Event()

    def release(self, name: str) -> None:
        run = self.running[name]
        if run.hold is not None:
            run.hold.set()

    def signal(self, name: str, sig: int) -> bool:
        run = self.running.get(name)
        if run is None or run.process.returncode is not None:
            return False
        try:
            run.process.send_signal(sig)
        except ProcessLookupError:
            return False
        return True

    async def set_link_rules(self, name: str, rules: Sequence[chaos_pb2.LinkRule]) -> None:
        spec = next(s for s in self.specs if s.name == name)
        await chaos.set_link_rules(self.address(spec), self.admin_credentials, rules)

    async def describe(self) -> dict[str, Any]:
        healths = await asyncio.gather(*(health(self.address(s), self.credentials) for s in self.specs))
        procs = []
        for spec, state in zip(self.specs, healths, strict=True):
            run = self.running.get(spec.name)
            procs.append(
                {
                    "name": spec.name,
                    "role": spec.role,
                    "oa_code": spec.oa_code,
                    "address": self.address(spec),
                    "metrics_address": f"{self.cfg.host}:{spec.port + 1000}" if self.cfg.metrics else None,
                    "database_url": database_url(self.cfg, spec.name),
                    "pid": run.process.pid if run else None,
                    "restarts": run.restarts if run else 0,
                    "health": state,
                    "log": str((self.cfg.data / "logs" / f"{spec.name}.log").resolve()),
                }
            )
        return {
            "name": "mycarenet-mesh",
            "supervisor_pid": os.getpid(),
            "data": str(self.cfg.data.resolve()),
            "today": self.clock.today().isoformat(),
            "started_at": self.started_at.isoformat(),
            "tls": self.tls,
            "processes": procs,
            "demo": self.demo,
            "seed": self.seed_info,
            "keys": str((self.cfg.data / "keys").resolve()),
            "sandbox": {"address": sandbox.address(self.cfg)},
        }

    async def write_description(self) -> dict[str, Any]:
        desc = await self.describe()
        path = self.cfg.data / DESCRIPTION
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(desc, indent=2))
        tmp.replace(path)
        return desc

    async def watch(self) -> None:
        """Keep every process up while the cluster is (one keeper per process), until :attr:`stopping`."""
        keepers = [asyncio.create_task(self._keep(name), name=f"keep {name}") for name in self.running]
        try:
            await self.stopping.wait()
        finally:
            for keeper in keepers:
                keeper.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)

    async def _keep(self, name: str) -> None:
        """Start ``name`` again whenever it exits: when a chaos fault held it, once the fault heals; else
        with a growing back-off for a process that keeps crashing right after its start."""
        run = self.running[name]
        while True:
            await run.process.wait()
            if self.stopping.is_set():
                return
            if run.hold is not None:
                log.warning(
                    "%s exited with %s (chaos): down until the fault heals", name, run.process.returncode
                )
                await run.hold.wait()
                run.hold = None
            else:
                log.warning("%s exited with %s; restarting", name, run.process.returncode)
                # A process that had been up for a while restarts at once; one that keeps crashing right
                # after its start waits longer and longer (at most 5 s).
                stable = time.monotonic() - run.started >= STABLE_AFTER
                run.quick_crashes = 0 if stable else run.quick_crashes + 1
                await asyncio.sleep(min(5.0, 0.1 * 2**run.quick_crashes) if run.quick_crashes else 0.0)
            run.process = await self._spawn(run.spec)
            run.started = time.monotonic()
            run.restarts += 1
            try:
                await self._wait_serving(run.spec)
                await self.chaos.restarted(name)  # the link faults it applies, if any
            except (RuntimeError, TimeoutError) as error:
                log.error("%s: %s", name, error)
            await self.write_description()

    async def stop(self, grace: float = 10.0) -> None:
        """Heal every chaos fault; SIGTERM every process (hub first, eHealth last), SIGKILL what is left
        after ``grace``."""
        self.stopping.set()
        await self.chaos.close()
        if self.sandbox is not None:
            await self.sandbox.stop(0)
        for group in (["hub"], [s.name for s in self.specs if s.role == "oa"], ["ehealth"]):
            procs = [self.running[n].process for n in group if n in self.running]
            for p in procs:
                if p.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    await asyncio.wait_for(p.wait(), grace)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        p.kill()
                    await p.wait()
        with contextlib.suppress(FileNotFoundError):
            (self.cfg.data / DESCRIPTION).unlink()


async def run(cfg: ClusterConfig, *, on_ready: Any = None) -> int:
    """`up`: start, seed, describe, then wait for a signal and stop everything."""
    try:
        sup = Supervisor(cfg)
    except ClockBackwards as error:
        print(
            f"mycarenet-cluster: --today: {error}; the mesh clock never goes back (reset the data)",
            file=sys.stderr,
        )
        return 2
    except testclock.ClockOutOfRange as error:
        print(f"mycarenet-cluster: --today: {error}", file=sys.stderr)
        return 2
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, sup.stopping.set)

    async def bring_up() -> None:
        await sup.start()
        await sup.start_sandbox()
        await sup.seed_if_new()
        desc = await sup.write_description()
        if on_ready is not None:
            on_ready(desc)

    try:
        # A signal during start-up or seeding stops everything at once (seeding resumes from scratch on
        # the next start, since its marker is written only when it completes).
        starting = asyncio.ensure_future(bring_up())
        stop = asyncio.ensure_future(sup.stopping.wait())
        await asyncio.wait([starting, stop], return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return 130
        stop.cancel()
        starting.result()
        await sup.watch()
        return 0
    finally:
        await sup.stop()
