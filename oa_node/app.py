"""One insurer (OA) node: its database, its four services, its outbox relay, its cadastre follower.

Who may call what is the trust table's business (``mycarenet_core/trust.toml``): the node answers the hub,
the insurer's back office and the sandbox administrator, each on the RPCs the table grants them, and
never provider software, eHealth or another insurer.

Usage (tests start real nodes in-process)::

    app = await OaNodeApp.create(
        insurer_code="100", database_url=url, clock=clock, hub_intake_target=hub, ehealth_target=ehealth
    )
    port = await app.start("127.0.0.1:0")
    ...
    await app.stop()
"""

from __future__ import annotations

import grpc
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from mycarenet_core.clock import Clock
from mycarenet_core.db import create_engine, session_factory, transaction
from mycarenet_core.gen.mycarenet.oa.v1 import intake_service_pb2_grpc as intake_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import membership_service_pb2_grpc as ms_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import oa_dmg_service_pb2_grpc as oa_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import reference_data_service_pb2_grpc as rd_grpc
from mycarenet_core.identifiers import INSURER_CODES
from mycarenet_core.migrations import HISTORIES, upgrade
from mycarenet_core.server import MeshServer, Service
from mycarenet_core.telemetry import SampledGauge, Telemetry
from mycarenet_core.trust import TrustInterceptor
from oa_node import models as m
from oa_node import rules
from oa_node.audit import Auditor
from oa_node.cadastre import CadastreFollower
from oa_node.dmg import DmgOperations
from oa_node.membership import FeedNotifier, MembershipOperations
from oa_node.reference import ReferenceOperations
from oa_node.relay import OutboxRelay
from oa_node.repositories import OutboxRepository, ReferenceRepository
from oa_node.servicers import (
    InvoicingIntakeServicer,
    MembershipServicer,
    OaDmgServicer,
    ReferenceDataServicer,
)

SERVICE_NAMES = {
    "dmg": "mycarenet.oa.v1.OaDmgService",
    "intake": "mycarenet.oa.v1.InvoicingIntakeService",
    "membership": "mycarenet.oa.v1.MembershipService",
    "reference": "mycarenet.oa.v1.ReferenceDataService",
}


async def init_database(engine: AsyncEngine) -> None:
    """Migrate the schema to head, create the feed head and cadastre position rows and the default tariff
    (idempotent)."""
    await upgrade(engine, HISTORIES["oa_node"].script_location)
    async with transaction(session_factory(engine)) as session:
        if (await session.execute(select(m.FeedHead))).first() is None:
            session.add(m.FeedHead(id=1, last_sequence=0))
        if (await session.execute(select(m.CadastrePosition))).first() is None:
            session.add(m.CadastrePosition(id=1, applied_sequence=0))
        await ReferenceRepository(session).seed_tariffs(rules.DEFAULT_TARIFFS)


