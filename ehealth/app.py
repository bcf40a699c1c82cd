"""The eHealth process assembled: engine, schema, domain services, servicers and the gRPC server.

``EhealthApp.create(...)`` builds everything (and the first signing keys: CURRENT and NEXT); ``start`` binds
(port 0 in tests) and starts the audit writer; ``stop`` ends the log watchers, stops the server, writes the
last audit rows and disposes the engine. One engine per instance.

Every call passes the trust model first (:class:`mycarenet_core.trust.TrustInterceptor`): the certificate
(or, without TLS, the declared ``x-mcn-peer``), then the session token where the grant needs one, verified
against eHealth's own keys and revocation log (:class:`ehealth.access.SessionVerifier`). Every call it sees
goes to the audit (:class:`ehealth.audit.AuditLog`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable

import grpc

from ehealth.access import SessionVerifier
from ehealth.audit import AuditLog
from ehealth.auth import Authenticator, AuthLimits
from ehealth.cadastre import Cadastre
from ehealth.logs import Logs
from ehealth.mandates import Mandates
from ehealth.relations import Relations
from ehealth.servicers import AuthServicer, CadastreServicer, MandateServicer, TherapeuticRelationServicer
from mycarenet_core.clock import Clock
from mycarenet_core.db import create_engine, session_factory
from mycarenet_core.gen.mycarenet.ehealth.v1 import (
    auth_pb2_grpc,
    cadastre_pb2_grpc,
    mandate_pb2_grpc,
    therapeutic_relation_pb2_grpc,
)
from mycarenet_core.migrations import HISTORIES, upgrade
from mycarenet_core.server import MeshServer, Service
from mycarenet_core.telemetry import Telemetry
from mycarenet_core.trust import TrustInterceptor

PACKAGE = "mycarenet.ehealth.v1"
Disposer = Callable[[], Awaitable[None]]


class EhealthApp:
    """One eHealth instance: its own database and gRPC server."""

    def __init__(
        self, server: MeshServer, auth: Authenticator, logs: Logs, audit: AuditLog, dispose: Disposer
    ) -> None:
        self.server = server
        self.auth = auth
        self.logs = logs
        self.audit = audit
        self._dispose = dispose

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
    ) -> EhealthApp:
        """Create the engine and the schema, the signing keys when there are none, and the server.

        With ``credentials`` (mutual TLS) a caller is the party its certificate names; without, the kind it
        declares (development only). With ``telemetry``, server spans and metrics (interceptors first in the
        chain) and database spans. Audit rows are written every ``audit_interval`` seconds.
        """
        limits = AuthLimits(max_token_lifetime, audience, challenge_ttl)
        engine = create_engine(database_url)
        if telemetry is not None:
            telemetry.instrument_engine(engine)
        try:
            await upgrade(engine, HISTORIES["ehealth"].script_location)
            factory = session_factory(engine)
            logs = Logs(factory, clock)
            auth = Authenticator(factory, clock, limits, logs)
            await auth.ensure_signing_key()
        except BaseException:
            await engine.dispose()
            raise
        audit = AuditLog(factory, clock, interval=audit_interval)
        verifier = SessionVerifier(auth)

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
                CadastreServicer(Cadastre(factory, clock, logs)),
                f"{PACKAGE}.CadastreService",
            ),
            Service(
                therapeutic_relation_pb2_grpc.add_TherapeuticRelationServiceServicer_to_server,
                TherapeuticRelationServicer(Relations(factory, clock), clock),
                f"{PACKAGE}.TherapeuticRelationService",
            ),
            Service(
                mandate_pb2_grpc.add_MandateServiceServicer_to_server,
                MandateServicer(Mandates(factory, clock, logs)),
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
        return cls(server, auth, logs, audit, engine.dispose)

    @property
    def port(self) -> int | None:
        return self.server.port

    async def start(self, bind: str = "127.0.0.1:0") -> int:
        self.audit.start()
        return await self.server.start(bind)

    async def _shutdown(self) -> None:
        """After the server stopped: the last audit rows (of the calls of the grace period too), then the
        engine."""
        try:
            await self.audit.close()
        finally:
            await self._dispose()

    async def stop(self, grace: float = 0) -> None:
        """Close the log streams, stop the server within ``grace`` seconds, write the last audit rows,
        dispose the engine."""
        self.logs.close()
        try:
            await self.server.stop(grace)
        finally:
            await self._shutdown()

    async def serve_forever(self, bind: str, *, grace: float = 5.0) -> None:
        """Serve until SIGTERM/SIGINT (or :meth:`request_stop`), then stop gracefully: the log streams end
        first so that they do not hold the grace period; the audit is written and the engine disposed
        last."""
        server_request_stop = self.server.request_stop

        def request_stop() -> None:
            self.logs.close()
            server_request_stop()

        self.server.request_stop = request_stop  # type: ignore[method-assign]
        self.audit.start()
        await self.server.serve_forever(bind, grace=grace, on_stop=self._shutdown)

    def request_stop(self) -> None:
        self.server.request_stop()
