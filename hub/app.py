"""The hub process: builds its dependencies, serves the public and internal services on one server, and
runs the background work (affiliation feeds, revocation watch, patient lists, audit, relation moves)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.audit import AuditLog
from hub.auth import HubTrust, TokenVerifier
from hub.feeds import AffiliationFollower, RevocationFollower, run_periodically
from hub.mailbox import MailboxNotifier, MailboxRepository
from hub.patient_list import ListPolicy, PatientListWorker
from hub.routing import RoutingIndex, RoutingRepository
from hub.services import DmgServicer, HubCore, MailboxIntakeServicer, MailboxServicer
from hub.throttle import Throttle, ThrottleConfig
from hub.upstream import CallPolicy, EhealthClient, make_oa_clients
from mycarenet_core.clock import Clock
from mycarenet_core.db import create_engine, session_factory
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_service_pb2_grpc, mailbox_service_pb2_grpc
from mycarenet_core.gen.mycarenet.ehealth.v1 import auth_pb2
from mycarenet_core.gen.mycarenet.hub.v1 import mailbox_intake_service_pb2_grpc
from mycarenet_core.migrations import HISTORIES, upgrade
from mycarenet_core.server import MeshServer, Service
from mycarenet_core.telemetry import SampledGauge, Telemetry
from mycarenet_core.trust import TABLE, TrustTable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubTuning:
    """Timings of the background work (tests shorten them)."""

    calls: CallPolicy = field(default_factory=CallPolicy)
    lists: ListPolicy = field(default_factory=ListPolicy)
    transfer_retry_seconds: float = 2.0
    watch_poll_seconds: float = 5.0
    key_refresh_seconds: float = 5.0
    start_timeout: float = 2.0
    gauge_refresh_seconds: float = 5.0


class HubApp:
    """One hub instance. ``create`` → ``start(bind)`` → ``stop()``."""

    def __init__(
        self,
        engine: AsyncEngine,
        core: HubCore,
        server: MeshServer,
        tuning: HubTuning,
        *,
        gauges: Sequence[SampledGauge] = (),
    ) -> None:
        self.engine = engine
        self.gauges = tuple(gauges)
        self.core = core
        self.server = server
        self.tuning = tuning
        self.followers = {
            code: AffiliationFollower(oa, core.index, core.sessions) for code, oa in core.oas.items()
        }
        self.revocations = RevocationFollower(core.ehealth, core.verifier)
        self._tasks: list[asyncio.Task[None]] = []
        self.port: int | None = None

    @classmethod
    async def create(
        cls,
        *,
        database_url: str,
        clock: Clock,
        ehealth_target: str,
        oa_targets: Mapping[str, str],
        channel_credentials: grpc.ChannelCredentials | None = None,
        server_credentials: grpc.ServerCredentials | None = None,
        throttle: ThrottleConfig | None = None,
        tuning: HubTuning | None = None,
        telemetry: Telemetry | None = None,
        trust_table: TrustTable = TABLE,
    ) -> HubApp:
        """Build the hub; with ``telemetry``: server spans and metrics, client spans and per-OA duration
        histograms on the eHealth and OA channels, database spans, and the mailbox and routing gauges.
        ``trust_table`` is who may call what (``mycarenet_core/trust.toml`` unless a test gives another)."""
        tuning = tuning or HubTuning()
        engine = create_engine(database_url)
        if telemetry is not None:
            telemetry.instrument_engine(engine)
        await upgrade(engine, HISTORIES["hub"].script_location)
        sessions = session_factory(engine)
        ehealth = EhealthClient(
            ehealth_target,
            tuning.calls,
            credentials=channel_credentials,
            interceptors=telemetry.client_interceptors_for(peer_service="ehealth") if telemetry else (),
        )
        oas = make_oa_clients(oa_targets, tuning.calls, channel_credentials, telemetry)
        tracer = telemetry.tracer if telemetry else trace.NoOpTracer()

        async def fetch_keys() -> auth_pb2.GetSigningKeysResponse:
            return await ehealth.auth.GetSigningKeys(auth_pb2.GetSigningKeysRequest(), timeout=5)

        verifier = TokenVerifier(fetch_keys, clock, refresh_interval=tuning.key_refresh_seconds)
        notifier = MailboxNotifier()
        index = RoutingIndex()
        async with sessions() as session:
            loaded = await RoutingRepository(session).load_into(index)
        log.info("routing index loaded: %d NISS", loaded)
        core = HubCore(
            clock=clock,
            sessions=sessions,
            verifier=verifier,
            throttle=Throttle(throttle or ThrottleConfig()),
            index=index,
            oas=oas,
            ehealth=ehealth,
            audit=AuditLog(sessions, clock),
            notifier=notifier,
            lists=PatientListWorker(sessions, oas, notifier, tuning.lists, clock, tracer=tracer),
            watch_poll_seconds=tuning.watch_poll_seconds,
            tracer=tracer,
        )
        gauges: list[SampledGauge] = []
        if telemetry is not None:
            telemetry.observe(
                "mycarenet.routing.index.size",
                lambda: len(index),
                description="NISS in the hub's routing index",
                unit="{niss}",
            )

            async def mailbox_size() -> float:
                async with sessions() as session:
                    return await MailboxRepository(session).count_pending()

            gauges.append(
                telemetry.sampled_gauge(
                    "mycarenet.mailbox.size",
                    mailbox_size,
                    interval=tuning.gauge_refresh_seconds,
                    description="Messages waiting in the mailbox (not confirmed by their recipient)",
                    unit="{message}",
                )
            )
        server = MeshServer(
            "hub",
            [
                Service(
                    dmg_service_pb2_grpc.add_DmgServiceServicer_to_server,
                    DmgServicer(core),
                    "mycarenet.dmg.v1.DmgService",
                ),
                Service(
                    mailbox_service_pb2_grpc.add_MailboxServiceServicer_to_server,
                    MailboxServicer(core),
                    "mycarenet.dmg.v1.MailboxService",
                ),
                Service(
                    mailbox_intake_service_pb2_grpc.add_MailboxIntakeServiceServicer_to_server,
                    MailboxIntakeServicer(core),
                    "mycarenet.hub.v1.MailboxIntakeService",
                ),
            ],
            credentials=server_credentials,
            interceptors=telemetry.server_interceptors if telemetry else (),
            # The trust model (trust.toml): the certificate under TLS, else the kind the peer declares; the
            # session, roles and mandate before any handler; every refusal in the audit, with the reference.
            trust=HubTrust(
                secure=server_credentials is not None,
                verifier=verifier,
                table=trust_table,
                observe=core.audit.observe,
            ),
        )
        return cls(engine, core, server, tuning, gauges=gauges)

    async def start(self, bind: str = "127.0.0.1:0") -> int:
        """Start the feeds and background work, then serve; return the bound port."""
        core = self.core
        with contextlib.suppress(Exception):
            await asyncio.wait_for(core.verifier.refresh_keys(force=True), self.tuning.start_timeout)
        spawn = asyncio.create_task
        self._tasks = [spawn(f.run(), name=f"affiliations {c}") for c, f in self.followers.items()]
        self._tasks += [
            spawn(self.revocations.run(), name="revocations"),
            spawn(core.audit.run(), name="audit"),
            spawn(
                run_periodically(self.tuning.transfer_retry_seconds, core.retry_transfers, "relation moves"),
                name="relation moves",
            ),
        ]
        await core.lists.resume()
        for gauge in self.gauges:
            gauge.start()
        self.port = await self.server.start(bind)
        return self.port

    async def wait_until_synced(self, within: float = 10.0) -> None:
        """Wait until every affiliation feed and the revocation list have caught up once."""
        events = [f.caught_up.wait() for f in self.followers.values()] + [self.revocations.caught_up.wait()]
        await asyncio.wait_for(asyncio.gather(*events), within)

    async def stop(self, grace: float = 0) -> None:
        await self.server.stop(grace)
        await self.core.lists.stop()
        for gauge in self.gauges:
            await gauge.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        with contextlib.suppress(Exception):
            await self.core.audit.flush()
        for oa in self.core.oas.values():
            await oa.close()
        await self.core.ehealth.close()
        await self.engine.dispose()
