"""A tiny mesh in process, for tests: yours (a vendor's software against the real services) and ours.

:class:`InProcessMesh` starts the REAL eHealth, one OA node per insurer you name and the hub in your test's
event loop, on free ports of 127.0.0.1, each on a SQLite file in the folder you give, all on one clock (a
fixed instant of the day you name, which only moves when you move it). Nothing is seeded: you add the
providers and the patients your test needs, as the sandbox administrator does, and your software does the
rest with the provider's own session, exactly as against ``./dev up``::

    import datetime as dt
    from mycarenet_sdk.testing import InProcessMesh

    async def test_my_software_consults(tmp_path):
        async with InProcessMesh(tmp_path, insurers=("100", "300"), today=dt.date(2026, 11, 20)) as mesh:
            gp = await mesh.add_provider(first_name="Eva", last_name="Claes", enrolled=True)
            patient = await mesh.add_patient(insurer="300")
            async with mesh.client() as client:          # a mycarenet_sdk.Client connected to the mesh
                await client.login(gp.inami, gp.key)
                await client.register_relation(patient.niss)
                answer = await client.consult(patient.niss, date=mesh.today)
            assert answer.insurer_code == "300"

Every call crosses the trust model as in the cluster: by default on plaintext channels where each caller
declares its certificate kind (``client`` for :meth:`InProcessMesh.client`, ``admin`` for
:attr:`InProcessMesh.admin`); with ``tls=True`` under mutual TLS with a private CA made in ``<folder>/pki``
(:meth:`InProcessMesh.certificate` gives the files, for software that is not written in Python).

What the mesh does asynchronously (the insurers' messages to the hub's mailbox, the DMG relation moving at
eHealth after a notification, the hub's copies of the insurers' members and of eHealth's relations) is
done when :meth:`InProcessMesh.settle` returns. :meth:`InProcessMesh.stop_insurer` and
:meth:`InProcessMesh.start_insurer` take an insurer away and bring it back (same port, same data), to test
how your software copes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import random
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mycarenet_core.channels import client_credentials, open_channel, server_credentials
from mycarenet_core.clock import BRUSSELS, FixedClock
from mycarenet_core.gen.mycarenet.ehealth.v1 import (
    cadastre_pb2,
    cadastre_pb2_grpc,
    therapeutic_relation_pb2,
    therapeutic_relation_pb2_grpc,
)
from mycarenet_core.gen.mycarenet.oa.v1 import (
    holding_feed_service_pb2,
    holding_feed_service_pb2_grpc,
    membership_service_pb2,
    membership_service_pb2_grpc,
)
from mycarenet_core.identifiers import INSURER_CODES, Profession, make_inami, make_niss
from mycarenet_sdk.admin import AdminClient
from mycarenet_sdk.client import Client, MyCareNetError
from mycarenet_sdk.keys import load_private_key

if TYPE_CHECKING:
    from ehealth.app import EhealthApp
    from hub.app import HubApp
    from oa_node.app import OaNodeApp

DEFAULT_INSURERS = ("100", "300")
BANK = {"iban": "BE68539007547034", "bic": "GEBABEBB"}


@dataclass(frozen=True)
class MeshProvider:
    """A provider written in eHealth's cadastre, with the private key it logs in with (also in
    ``key_file``)."""

    inami: str
    first_name: str
    last_name: str
    niss: str
    key_file: Path
    key: Ed25519PrivateKey = field(repr=False)


@dataclass(frozen=True)
class MeshPatient:
    """A member of one insurer, known to the hub's routing when :meth:`InProcessMesh.add_patient`
    returns."""

    niss: str
    insurer: str
    registration_number: str
    first_name: str
    last_name: str


@dataclass(frozen=True)
class Certificate:
    """The files of one certificate of the mesh's private CA (``tls=True``)."""

    ca: Path
    cert: Path
    key: Path


