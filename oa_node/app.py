"""One insurer (OA) node: its database, its five services, and its background jobs (the outbox relay to the
hub, the follower of eHealth's cadastre, the audit writer, the outbox backlog gauge; on the sandbox's
movable clock, the year ends), as a
:class:`~mycarenet_core.service.ServiceApp` that starts and stops like every process of the mesh.

Who may call what is the trust table's business (``mycarenet_core/trust.toml``): the node answers the hub,
the insurer's back office, eHealth (the holder-change feed) and the sandbox administrator, each on the RPCs
the table grants them, and never provider software or another insurer.

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
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from mycarenet_core.channels import open_channel
from mycarenet_core.clock import Clock, OffsetClock, clock_from_setting
from mycarenet_core.db import create_engine, session_factory, transaction
from mycarenet_core.gen.mycarenet.oa.v1 import holding_feed_service_pb2_grpc as hf_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import intake_service_pb2_grpc as intake_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import membership_service_pb2_grpc as ms_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import oa_dmg_service_pb2_grpc as oa_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import oa_insurability_service_pb2_grpc as ins_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import oa_invoicing_service_pb2_grpc as oainv_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import reference_data_service_pb2_grpc as rd_grpc
from mycarenet_core.identifiers import INSURER_CODES
from mycarenet_core.lifecycle import Background
from mycarenet_core.migrations import HISTORIES, upgrade
from mycarenet_core.reads import HotReads
from mycarenet_core.server import MeshServer, Service
from mycarenet_core.service import Closer, ServiceApp, mesh_credentials
from mycarenet_core.telemetry import Telemetry
from mycarenet_core.trust import TABLE, TrustInterceptor, TrustTable
from oa_node import models as m
from oa_node import rules
from oa_node.audit import AuditTrail
from oa_node.cadastre import CadastreFollower
from oa_node.dmg import DmgOperations
from oa_node.fee_checks import DEFAULT_PERIOD_MONTHS, FeeChecks
from oa_node.feeds import SAFETY_TIMEOUT, FeedSignal, Wakeup
from oa_node.holdings import HoldingFeed
from oa_node.insurability import InsurabilityOperations
from oa_node.invoicing import InvoiceLines, InvoicingOperations
from oa_node.membership import MembershipOperations
from oa_node.purpose import PurposeChecks, PurposeRule
from oa_node.reference import ReferenceOperations
from oa_node.relay import OutboxRelay
from oa_node.repositories import OutboxRepository, ReferenceRepository
from oa_node.servicers import (
    HoldingFeedServicer,
    InvoicingIntakeServicer,
    MembershipServicer,
    OaDmgServicer,
    OaInsurabilityServicer,
    OaInvoicingServicer,
    ReferenceDataServicer,
)
from oa_node.settings import OaSettings
from oa_node.year_end import YearEnds, record_origin

SERVICE_NAMES = {
    "dmg": "mycarenet.oa.v1.OaDmgService",
    "intake": "mycarenet.oa.v1.InvoicingIntakeService",
    "membership": "mycarenet.oa.v1.MembershipService",
    "reference": "mycarenet.oa.v1.ReferenceDataService",
    "holdings": "mycarenet.oa.v1.HoldingFeedService",
    "insurability": "mycarenet.oa.v1.OaInsurabilityService",
    "invoicing": "mycarenet.oa.v1.OaInvoicingService",
}


async def init_database(engine: AsyncEngine) -> None:
    """Migrate the schema to head, create the feed head rows, the cadastre position row and the default
    tariff (idempotent)."""
    await upgrade(engine, HISTORIES["oa_node"].script_location)
    async with transaction(session_factory(engine)) as session:
        heads = set((await session.execute(select(m.FeedHead.id))).scalars())  # type: ignore[call-overload]
        for feed in (m.AFFILIATION_FEED, m.HOLDER_FEED):
            if feed not in heads:
                await session.execute(insert(m.FeedHead), [{"id": feed, "last_sequence": 0}])
        if (await session.execute(select(m.CadastrePosition))).first() is None:
            session.add(m.CadastrePosition(id=1, applied_sequence=0))
        await ReferenceRepository(session).seed_tariffs(rules.TariffTable())


class OaNodeApp(ServiceApp):
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
        purpose: PurposeRule | None = None,
        max_notification_delay_days: int | None = 7,
        unbilled_contact_months: int = DEFAULT_PERIOD_MONTHS,
        trust_table: TrustTable = TABLE,
    ) -> None:
        name = f"oa-{insurer_code}"
        self.insurer_code = insurer_code
        self.engine = engine
        self.clock = clock
        self.sessions = session_factory(engine)
        background = Background(name)
        closers: list[Closer] = [engine.dispose]  # closers run in reverse: the engine is disposed last
        if telemetry is not None:
            telemetry.instrument_engine(engine)

        self.reads = HotReads(engine)
        if telemetry is not None and self.reads.sync_engine is not None:
            telemetry.instrument_engine(self.reads.sync_engine)  # the consult's reads are spans too
            self.reads.traced = True
        closers.append(self.reads.close)
        self.audit = AuditTrail(engine, self.sessions, clock)
        outbox, affiliations, holders = Wakeup(), FeedSignal(), FeedSignal()

        self.relay: OutboxRelay | None = None
        if hub_intake_target:
            # The hub takes this insurer's messages only from its own node (trust.toml): on a plaintext
            # channel the node declares itself; under TLS its certificate says it.
            hub = open_channel(
                hub_intake_target,
                credentials=channel_credentials,
                interceptors=telemetry.client_interceptors_for(peer_service="hub") if telemetry else (),
                identity=name,
            )
            closers.append(lambda: hub.close(None))
            self.relay = OutboxRelay(
                insurer_code=insurer_code,
                sessions=self.sessions,
                clock=clock,
                channel=hub,
                wakeup=outbox,
                interval=relay_interval,
                tracer=telemetry.tracer if telemetry else None,
                meter=telemetry.meter if telemetry else None,
            )
            background.add("outbox relay", self.relay.run)

        self.cadastre: CadastreFollower | None = None
        if ehealth_target:
            ehealth = open_channel(
                ehealth_target,
                credentials=channel_credentials,
                interceptors=telemetry.client_interceptors_for(peer_service="ehealth") if telemetry else (),
                identity=name,
            )
            closers.append(lambda: ehealth.close(None))
            self.cadastre = CadastreFollower(
                insurer_code=insurer_code, sessions=self.sessions, clock=clock, channel=ehealth
            )
            background.add("cadastre follower", self.cadastre.run)

        if telemetry is not None:
            sessions = self.sessions

            async def backlog() -> float:
                async with sessions() as session:
                    return await OutboxRepository(session).backlog()

            gauge = telemetry.sampled_gauge(
                "mycarenet.outbox.backlog",
                backlog,
                interval=5.0,
                description="Outbox messages not yet delivered to the hub",
                unit="{message}",
            )

            async def sample() -> None:
                await gauge.refresh()

            background.every("outbox backlog gauge", gauge.interval, sample)

        background.add("audit writer", self.audit.run)
        closers.append(self.audit.close)  # the writer's own connection, after the last flush
        closers.append(self.audit.flush)  # first closer to run: the queued rows before the engine goes

        self.dmg = DmgOperations(
            insurer_code=insurer_code,
            reads=self.reads,
            sessions=self.sessions,
            clock=clock,
            audit=self.audit,
            outbox=outbox,
            holders=holders,
            max_notification_delay_days=max_notification_delay_days,
        )
        self.membership = MembershipOperations(
            insurer_code=insurer_code,
            sessions=self.sessions,
            clock=clock,
            audit=self.audit,
            signal=affiliations,
        )
        cadastre = self.cadastre
        self.reference = ReferenceOperations(
            sessions=self.sessions,
            audit=self.audit,
            following=(lambda: cadastre.following) if cadastre is not None else (lambda: False),
        )
        # Invoicing from the provider's side (eFact lines answered by a job, eAttest at once) and the check
        # after payment of the notification fees.
        self.invoicing = InvoicingOperations(
            sessions=self.sessions, dmg=self.dmg, audit=self.audit, clock=clock, outbox=outbox
        )
        self.invoice_lines = InvoiceLines(self.invoicing, interval=relay_interval)
        background.add("invoice lines", self.invoice_lines.run)
        self.fee_checks = FeeChecks(
            insurer_code=insurer_code,
            sessions=self.sessions,
            clock=clock,
            audit=self.audit,
            outbox=outbox,
            period_months=unbilled_contact_months,
        )
        background.daily("check after payment", clock, self.fee_checks.run_once)
        self.holdings = HoldingFeed(self.reads, holders)
        self.insurability = InsurabilityOperations(insurer_code=insurer_code, reads=self.reads)
        # The a-posteriori purpose check of the insurability consultations (seed 003 §7.3): its findings go
        # to the hub through the outbox (oa_node/purpose.py).
        self.purpose = PurposeChecks(
            insurer_code=insurer_code,
            sessions=self.sessions,
            clock=clock,
            audit=self.audit,
            outbox=outbox,
            rule=purpose,
        )
        background.daily("purpose check", clock, self.purpose.run_once)
        server = MeshServer(
            name,
            [
                Service(
                    oa_grpc.add_OaDmgServiceServicer_to_server,
                    OaDmgServicer(self.dmg, self.audit, trust_table),
                    SERVICE_NAMES["dmg"],
                ),
                Service(
                    intake_grpc.add_InvoicingIntakeServiceServicer_to_server,
                    InvoicingIntakeServicer(self.dmg, self.audit, trust_table),
                    SERVICE_NAMES["intake"],
                ),
                Service(
                    ms_grpc.add_MembershipServiceServicer_to_server,
                    MembershipServicer(self.membership, self.audit, trust_table),
                    SERVICE_NAMES["membership"],
                ),
                Service(
                    rd_grpc.add_ReferenceDataServiceServicer_to_server,
                    ReferenceDataServicer(self.reference, self.audit, trust_table),
                    SERVICE_NAMES["reference"],
                ),
                Service(
                    hf_grpc.add_HoldingFeedServiceServicer_to_server,
                    HoldingFeedServicer(self.holdings, self.audit, trust_table),
                    SERVICE_NAMES["holdings"],
                ),
                Service(
                    ins_grpc.add_OaInsurabilityServiceServicer_to_server,
                    OaInsurabilityServicer(self.insurability, self.audit, trust_table),
                    SERVICE_NAMES["insurability"],
                ),
                Service(
                    oainv_grpc.add_OaInvoicingServiceServicer_to_server,
                    OaInvoicingServicer(self.invoicing, self.audit, trust_table),
                    SERVICE_NAMES["invoicing"],
                ),
            ],
            credentials=server_credentials,
            # Telemetry first, so that refused peers are traced and counted too.
            interceptors=[*(telemetry.server_interceptors if telemetry else ())],
            # The trust table: the certificate (under mutual TLS) or the declared kind (plaintext,
            # development only) must have a grant for the RPC; refusals are audited. The servicers audit
            # each call as the same table declares.
            trust=TrustInterceptor(
                secure=server_credentials is not None, table=trust_table, observe=self.audit.observe
            ),
        )
        # The watch streams end first when the node stops, so that they do not hold the grace period.
        super().__init__(
            server,
            background=background,
            closers=closers,
            stopping=[affiliations.close, holders.close],
            clock=clock,
        )
        # The sandbox's test clock (a movable clock): the year ends run when the mesh goes over 31 December,
        # before a move of the clock answers. A real insurer's back office orders them (ProcessYearEnd).
        self.year_ends: YearEnds | None = None
        if isinstance(clock, OffsetClock):
            self.year_ends = YearEnds(self.sessions, clock, self.dmg, self.audit)
            clock.listen(self.year_ends.clock_moved)
            self.background.add("year ends", self.year_ends.run)
            self.clock_observers.append(self.year_ends.after_move)

    @classmethod
    async def from_settings(cls, settings: OaSettings, telemetry: Telemetry | None) -> OaNodeApp:
        """The insurer node of ``mycarenet-oa`` (see :func:`mycarenet_core.service.run_service`)."""
        channel_credentials, server_creds = mesh_credentials(settings)
        return await cls.create(
            insurer_code=settings.insurer_code,
            database_url=settings.database_url,
            clock=clock_from_setting(settings.sandbox_date, settings.sandbox_offset_seconds),
            hub_intake_target=settings.hub_intake_target,
            ehealth_target=settings.ehealth_target,
            relay_interval=settings.relay_interval,
            purpose=settings.purpose(),
            max_notification_delay_days=settings.max_notification_delay_days,
            unbilled_contact_months=settings.unbilled_contact_months,
            channel_credentials=channel_credentials,
            server_credentials=server_creds,
            telemetry=telemetry,
        )

    @classmethod
    async def create(
        cls,
        *,
        insurer_code: str,
        database_url: str,
        clock: Clock,
        hub_intake_target: str | None = None,
        relay_interval: float = SAFETY_TIMEOUT,
        channel_credentials: grpc.ChannelCredentials | None = None,
        server_credentials: grpc.ServerCredentials | None = None,
        telemetry: Telemetry | None = None,
        ehealth_target: str | None = None,
        purpose: PurposeRule | None = None,
        max_notification_delay_days: int | None = 7,
        unbilled_contact_months: int = DEFAULT_PERIOD_MONTHS,
        trust_table: TrustTable = TABLE,
    ) -> OaNodeApp:
        """Open the database (migrating the schema to head) and build the node; nothing listens yet.

        ``ehealth_target``: eHealth's address, whose cadastre the node follows (its providers and
        organisations); without it the reference data come only from the back office.
        ``relay_interval``: the outbox relay's safety timeout (it is woken by every commit of outbox rows).
        ``purpose``: the thresholds of the purpose check (:mod:`oa_node.purpose`).
        ``max_notification_delay_days``: code 166, a notification's contact at most this many days old (None:
        no limit); the production service's rule, which the seeds do not state.
        ``unbilled_contact_months``: the check after payment's period (:mod:`oa_node.fee_checks`).
        ``trust_table``: who may call what, and which calls leave an audit row (``trust.toml``'s, by
        default).
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
            await record_origin(session_factory(engine), clock.today())
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
            purpose=purpose,
            max_notification_delay_days=max_notification_delay_days,
            unbilled_contact_months=unbilled_contact_months,
            trust_table=trust_table,
        )
