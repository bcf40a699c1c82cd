"""The hub process: a :class:`~mycarenet_core.service.ServiceApp` serving the public and internal services
on one server, with its background jobs (each insurer's affiliation feed; eHealth's revocations, relation
changes and organisations; the audit writer, the patient lists, the mailbox gauge). The DMG relation moves
at eHealth, which follows each insurer's holder-change feed: the hub has no part in it.

``HubApp.create(...)`` builds it (tests), ``HubApp.from_settings`` from the environment
(``mycarenet-hub``, through :func:`mycarenet_core.service.run_service`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.abuse import AbuseConfig, AbuseControl
from hub.audit import AuditLog
from hub.auth import CachingTokenVerifier, HubTrust
from hub.feeds import AffiliationFollower, RevocationFollower
from hub.insurability import InsurabilityServicer
from hub.invoicing import InvoicingServicer
from hub.mailbox import MailboxNotifier, MailboxRepository
from hub.patient_list import ListPolicy, PatientListWorker
from hub.relations import OrganisationFollower, RelationCheck, RelationFollower, RelationIndex
from hub.routing import RoutingIndex, RoutingRepository
from hub.services import DmgServicer, HubCore, MailboxIntakeServicer, MailboxServicer
from hub.settings import HubSettings
from hub.throttle import Throttle, ThrottleConfig
from hub.upstream import CallPolicy, EhealthClient, make_oa_clients
from mycarenet_core.clock import Clock, clock_from_setting
from mycarenet_core.db import create_engine, session_factory
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_service_pb2_grpc, mailbox_service_pb2_grpc
from mycarenet_core.gen.mycarenet.ehealth.v1 import auth_pb2
from mycarenet_core.gen.mycarenet.hub.v1 import mailbox_intake_service_pb2_grpc
from mycarenet_core.gen.mycarenet.insurability.v1 import insurability_service_pb2_grpc
from mycarenet_core.gen.mycarenet.invoicing.v1 import invoicing_service_pb2_grpc
from mycarenet_core.lifecycle import Background
from mycarenet_core.migrations import HISTORIES, upgrade
from mycarenet_core.server import MeshServer, Service
from mycarenet_core.service import ServiceApp, mesh_credentials
from mycarenet_core.telemetry import Telemetry
from mycarenet_core.trust import TABLE, TrustTable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubTuning:
    """Timings of the background work (tests shorten them)."""

    calls: CallPolicy = field(default_factory=CallPolicy)
    lists: ListPolicy = field(default_factory=ListPolicy)
    key_refresh_seconds: float = 5.0
    start_timeout: float = 2.0
    gauge_refresh_seconds: float = 5.0
    audit_seconds: float = 0.2
    expired_sessions_seconds: float = 60.0
    max_cached_tokens: int = 65_536


class HubApp(ServiceApp):
    """One hub instance. ``create`` → ``start(bind)`` → ``stop()``."""

    def __init__(
        self,
        server: MeshServer,
        core: HubCore,
        engine: AsyncEngine,
        *,
        followers: Mapping[str, AffiliationFollower],
        revocations: RevocationFollower,
        relations: RelationFollower,
        organisations: OrganisationFollower,
        background: Background,
        tuning: HubTuning,
    ) -> None:
        async def dispose() -> None:
            await engine.dispose()

        async def close_channels() -> None:
            for oa in core.oas.values():
                await oa.close()
            await core.ehealth.close()

        super().__init__(
            server,
            background=background,
            # Run in reverse: the list fan-outs end, the last audit rows are written, then the channels and
            # the database close.
            closers=[dispose, close_channels, core.audit.flush, core.lists.stop],
            clock=core.clock,
        )
        self.core = core
        self.engine = engine
        self.followers = dict(followers)
        self.revocations = revocations
        self.relations = relations
        self.organisations = organisations
        self.tuning = tuning

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
        abuse: AbuseConfig | None = None,
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

        verifier = CachingTokenVerifier(
            fetch_keys,
            clock,
            refresh_interval=tuning.key_refresh_seconds,
            max_cached=tuning.max_cached_tokens,
        )
        notifier = MailboxNotifier()
        index = RoutingIndex()
        async with sessions() as session:
            loaded = await RoutingRepository(session).load_into(index)
        log.info("routing index loaded: %d NISS", loaded)
        cache = RelationIndex()
        relations = RelationFollower(ehealth, cache)
        organisations = OrganisationFollower(ehealth, cache)
        audit = AuditLog(engine, clock, every=tuning.audit_seconds, table=trust_table)
        control = AbuseControl(
            sessions, notifier, clock, abuse, meter=telemetry.meter if telemetry is not None else None
        )
        strikes = await control.load()
        excluded = len(control.excluded(clock.now()))
        log.info("abuse registry loaded: %d strikes, %d excluded", strikes, excluded)
        core = HubCore(
            clock=clock,
            sessions=sessions,
            verifier=verifier,
            throttle=Throttle(throttle or ThrottleConfig()),
            index=index,
            oas=oas,
            ehealth=ehealth,
            relations=RelationCheck(relations, ehealth, clock, organisations),
            audit=audit,
            notifier=notifier,
            lists=PatientListWorker(sessions, oas, notifier, tuning.lists, clock, tracer=tracer),
            abuse=control,
            tracer=tracer,
        )
        followers = {code: AffiliationFollower(oa, index, sessions) for code, oa in oas.items()}
        revocations = RevocationFollower(ehealth, verifier, on_revoke=notifier.revoked)

        background = Background("hub")
        for code, follower in followers.items():
            background.add(f"affiliations {code}", follower.run)
        background.add("revocations", revocations.run)
        background.add("relations", relations.run)
        background.add("organisations", organisations.run)
        background.add("audit", audit.run)

        async def forget_expired() -> None:
            verifier.forget_expired()

        background.every("expired sessions", tuning.expired_sessions_seconds, forget_expired)

        async def resume_lists() -> None:
            resumed = await core.lists.resume()
            if resumed:
                log.info("patient lists resumed: %d", resumed)

        background.add("patient lists", resume_lists, restart=False)
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

            gauge = telemetry.sampled_gauge(
                "mycarenet.mailbox.size",
                mailbox_size,
                interval=tuning.gauge_refresh_seconds,
                description="Messages waiting in the mailbox (not confirmed by their recipient)",
                unit="{message}",
            )

            async def sample() -> None:
                await gauge.refresh()

            background.every("mailbox gauge", tuning.gauge_refresh_seconds, sample)
        server = MeshServer(
            "hub",
            [
                Service(
                    dmg_service_pb2_grpc.add_DmgServiceServicer_to_server,
                    DmgServicer(core, trust_table),
                    "mycarenet.dmg.v1.DmgService",
                ),
                Service(
                    mailbox_service_pb2_grpc.add_MailboxServiceServicer_to_server,
                    MailboxServicer(core, trust_table),
                    "mycarenet.dmg.v1.MailboxService",
                ),
                Service(
                    insurability_service_pb2_grpc.add_InsurabilityServiceServicer_to_server,
                    InsurabilityServicer(core, trust_table),
                    "mycarenet.insurability.v1.InsurabilityService",
                ),
                Service(
                    invoicing_service_pb2_grpc.add_InvoicingServiceServicer_to_server,
                    InvoicingServicer(core, trust_table),
                    "mycarenet.invoicing.v1.InvoicingService",
                ),
                Service(
                    mailbox_intake_service_pb2_grpc.add_MailboxIntakeServiceServicer_to_server,
                    MailboxIntakeServicer(core, trust_table),
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
                observe=audit.observe,
            ),
        )
        return cls(
            server,
            core,
            engine,
            followers=followers,
            revocations=revocations,
            relations=relations,
            organisations=organisations,
            background=background,
            tuning=tuning,
        )

    @classmethod
    async def from_settings(cls, settings: HubSettings, telemetry: Telemetry | None) -> HubApp:
        """The hub of ``mycarenet-hub`` (see :func:`mycarenet_core.service.run_service`)."""
        channel_credentials, server_creds = mesh_credentials(settings)
        return await cls.create(
            database_url=settings.database_url,
            clock=clock_from_setting(settings.sandbox_date, settings.sandbox_offset_seconds),
            ehealth_target=settings.ehealth_target,
            oa_targets=settings.targets(),
            channel_credentials=channel_credentials,
            server_credentials=server_creds,
            throttle=ThrottleConfig(rate=settings.throttle_rate, burst=settings.throttle_burst),
            abuse=settings.abuse(),
            telemetry=telemetry,
        )

    async def start(self, bind: str = "127.0.0.1:0") -> int:
        """Fetch eHealth's signing keys (briefly: a hub starting before eHealth fetches them on the first
        call), then start the background jobs and serve; return the bound port."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.core.verifier.refresh_keys(force=True), self.tuning.start_timeout)
        return await super().start(bind)

    async def wait_until_synced(self, within: float = 10.0) -> None:
        """Wait until every affiliation feed, the revocation list and the relation register have caught up
        once."""
        events = [f.caught_up.wait() for f in self.followers.values()]
        events += [self.revocations.caught_up.wait(), self.relations.caught_up.wait()]
        events += [self.organisations.caught_up.wait()]
        await asyncio.wait_for(asyncio.gather(*events), within)