def _free_port() -> int:
    """A free port below Linux's ephemeral range (32768+): the processes' outgoing connections take their
    local ports from that range, and one could take a port picked there before the mesh binds it."""
    for _ in range(200):
        port = random.randint(20_000, 32_000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000..32000")


def _clock_for(today: dt.date | str | None) -> FixedClock:
    day = dt.date.fromisoformat(today) if isinstance(today, str) else today or dt.date.today()
    return FixedClock(dt.datetime.combine(day, dt.time(9, 0), tzinfo=BRUSSELS).astimezone(dt.UTC))


class InProcessMesh:
    """eHealth, the OA nodes of ``insurers`` and the hub, in process (module docstring). Use ``async with``
    (or :meth:`start` and :meth:`stop`)."""

    def __init__(
        self,
        folder: Path,
        *,
        insurers: Sequence[str] = DEFAULT_INSURERS,
        today: dt.date | str | None = None,
        tls: bool = False,
        throttle_rate: float = 1000.0,
        throttle_burst: int = 10_000,
        timeout: float = 30.0,
    ) -> None:
        unknown = [code for code in insurers if code not in INSURER_CODES]
        if unknown or not insurers:
            raise ValueError(f"insurers must be among {', '.join(INSURER_CODES)} (got {list(insurers)})")
        self.folder = Path(folder)
        self.insurers = tuple(dict.fromkeys(insurers))
        self.clock = _clock_for(today)
        self.tls = tls
        self.throttle_rate = throttle_rate
        self.throttle_burst = throttle_burst
        self.timeout = timeout
        self.ehealth_app: EhealthApp | None = None
        self.hub_app: HubApp | None = None
        self.oa_apps: dict[str, OaNodeApp] = {}
        self.ports: dict[str, int] = {}
        self._admin: AdminClient | None = None
        self._clients: list[Client] = []
        self._channels: dict[tuple[str, str], grpc.aio.Channel] = {}
        self._sequence = itertools.count(1)

    # --- addresses and credentials --------------------------------------------------------------------

    @property
    def today(self) -> dt.date:
        """The mesh's today (``mesh.clock.advance(...)`` or ``mesh.clock.set(...)`` moves it)."""
        return self.clock.today()

    def _address(self, process: str) -> str:
        # Under TLS the certificates name "localhost"; every server listens on 127.0.0.1.
        return f"{'localhost' if self.tls else '127.0.0.1'}:{self.ports[process]}"

    @property
    def hub_address(self) -> str:
        return self._address("hub")

    @property
    def ehealth_address(self) -> str:
        return self._address("ehealth")

    @property
    def insurer_addresses(self) -> dict[str, str]:
        return {code: self._address(f"oa-{code}") for code in self.insurers}

    @property
    def pki(self) -> Path:
        return self.folder / "pki"

    def certificate(self, kind: str) -> Certificate:
        """The CA, certificate and key of ``kind`` (``client`` for provider software, ``admin``,
        ``backoffice``, or a process: ``hub``, ``ehealth``, ``oa-100`` ...); made on first use. Only with
        ``tls=True``."""
        if not self.tls:
            raise ValueError("the mesh runs without TLS (InProcessMesh(..., tls=True) makes a private CA)")
        from mycarenet_cluster import pki

        paths = pki.ensure_identity(self.pki, kind)
        return Certificate(paths.ca, paths.cert, paths.key)

    def _channel_credentials(self, kind: str) -> grpc.ChannelCredentials | None:
        if not self.tls:
            return None
        files = self.certificate(kind)
        return client_credentials(files.ca, files.cert, files.key)

    def _server_credentials(self, kind: str) -> grpc.ServerCredentials | None:
        if not self.tls:
            return None
        files = self.certificate(kind)
        return server_credentials(files.ca, files.cert, files.key)

    def _channel(self, process: str, kind: str) -> grpc.aio.Channel:
        """The mesh's own channel to ``process`` as ``kind`` (for :meth:`settle`)."""
        key = (process, kind)
        if key not in self._channels:
            self._channels[key] = open_channel(
                self._address(process),
                credentials=self._channel_credentials(kind),
                identity=kind,
                options=[("grpc.use_local_subchannel_pool", 1)],
            )
        return self._channels[key]

    # --- the clients --------------------------------------------------------------------------------

    @property
    def admin(self) -> AdminClient:
        """The sandbox administrator's client (:class:`mycarenet_sdk.AdminClient`) of eHealth and the
        insurers: cadastre, credentials, members, relations and mandates for anyone."""
        if self._admin is None:
            raise RuntimeError("the mesh is not started (use `async with InProcessMesh(...)`)")
        return self._admin

    def client(self, *, timeout: float = 10.0) -> Client:
        """A new provider-software client (:class:`mycarenet_sdk.Client`, the ``client`` certificate) of
        the hub and eHealth, not logged in; closed with the mesh if you do not close it."""
        if self.hub_app is None:
            raise RuntimeError("the mesh is not started (use `async with InProcessMesh(...)`)")
        client = Client(
            hub=self.hub_address,
            ehealth=self.ehealth_address,
            credentials=self._channel_credentials("client"),
            timeout=timeout,
        )
        self._clients.append(client)
        return client

    async def login(self, provider: MeshProvider, **kwargs: Any) -> Client:
        """A new client logged in as ``provider`` (``kwargs`` go to :meth:`Client.login`)."""
        client = self.client()
        await client.login(provider.inami, provider.key, **kwargs)
        return client

    async def login_pharmacy(self, pharmacy: MeshProvider, pharmacist: MeshProvider) -> Client:
        """A new client in ``pharmacy``'s session, opened by ``pharmacist`` (a member of it): how a pharmacist
        consults insurability and rights (seed 003 §8.2.2.1-3)."""
        client = self.client()
        await client.login(
            pharmacy.inami, pharmacy.key, kind="organisation", pharmacist=(pharmacist.inami, pharmacist.key)
        )
        return client

    # --- what the administrator does ---------------------------------------------------------------

    async def add_provider(
        self,
        inami: str | None = None,
        *,
        first_name: str = "Anne",
        last_name: str = "Dupont",
        niss: str = "",
        supervisor_inami: str = "",
        enrolled: bool = False,
    ) -> MeshProvider:
        """Write a provider in eHealth's cadastre with a new credential key (``<folder>/keys/<inami>.pem``)
        and return once every insurer knows it. Without ``inami``, a new accredited GP; without ``niss``, a
        new one. ``enrolled``: the provider also enrols (with its own session) for the electronic DMG at
        every insurer."""
        inami = inami or make_inami(Profession.PHYSICIAN, 70_000 + next(self._sequence), "003")
        niss = niss or self._new_niss(1950)
        key_file = self.folder / "keys" / f"{inami}.pem"
        key_file.parent.mkdir(parents=True, exist_ok=True)
        await self.admin.add_provider(
            inami,
            first_name=first_name,
            last_name=last_name,
            niss=niss,
            supervisor_inami=supervisor_inami,
            key_file=key_file,
            wait=True,
            wait_seconds=self.timeout,
        )
        provider = MeshProvider(inami, first_name, last_name, niss, key_file, load_private_key(key_file))
        if enrolled:
            client = await self.login(provider)
            try:
                await client.enrol(**BANK, holder_name=f"{first_name} {last_name}")
            finally:
                await client.close()
        return provider

    async def add_pharmacy(
        self, pharmacists: list[MeshProvider], *, inami: str | None = None, name: str = "Pharmacie du Centre"
    ) -> MeshProvider:
        """Write a pharmacy (an organisation with its credential key, ``<folder>/keys/<inami>.pem``) whose
        members are ``pharmacists``, and return once every insurer knows it; log in to it with
        :meth:`login_pharmacy`."""
        inami = inami or make_inami(Profession.ORGANISATION, 55_000 + next(self._sequence), "300")
        key_file = self.folder / "keys" / f"{inami}.pem"
        key_file.parent.mkdir(parents=True, exist_ok=True)
        await self.admin.add_organisation(
            inami,
            name=name,
            kind="pharmacy",
            members=[p.inami for p in pharmacists],
            wait=True,
            wait_seconds=self.timeout,
        )
        await self.admin.register_credential(inami, kind="organisation", key_file=key_file)
        return MeshProvider(inami, "", name, "", key_file, load_private_key(key_file))

    async def add_patient(
        self,
        niss: str | None = None,
        *,
        insurer: str | None = None,
        first_name: str = "Jan",
        last_name: str = "Peeters",
        **kwargs: Any,
    ) -> MeshPatient:
        """Make a member of ``insurer`` (default the first of the mesh) and return once the hub routes
        the NISS to it. Without ``niss``, a new one. ``kwargs`` go to :meth:`AdminClient.add_patient`
        (``birth_date``, ``affiliated_from``, ``chronic_condition``, ``medical_house_inami`` ...)."""
        code = insurer or self.insurers[0]
        niss = niss or self._new_niss(1960)
        answer = await self.admin.add_patient(
            niss, insurer=code, first_name=first_name, last_name=last_name, **kwargs
        )
        assert self.hub_app is not None
        await self.hub_app.followers[code].wait_for(answer.last_sequence, self.timeout)
        member = await self.admin.get_member(niss, insurer=code)
        number = member.patient.member.registration_number
        return MeshPatient(member.patient.niss, code, number, first_name, last_name)

    def _new_niss(self, from_year: int) -> str:
        n = next(self._sequence)
        return make_niss(dt.date(from_year + n % 40, 1 + n % 12, 1 + n % 28), 1 + (2 * n) % 997)

    # --- waiting for what the mesh does asynchronously -------------------------------------------------

    async def settle(self, within: float | None = None) -> None:
        """Return once what the mesh does after a call has been done: every insurer's messages delivered
        to the hub's mailbox, every DMG holder change applied at eHealth (the DMG relation moved), and the
        hub's copies (members, relations, organisations) and the insurers' cadastre up to date."""
        if self.hub_app is None or self.ehealth_app is None:
            raise RuntimeError("the mesh is not started")
        deadline = time.monotonic() + (within if within is not None else self.timeout)

        def left() -> float:
            return max(0.1, deadline - time.monotonic())

        from oa_node.repositories.records import OutboxRepository

        for code, app in self.oa_apps.items():  # 1. the insurers' messages reached the hub
            while True:
                async with app.sessions() as session:
                    if await OutboxRepository(session).backlog() == 0:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"insurer {code} still has messages for the hub")
                await asyncio.sleep(0.02)
        for code in self.oa_apps:  # 2. eHealth moved the DMG relations the insurers committed
            feed = holding_feed_service_pb2_grpc.HoldingFeedServiceStub(
                self._channel(f"oa-{code}", "ehealth")
            )
            head = await feed.ListHolderChanges(
                holding_feed_service_pb2.ListHolderChangesRequest(page_size=1), timeout=left()
            )
            await self.ehealth_app.followers[code].wait_for(head.head_sequence, left())
        for code in self.oa_apps:  # 3. the hub has every member ...
            members = membership_service_pb2_grpc.MembershipServiceStub(self._channel(f"oa-{code}", "hub"))
            affiliations = await members.ListAffiliationChanges(
                membership_service_pb2.ListAffiliationChangesRequest(page_size=1), timeout=left()
            )
            await self.hub_app.followers[code].wait_for(affiliations.last_sequence, left())
        admin = self._channel("ehealth", "admin")  # ... every relation and organisation
        relations = therapeutic_relation_pb2_grpc.TherapeuticRelationServiceStub(admin)
        changes = await relations.ListRelationChanges(
            therapeutic_relation_pb2.ListRelationChangesRequest(page_size=1), timeout=left()
        )
        await self.hub_app.relations.wait_for(changes.head_sequence, left())
        cadastre = cadastre_pb2_grpc.CadastreServiceStub(admin)
        written = await cadastre.ListCadastreChanges(
            cadastre_pb2.ListCadastreChangesRequest(page_size=1), timeout=left()
        )
        await self.hub_app.organisations.wait_for(written.head_sequence, left())
        if self.oa_apps:  # and the insurers know eHealth's cadastre as it is
            await self.admin.wait_for_cadastre(written.head_sequence, seconds=left(), poll=0.05)

    # --- life cycle -----------------------------------------------------------------------------------

    async def __aenter__(self) -> InProcessMesh:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self, attempts: int = 3) -> None:
        """Start eHealth, the OA nodes and the hub (in that order, on free ports), and wait until the hub
        follows them all. A port taken in between is retried on other ports."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, attempts + 1):
            try:
                await self._start_once()
                return
            except RuntimeError as error:  # grpc's "Failed to bind to address", MeshServer's "could not bind"
                await self.stop()
                if "bind" not in str(error).lower() or attempt == attempts:
                    raise
            except BaseException:
                await self.stop()
                raise

    async def _start_once(self) -> None:
        from ehealth.app import EhealthApp
        from hub.app import HubApp, HubTuning
        from hub.patient_list import ListPolicy
        from hub.throttle import ThrottleConfig
        from hub.upstream import CallPolicy

        self.ports = {name: _free_port() for name in ("ehealth", "hub", *(f"oa-{c}" for c in self.insurers))}
        self.ehealth_app = await EhealthApp.create(
            database_url=self._database("ehealth"),
            clock=self.clock,
            credentials=self._server_credentials("ehealth"),
            oa_targets=self.insurer_addresses,
            oa_credentials=self._channel_credentials("ehealth"),
        )
        await self.ehealth_app.start(f"127.0.0.1:{self.ports['ehealth']}")
        for code in self.insurers:
            await self.start_insurer(code)
        self.hub_app = await HubApp.create(
            database_url=self._database("hub"),
            clock=self.clock,
            ehealth_target=self.ehealth_address,
            oa_targets=self.insurer_addresses,
            channel_credentials=self._channel_credentials("hub"),
            server_credentials=self._server_credentials("hub"),
            throttle=ThrottleConfig(rate=self.throttle_rate, burst=self.throttle_burst),
            tuning=HubTuning(
                calls=CallPolicy(
                    max_deadline=5.0, default_deadline=5.0, connect_timeout=0.5, breaker_cooldown=1.0
                ),
                lists=ListPolicy(retry_window=8.0, initial_backoff=0.1, max_backoff=0.5),
                key_refresh_seconds=0.0,
            ),
        )
        await self.hub_app.start(f"127.0.0.1:{self.ports['hub']}")
        self._admin = AdminClient(
            ehealth=self.ehealth_address,
            insurers=self.insurer_addresses,
            credentials=self._channel_credentials("admin"),
            timeout=self.timeout,
        )
        await self.hub_app.wait_until_synced(self.timeout)

    def _database(self, process: str) -> str:
        return f"sqlite+aiosqlite:///{self.folder / f'{process}.db'}"

    async def start_insurer(self, code: str) -> None:
        """Start insurer ``code``'s node (again, after :meth:`stop_insurer`: same port, same data)."""
        from oa_node.app import OaNodeApp

        if code not in self.insurers:
            raise ValueError(f"insurer {code} is not part of this mesh ({', '.join(self.insurers)})")
        if code in self.oa_apps:
            raise RuntimeError(f"insurer {code} runs already")
        app = await OaNodeApp.create(
            insurer_code=code,
            database_url=self._database(f"oa-{code}"),
            clock=self.clock,
            hub_intake_target=self.hub_address,
            relay_interval=1.0,
            channel_credentials=self._channel_credentials(f"oa-{code}"),
            server_credentials=self._server_credentials(f"oa-{code}"),
            ehealth_target=self.ehealth_address,
        )
        try:
            await app.start(f"127.0.0.1:{self.ports[f'oa-{code}']}")
        except BaseException:
            await app.stop(0)
            raise
        self.oa_apps[code] = app

    async def stop_insurer(self, code: str) -> None:
        """Stop insurer ``code``'s node: calls that need it fail as when an insurer is down."""
        app = self.oa_apps.pop(code, None)
        if app is None:
            raise RuntimeError(f"insurer {code} is not running")
        await app.stop(0)

    async def stop(self) -> None:
        """Close every client the mesh gave and stop every process; safe to call twice."""
        errors: list[BaseException] = []

        async def attempt(step: Any) -> None:
            try:
                await step
            except Exception as error:  # keep stopping the rest
                errors.append(error)

        for client in self._clients:
            await attempt(client.close())
        self._clients.clear()
        if self._admin is not None:
            await attempt(self._admin.close())
            self._admin = None
        for channel in self._channels.values():
            await attempt(channel.close(None))
        self._channels.clear()
        if self.hub_app is not None:
            await attempt(self.hub_app.stop(0))
            self.hub_app = None
        for code in list(self.oa_apps):
            await attempt(self.oa_apps.pop(code).stop(0))
        if self.ehealth_app is not None:
            await attempt(self.ehealth_app.stop(0))
            self.ehealth_app = None
        if errors:
            raise errors[0]


__all__ = ["Certificate", "InProcessMesh", "MeshPatient", "MeshProvider", "MyCareNetError"]
