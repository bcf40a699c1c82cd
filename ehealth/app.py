"""The eHealth process assembled on the one skeleton of the mesh (:class:`mycarenet_core.service.ServiceApp`).

``EhealthApp.create(...)`` migrates the database, makes the first signing keys (CURRENT and NEXT) and builds
the domain, the servicers and the server; ``start`` binds (port 0 in tests) and starts the background jobs
(the audit writer, a follower per insurer's holder-change feed); ``stop`` ends the followed logs' watch
streams (so that they do not hold the grace period), stops the server, the jobs, then writes the last audit
rows, closes the insurers' channels and disposes the engine. One engine per instance. ``build`` makes it from
the settings, for :func:`mycarenet_core.service.run_service`.

Every call passes the trust model first (:class:`mycarenet_core.trust.TrustInterceptor`): the certificate
(or, without TLS, the declared ``x-mcn-peer``), then the session token where the grant needs one, verified
against eHealth's own keys and revocation log (:class:`ehealth.access.SessionVerifier`). Every call it sees
goes to the audit (:class:`ehealth.audit.AuditLog`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import grpc

from ehealth.access import SessionVerifier
from ehealth.audit import AuditLog
from ehealth.auth import Authenticator, AuthLimits
from ehealth.cadastre import Cadastre
from ehealth.holders import HolderFollower, HolderMoves
from ehealth.logs import Logs
from ehealth.mandates import Mandates
from ehealth.relations import Relations
from ehealth.servicers import AuthServicer, CadastreServicer, MandateServicer, TherapeuticRelationServicer
from ehealth.settings import EhealthSettings
from ehealth.store import Database
from mycarenet_core.channels import open_channel
from mycarenet_core.clock import Clock, clock_from_setting
from mycarenet_core.gen.mycarenet.ehealth.v1 import (
    auth_pb2_grpc,
    cadastre_pb2_grpc,
    mandate_pb2_grpc,
    therapeutic_relation_pb2_grpc,
)
from mycarenet_core.lifecycle import Background
from mycarenet_core.migrations import HISTORIES, upgrade
from mycarenet_core.server import MeshServer, Service
from mycarenet_core.service import ServiceApp, mesh_credentials
from mycarenet_core.telemetry import Telemetry
from mycarenet_core.trust import TrustInterceptor

PACKAGE = "mycarenet.ehealth.v1"


class EhealthApp(ServiceApp):
    """One eHealth instance: its own database, gRPC server and background jobs."""

    def __init__(
        self,
        server: MeshServer,
        *,
        db: Database,
        auth: Authenticator,
        logs: Logs,
        audit: AuditLog,
        relations: Relations,
        moves: HolderMoves,
        oa_credentials: grpc.ChannelCredentials | None,
        telemetry: Telemetry | None,
    ) -> None:
        background = Background("ehealth")
        background.add("audit writer", audit.run)
        super().__init__(
            server,
            background=background,
            closers=[db.dispose, audit.close],
            stopping=[logs.close],
            clock=auth.clock,
        )
        self.db = db
        self.auth = auth
        self.logs = logs
        self.audit = audit
        self.relations = relations
        self.moves = moves
        self.followers: dict[str, HolderFollower] = {}
        self._oa_credentials = oa_credentials
        self._telemetry = telemetry

    @classmethod
    async def create(
        cls,
        *,
        database_url: str,
        clock: Clock,
        max_token_lifetime: dt.timedelta = dt.timedelta(hours=12),
        audience: str = "mycarenet",
        challenge_ttl: dt.timedelta = dt.timedelta(minutes=2),
        credentials: grpc.ServerCredentials | None = None,
        telemetry: Telemetry | None = None,
        audit_interval: float = 0.2,
        oa_targets: Mapping[str, str] | None = None,
        oa_credentials: grpc.ChannelCredentials | None = None,
    ) -> EhealthApp:
        """Migrate the database, make the signing keys when there are none, build the server.

        With ``credentials`` (mutual TLS) a caller is the party its certificate names; without, the kind it
        declares (development only). With ``telemetry``, server spans and metrics (interceptors first in the
        chain), database spans, client spans towards the insurers. Audit rows are written every
        ``audit_interval`` seconds. ``oa_targets`` (insurer code → host:port): the insurers whose
        holder-change feeds eHealth follows, over ``oa_credentials`` (eHealth's own certificate) or,
        without, plaintext channels that declare the ``ehealth`` identity.
        """
        limits = AuthLimits(max_token_lifetime, audience, challenge_ttl)
        db = Database(database_url)
        if telemetry is not None:
            for engine in db.engines:
                telemetry.instrument_engine(engine)
        try:
            await upgrade(db.engine, HISTORIES["ehealth"].script_location)
            logs = Logs(db, clock)
            auth = Authenticator(db, clock, limits, logs)
            await auth.ensure_signing_key()
        except BaseException:
            await db.dispose()
            raise
        audit = AuditLog(db, clock, interval=audit_interval)
        verifier = SessionVerifier(auth)
        relations = Relations(db, clock, logs)

        async def keys_changed() -> None:
            await verifier.refresh_keys(force=True)

        services = [
            Service(
                auth_pb2_grpc.add_AuthServiceServicer_to_server,
                AuthServicer(auth, on_rotate=keys_changed),
                f"{PACKAGE}.AuthService",
            ),
            Service(
                cadastre_pb2_grpc.add_CadastreServiceServicer_to_server,
                CadastreServicer(Cadastre(db, clock, logs)),
                f"{PACKAGE}.CadastreService",
            ),
            Service(
                therapeutic_relation_pb2_grpc.add_TherapeuticRelationServiceServicer_to_server,
                TherapeuticRelationServicer(relations, clock),
                f"{PACKAGE}.TherapeuticRelationService",
            ),
            Service(
                mandate_pb2_grpc.add_MandateServiceServicer_to_server,
                MandateServicer(Mandates(db, clock, logs)),
                f"{PACKAGE}.MandateService",
            ),
        ]
        server = MeshServer(
            "ehealth",
            services,
            credentials=credentials,
            interceptors=telemetry.server_interceptors if telemetry else (),
            trust=TrustInterceptor(secure=credentials is not None, verifier=verifier, observe=audit.observe),
        )
        app = cls(
            server,
            db=db,
            auth=auth,
            logs=logs,
            audit=audit,
            relations=relations,
            moves=HolderMoves(db, logs, relations, telemetry),
            oa_credentials=oa_credentials,
            telemetry=telemetry,
        )
        for code, target in sorted((oa_targets or {}).items()):
            app.follow_insurer(code, target)
        return app

    @classmethod
    async def from_settings(cls, settings: EhealthSettings, telemetry: Telemetry | None) -> EhealthApp:
        """eHealth of ``mycarenet-ehealth`` (see :func:`mycarenet_core.service.run_service`)."""
        oa_credentials, credentials = mesh_credentials(settings)
        return await cls.create(
            database_url=settings.database_url,
            clock=clock_from_setting(settings.sandbox_date, settings.sandbox_offset_seconds),
            max_token_lifetime=settings.max_token_lifetime,
            audience=settings.audience,
            challenge_ttl=settings.challenge_ttl,
            credentials=credentials,
            telemetry=telemetry,
            oa_targets=settings.insurer_targets,
            oa_credentials=oa_credentials,
        )

    def follow_insurer(self, code: str, target: str) -> HolderFollower:
        """Follow the holder-change feed of insurer ``code`` at ``target`` (host:port): a background job,
        started with the others (at once when the app already runs)."""
        if code in self.followers:
            raise ValueError(f"insurer {code} is followed already")
        telemetry = self._telemetry
        channel = open_channel(
            target,
            credentials=self._oa_credentials,
            interceptors=telemetry.client_interceptors_for(peer_service=f"oa-{code}") if telemetry else (),
            identity="ehealth",
        )
        follower = HolderFollower(code, channel, self.moves)
        self.followers[code] = follower

        async def close() -> None:
            await channel.close(None)

        self.closers.append(close)
        self.background.add(f"holder feed of oa-{code}", follower.run, backoff=follower.backoff)
        return follower
