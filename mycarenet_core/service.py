"""One skeleton for every process of the mesh: built from its settings, started, served, stopped alike.

A service is a :class:`ServiceApp`: its :class:`~mycarenet_core.server.MeshServer` (health, reflection, one
interceptor chain), its :class:`~mycarenet_core.lifecycle.Background` jobs, and what must be closed last
(engines, channels); with a movable clock (the sandbox's), the test clock's ProcessClockService too. Tests
build it with ``create(...)``, ``start("127.0.0.1:0")`` and ``stop()``; a process runs ``run_service(...)``
from its ``__main__``, which loads and validates the settings, sets up logging and telemetry, serves until
SIGTERM/SIGINT and stops gracefully in the same order every time:

1. ``stopping`` hooks (end the streams that would otherwise hold the grace period),
2. the server stops accepting calls and lets running ones finish within the grace period,
3. the background jobs are cancelled and awaited,
4. the closers run in reverse order (channels, then the database engine).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import grpc
import uvloop

from mycarenet_core import process_clock
from mycarenet_core.channels import client_credentials, server_credentials
from mycarenet_core.clock import Clock, OffsetClock
from mycarenet_core.config import MeshSettings, configure_logging, load
from mycarenet_core.lifecycle import Background
from mycarenet_core.process_clock import ClockObserver
from mycarenet_core.server import MeshServer
from mycarenet_core.telemetry import Telemetry, from_environment

log = logging.getLogger(__name__)

Closer = Callable[[], Awaitable[None]]
S = TypeVar("S", bound=MeshSettings)


def mesh_credentials(
    settings: MeshSettings,
) -> tuple[grpc.ChannelCredentials | None, grpc.ServerCredentials | None]:
    """(client, server) credentials of a process's mutual TLS from its settings, or ``(None, None)`` for
    plaintext (``insecure``, development only: it wins over certificates given too). Every
    ``from_settings`` takes its credentials here."""
    ca, cert, key = settings.tls_ca, settings.tls_cert, settings.tls_key
    if settings.insecure or ca is None or cert is None or key is None:
        return None, None
    return client_credentials(ca, cert, key), server_credentials(ca, cert, key)


class ServiceApp:
    """A process of the mesh: server, background jobs, closers."""

    def __init__(
        self,
        server: MeshServer,
        *,
        background: Background | None = None,
        closers: list[Closer] | None = None,
        stopping: list[Callable[[], None]] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.server = server
        self.background = background or Background(server.name)
        self.closers = list(closers or [])
        self.stopping = list(stopping or [])
        self._stop_requested = asyncio.Event()
        self._stopped = False
        # The sandbox's test clock: a movable clock is moved through ProcessClockService (the cluster
        # supervisor's), which calls these observers before it answers (an insurer runs its year ends).
        self.clock_observers: list[ClockObserver] = []
        if isinstance(clock, OffsetClock):
            server.mount(process_clock.service(server.name, clock, self.clock_observers))

    @property
    def port(self) -> int | None:
        return self.server.port

    async def start(self, bind: str = "127.0.0.1:0") -> int:
        """Start the background jobs, then serve; return the bound port."""
        self.background.start()
        return await self.server.start(bind)

    async def stop(self, grace: float = 0) -> None:
        """Stop in the one order (module docstring); safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        for hook in self.stopping:
            hook()
        try:
            await self.server.stop(grace)
        finally:
            await self.background.stop()
            for close in reversed(self.closers):
                try:
                    await close()
                except Exception:
                    log.exception("%s: closing failed", self.server.name)

    def request_stop(self) -> None:
        """Ask :meth:`serve_forever` to stop (what SIGTERM and SIGINT do)."""
        for hook in self.stopping:
            hook()
        self._stop_requested.set()

    async def serve_forever(self, bind: str, *, grace: float = 5.0) -> None:
        """Start, wait for SIGTERM/SIGINT (or :meth:`request_stop`), then stop gracefully."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            await self.start(bind)
            await self._stop_requested.wait()
        finally:
            log.info("%s stopping", self.server.name)
            await self.stop(grace)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


Build = Callable[[S, Telemetry | None], Awaitable[ServiceApp]]


def run_service(
    name: str | Callable[[S], str],
    settings_type: type[S],
    build: Build[S],
    *,
    attributes: Callable[[S], Mapping[str, str]] | None = None,
) -> None:
    """The ``main`` of every process: settings (validated, exit 2 when wrong), logging, telemetry from the
    environment, then ``build(settings, telemetry)`` served until a signal. ``name`` (the service name of
    the telemetry) and ``attributes`` (resource attributes) may depend on the settings (an insurer node is
    ``oa-<code>``)."""
    settings = load(settings_type)
    configure_logging(settings.log_level)
    service_name = name if isinstance(name, str) else name(settings)

    async def serve() -> None:
        telemetry = from_environment(
            service_name,
            metrics_port=settings.metrics_port,
            attributes=attributes(settings) if attributes is not None else None,
        )
        try:
            app = await build(settings, telemetry)
            app.server.health_bind = settings.health_bind  # plaintext health only, for probes
            await app.serve_forever(settings.bind, grace=settings.grace_seconds)
        finally:
            if telemetry is not None:
                telemetry.shutdown()  # flush the last spans

    uvloop.run(serve())  # grpc.aio on uvloop: a cheaper event loop than asyncio's own


__all__ = ["Closer", "ServiceApp", "mesh_credentials", "run_service"]