class OaNodeApp:
    """An insurer node: engine, operations, gRPC server, and (when their targets are given) the outbox relay
    to the hub and the follower of eHealth's cadastre."""

    def __init__(
        self,
        *,
        insurer_code: str,
        engine: AsyncEngine,
        clock: Clock,
        hub_intake_target: str | None,
        relay_interval: float,
        channel_credentials: grpc.ChannelCredentials | None,
        server_credentials: grpc.ServerCredentials | None,
        telemetry: Telemetry | None = None,
        ehealth_target: str | None = None,
    ) -> None:
        self.insurer_code = insurer_code
        self.engine = engine
        self.clock = clock
        self.sessions = session_factory(engine)
        self.gauges: list[SampledGauge] = []
        if telemetry is not None:
            telemetry.instrument_engine(engine)
            self.gauges.append(self._backlog_gauge(telemetry, relay_interval))
        auditor = Auditor(self.sessions, clock)
        self.relay = (
            OutboxRelay(
                insurer_code=insurer_code,
                sessions=self.sessions,
                clock=clock,
                target=hub_intake_target,
                interval=relay_interval,
                credentials=channel_credentials,
                interceptors=telemetry.client_interceptors_for(peer_service="hub") if telemetry else (),
                tracer=telemetry.tracer if telemetry else None,
            )
            if hub_intake_target
            else None
        )
        self.cadastre = (
            CadastreFollower(
                insurer_code=insurer_code,
                sessions=self.sessions,
                clock=clock,
                target=ehealth_target,
                credentials=channel_credentials,
                interceptors=telemetry.client_interceptors_for(peer_service="ehealth") if telemetry else (),
            )
            if ehealth_target
            else None
        )
        self.auditor = auditor
        self.notifier = FeedNotifier()
        self.dmg = DmgOperations(
            insurer_code=insurer_code,
            sessions=self.sessions,
            clock=clock,
            auditor=auditor,
            on_outbox=self.relay.wake if self.relay else lambda: None,
        )
        self.membership = MembershipOperations(
            insurer_code=insurer_code,
            sessions=self.sessions,
            clock=clock,
            auditor=auditor,
            notifier=self.notifier,
        )
        cadastre = self.cadastre
        self.reference = ReferenceOperations(
            sessions=self.sessions,
            auditor=auditor,
            following=(lambda: cadastre.following) if cadastre is not None else (lambda: False),
        )
        self.server = MeshServer(
            f"oa-{insurer_code}",
            [
                Service(
                    oa_grpc.add_OaDmgServiceServicer_to_server, OaDmgServicer(self.dmg), SERVICE_NAMES["dmg"]
                ),
                Service(
                    intake_grpc.add_InvoicingIntakeServiceServicer_to_server,
                    InvoicingIntakeServicer(self.dmg),
                    SERVICE_NAMES["intake"],
                ),
                Service(
                    ms_grpc.add_MembershipServiceServicer_to_server,
                    MembershipServicer(self.membership),
                    SERVICE_NAMES["membership"],
                ),
                Service(
                    rd_grpc.add_ReferenceDataServiceServicer_to_server,
                    ReferenceDataServicer(self.reference),
                    SERVICE_NAMES["reference"],
                ),
            ],
            credentials=server_credentials,
            # Telemetry first, so that refused peers are traced and counted too.
            interceptors=[*(telemetry.server_interceptors if telemetry else ())],
            # The trust table: the certificate (under mutual TLS) or the declared kind (plaintext,
            # development only) must have a grant for the RPC; refusals are audited.
            trust=TrustInterceptor(secure=server_credentials is not None, observe=auditor.observe),
        )
        self.port: int | None = None

    def _backlog_gauge(self, telemetry: Telemetry, relay_interval: float) -> SampledGauge:
        sessions = self.sessions

        async def backlog() -> float:
            async with sessions() as session:
                return await OutboxRepository(session).backlog()

        return telemetry.sampled_gauge(
            "mycarenet.outbox.backlog",
            backlog,
            interval=max(1.0, relay_interval * 5),
            description="Outbox messages not yet delivered to the hub",
            unit="{message}",
        )

    @classmethod
    async def create(
        cls,
        *,
        insurer_code: str,
        database_url: str,
        clock: Clock,
        hub_intake_target: str | None = None,
        relay_interval: float = 0.2,
        channel_credentials: grpc.ChannelCredentials | None = None,
        server_credentials: grpc.ServerCredentials | None = None,
        telemetry: Telemetry | None = None,
        ehealth_target: str | None = None,
    ) -> OaNodeApp:
        """Open the database (creating the schema on first use) and build the node; nothing listens yet.

        ``ehealth_target``: eHealth's address, whose cadastre the node follows (its providers and
        organisations); without it the reference data come only from the back office.
        With ``telemetry`` (built with ``attributes={"mycarenet.oa": code}``): server spans and metrics,
        database spans, the relay's and the follower's client spans, delivery spans, the outbox backlog
        gauge."""
        if insurer_code not in INSURER_CODES:
            raise ValueError(
                f"unknown insurer code {insurer_code!r} (expected one of {', '.join(INSURER_CODES)})"
            )
        engine = create_engine(database_url)
        try:
            await init_database(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(
            insurer_code=insurer_code,
            engine=engine,
            clock=clock,
            hub_intake_target=hub_intake_target,
            relay_interval=relay_interval,
            channel_credentials=channel_credentials,
            server_credentials=server_credentials,
            telemetry=telemetry,
            ehealth_target=ehealth_target,
        )

    def _start_background(self) -> None:
        if self.relay is not None:
            self.relay.start()
        if self.cadastre is not None:
            self.cadastre.start()
        for gauge in self.gauges:
            gauge.start()

    async def _stop_background(self) -> None:
        for gauge in self.gauges:
            await gauge.stop()
        if self.cadastre is not None:
            await self.cadastre.stop()
        if self.relay is not None:
            await self.relay.stop()
        await self.notifier.close()

    async def start(self, bind: str = "127.0.0.1:0") -> int:
        """Serve on ``bind``; start the outbox relay and the cadastre follower when their targets are
        configured. Returns the port."""
        self.port = await self.server.start(bind)
        self._start_background()
        return self.port

    async def stop(self, grace: float = 0) -> None:
        """Stop the follower and the relay, end the feed watches, stop the server, dispose of the engine."""
        await self._stop_background()
        await self.server.stop(grace)
        await self.auditor.drain()
        await self.engine.dispose()

    async def serve_forever(self, bind: str, *, grace: float = 5.0) -> None:
        """Serve until SIGTERM/SIGINT, then stop gracefully (the command-line entry point)."""
        self._start_background()

        async def on_stop() -> None:
            await self._stop_background()
            await self.auditor.drain()
            await self.engine.dispose()

        await self.server.serve_forever(bind, grace=grace, on_stop=on_stop)
