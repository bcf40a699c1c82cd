"""The eHealth process assembled: engine, schema, domain services, servicers and the gRPC server.

``EhealthApp.create(...)`` builds everything (and a first signing key); ``start`` binds (port 0 in tests);
``stop`` ends the revocation watchers, stops the server and disposes the engine. One engine per instance.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable

import grpc

from ehealth.auth import Authenticator, AuthLimits, RevocationFeed
from ehealth.cadastre import Cadastre
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

PACKAGE = "mycarenet.ehealth.v1"
Disposer = Callable[[], Awaitable[None]]


class EhealthApp:
    """One eHealth instance: its own database and gRPC server."""

    def __init__(self, server: MeshServer, auth: Authenticator, dispose: Disposer) -> None:
        self.server = server
        self.auth = auth
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
    ) -> EhealthApp:
        """Create the engine and the schema, a first signing key when there is none, and the server.

        With ``telemetry``, server spans and metrics (interceptors first in the chain) and database spans.
        """
        limits = AuthLimits(max_token_lifetime, audience, challenge_ttl)
        engine = create_engine(database_url)
        if telemetry is not None:
            telemetry.instrument_engine(engine)
        try:
            await upgrade(engine, HISTORIES["ehealth"].script_location)
            factory = session_factory(engine)
            auth = Authenticator(factory, clock, limits, RevocationFeed())
            await auth.ensure_signing_key()
        except BaseException:
            await engine.dispose()
            raise
        services = [
            Service(
                auth_pb2_grpc.add_AuthServiceServicer_to_server, AuthServicer(auth), f"{PACKAGE}.AuthService"
            ),
            Service(
                cadastre_pb2_grpc.add_CadastreServiceServicer_to_server,
                CadastreServicer(Cadastre(factory, clock)),
                f"{PACKAGE}.CadastreService",
            ),
            Service(
                therapeutic_relation_pb2_grpc.add_TherapeuticRelationServiceServicer_to_server,
                TherapeuticRelationServicer(Relations(factory, clock), clock),
                f"{PACKAGE}.TherapeuticRelationService",
            ),
            Service(
                mandate_pb2_grpc.add_MandateServiceServicer_to_server,
                MandateServicer(Mandates(factory, clock)),
                f"{PACKAGE}.MandateService",
            ),
        ]
        server = MeshServer(
            "ehealth",
            services,
            credentials=credentials,
            interceptors=telemetry.server_interceptors if telemetry else (),
        )
        return cls(server, auth, engine.dispose)

    @property
    def port(self) -> int | None:
        return self.server.port

    async def start(self, bind: str = "127.0.0.1:0") -> int:
        return await self.server.start(bind)

    async def stop(self, grace: float = 0) -> None:
        """Close the revocation streams, stop the server within ``grace`` seconds, dispose the engine."""
        self.auth.feed.close()
        try:
            await self.server.stop(grace)
        finally:
            await self._dispose()

    async def serve_forever(self, bind: str, *, grace: float = 5.0) -> None:
        """Serve until SIGTERM/SIGINT (or :meth:`request_stop`), then stop gracefully: the revocation
        streams end first so that they do not hold the grace period, the engine is disposed last."""
        server_request_stop = self.server.request_stop

        def request_stop() -> None:
            self.auth.feed.close()
            server_request_stop()

        self.server.request_stop = request_stop  # type: ignore[method-assign]
        await self.server.serve_forever(bind, grace=grace, on_stop=self._dispose)

    def request_stop(self) -> None:
        self.server.request_stop()
