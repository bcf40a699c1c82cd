"""The mesh under test: its description, a cluster the bench starts itself, the actors of the seeded
population, and the scenarios (consult, notify, list, mailbox) as single timed gRPC calls.

The population is deterministic: ``mycarenet_cluster.population.build(size, today, seed)`` regenerates the
seeded one, so every patient comes with the insurer it is affiliated with today and its usual GP, with whom
the seeder registered a therapeutic relation; every provider's key is ``<data>/keys/<inami>.pem``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from mycarenet_cluster import pki, population
from mycarenet_cluster.population import CONTACT_CODES
from mycarenet_cluster.probe import DESCRIPTION, channel_credentials, health, pid_alive
from mycarenet_sdk.keys import load_private_key

from mycarenet_bench.baseline import TlsPaths
from mycarenet_core.channels import open_channel
from mycarenet_core.errors import parse_rpc_error
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import (
    dmg_service_pb2,
    dmg_service_pb2_grpc,
    mailbox_service_pb2,
    mailbox_service_pb2_grpc,
)
from mycarenet_core.gen.mycarenet.ehealth.v1 import auth_pb2, auth_pb2_grpc
from mycarenet_core.gen.mycarenet.insurability.v1 import (
    insurability_service_pb2,
    insurability_service_pb2_grpc,
)

SCENARIOS = ("consult", "notify", "list", "mailbox", "insurability", "rights")
DEFAULT_MIX = "consult=70,notify=10,list=5,mailbox=15"
# Throttle of a cluster the bench starts: high enough that the load, not the abuse rule, is measured.
BENCH_THROTTLE_RATE = 1_000_000.0
BENCH_THROTTLE_BURST = 1_000_000
# The load is systematic by design (every virtual provider consults patients at random): the abuse control of
# the insurability services (hub/abuse.py) would warn, then exclude them. The bench's cluster raises it.
BENCH_ABUSE_MAX_DISTINCT_PATIENTS = 1_000_000_000


class ClusterNotUp(RuntimeError):
    """No running cluster with this data folder."""


@dataclass
class ClusterHandle:
    """A running cluster, known through ``<data>/cluster.json`` (re-read for fresh pids)."""

    data: Path
    desc: dict[str, Any]

    @classmethod
    def load(cls, data: Path) -> ClusterHandle:
        path = data / DESCRIPTION
        if not path.is_file():
            raise ClusterNotUp(f"no cluster description at {path}: run `mycarenet-cluster up` first")
        desc: dict[str, Any] = json.loads(path.read_text())
        if not pid_alive(desc.get("supervisor_pid")):
            raise ClusterNotUp(f"the cluster of {data} is not running (stale {DESCRIPTION})")
        return cls(data, desc)

    def refresh(self) -> dict[str, Any]:
        """The description as the supervisor last wrote it (the pids change when it restarts a process)."""
        with contextlib.suppress(OSError, ValueError):
            self.desc = json.loads((self.data / DESCRIPTION).read_text())
        return self.desc

    def address(self, role: str) -> str:
        for proc in self.desc["processes"]:
            if proc["role"] == role:
                address: str = proc["address"]
                return address
        raise KeyError(role)

    @property
    def today(self) -> dt.date:
        return dt.date.fromisoformat(self.desc["today"])

    @property
    def keys(self) -> Path:
        return Path(self.desc.get("keys") or self.data / "keys")

    @property
    def credentials(self) -> grpc.ChannelCredentials | None:
        return channel_credentials(self.desc.get("tls"))

    def population_size(self) -> int:
        """The ``--population`` the cluster was seeded with (the seeder adds the demo patient and the
        newborns; a description written before it recorded the size has only the demo patient added)."""
        seed = self.desc.get("seed") or {}
        if "population" in seed:
            return int(seed["population"])
        members = int(seed.get("members", 0))
        if members <= 1:
            raise ClusterNotUp("the cluster description has no seed information; give --population")
        return members - 1

    def baseline_tls(self) -> TlsPaths | None:
        """Certificates for the baseline echo servers, from the cluster's own CA (None when insecure)."""
        tls = self.desc.get("tls")
        if not tls:
            return None
        echo = pki.ensure_identity(Path(tls["ca"]).parent, "bench-echo")
        return TlsPaths(
            Path(tls["ca"]), echo.cert, echo.key, Path(tls["client_cert"]), Path(tls["client_key"])
        )

    async def health(self, address: str) -> str:
        return await health(address, self.credentials, deadline=0.5)


def free_base_port() -> int:
    """A base port whose cluster ports (base, +1, +10..+16, +30..+36) are free now."""
    rng = random.Random()
    for _ in range(100):
        base = rng.randrange(20000, 40000, 40)
        ports = [base, base + 1, *range(base + 10, base + 17), *range(base + 30, base + 37)]
        socks: list[socket.socket] = []
        try:
            for port in ports:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise RuntimeError("no free port range for a cluster")


@dataclass
class StartedCluster:
    """A cluster the bench starts (``mycarenet-cluster up`` as a child process) and stops again.

    The hub's per-provider throttle is raised through MCN_HUB_THROTTLE_RATE / MCN_HUB_THROTTLE_BURST, its
    abuse control through MCN_HUB_ABUSE_MAX_DISTINCT_PATIENTS (the supervisor passes its environment on).
    Faults go through the cluster's chaos API: no proxy on any link.
    """

    data: Path
    population: int = 2000
    today: str | None = None
    base_port: int | None = None
    throttle_rate: float = BENCH_THROTTLE_RATE
    throttle_burst: int = BENCH_THROTTLE_BURST
    timeout: float = 600.0
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> ClusterHandle:
        self.data.mkdir(parents=True, exist_ok=True)
        base = self.base_port or free_base_port()
        args = [
            str(Path(sys.executable).parent / "mycarenet-cluster"),
            "up",
            "--data",
            str(self.data),
            "--base-port",
            str(base),
            "--population",
            str(self.population),
        ]
        if self.today:
            args += ["--today", self.today]
        env = {
            **os.environ,
            "MCN_HUB_THROTTLE_RATE": str(self.throttle_rate),
            "MCN_HUB_THROTTLE_BURST": str(self.throttle_burst),
            "MCN_HUB_ABUSE_MAX_DISTINCT_PATIENTS": str(BENCH_ABUSE_MAX_DISTINCT_PATIENTS),
        }
        log = (self.data / "bench-cluster.log").open("ab")
        try:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        finally:
            log.close()
        deadline = time.monotonic() + self.timeout
        path = self.data / DESCRIPTION
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = (self.data / "bench-cluster.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"mycarenet-cluster up exited with {self.process.returncode}:\n{tail}")
            if path.is_file():
                with contextlib.suppress(ValueError):
                    desc = json.loads(path.read_text())
                    if desc.get("supervisor_pid") == self.process.pid:
                        return ClusterHandle(self.data, desc)
            time.sleep(0.3)
        self.stop()
        raise TimeoutError("the cluster did not come up")

    def stop(self, timeout: float = 60.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class Patient:
    niss: str
    insurer: str  # affiliated today
    gp: str  # usual GP (therapeutic relation seeded)


@dataclass
class Workload:
    """Who calls about whom: patients with their usual GP, and the GPs who can notify and list."""

    patients: list[Patient]
    notify_patients: list[Patient]
    gps: list[str]
    pharmacies: list[tuple[str, str]] = field(default_factory=list)
    """(pharmacy, the pharmacist who opens its session), both with a key: the insurability and rights
    scenarios call in pharmacy sessions, as pharmacists do (seed 003 §8.2.2.1-3)."""


def build_workload(size: int, today: dt.date, seed: int, keys: Path) -> Workload:
    """The seeded population's patients (affiliated today, usual GP with a key), regenerated."""
    pop = population.build(size, today, seed)
    by_inami = {p.inami: p for p in pop.providers}
    patients: list[Patient] = []
    notify: list[Patient] = []
    for member in pop.members:
        gp = by_inami.get(member.usual_gp)
        if gp is None or not (keys / f"{gp.inami}.pem").is_file():
            continue
        insurer = next(
            (
                a.insurer
                for a in member.affiliations
                if a.start <= today and (a.end is None or today <= a.end)
            ),
            None,
        )
        if insurer is None:
            continue
        patient = Patient(member.niss, insurer, gp.inami)
        patients.append(patient)
        if gp.enrolled and gp.role == "gp":
            notify.append(patient)
    gps = sorted({p.gp for p in patients if by_inami[p.gp].role == "gp"})
    if not patients or not gps:
        raise RuntimeError("no usable patient in the population (are the keys in <data>/keys?)")
    pharmacies = sorted(
        (org.inami, org.members[0])
        for org in pop.organisations
        if org.kind == "pharmacy"
        and org.members
        and (keys / f"{org.inami}.pem").is_file()
        and (keys / f"{org.members[0]}.pem").is_file()
    )
    return Workload(patients, notify or patients, gps, pharmacies)


def parse_mix(text: str) -> dict[str, float]:
    """``"consult=70,notify=10,list=5,mailbox=15"`` → weights (``consult`` alone means only consult)."""
    mix: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, weight = part.partition("=")
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r} (one of {', '.join(SCENARIOS)})")
        value = float(weight) if weight else 1.0
        if value < 0:
            raise ValueError(f"negative weight for {name}")
        mix[name] = value
    if not mix or sum(mix.values()) <= 0:
        raise ValueError(f"empty scenario mix: {text!r}")
    return {k: v for k, v in mix.items() if v > 0}


# One finished call: (rpc, oa or None, status name, MyCareNet code, reason, start, end).
Result = tuple[str, str | None, str, int | None, str, float, float]


class Mesh:
    """Channels, sessions and the scenarios, for one run."""

    def __init__(
        self,
        handle: ClusterHandle,
        workload: Workload,
        *,
        channels: int = 2,
        deadline: float = 5.0,
        hang_grace: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        self.handle = handle
        self.workload = workload
        self.deadline = deadline
        self.hang_grace = hang_grace
        self.rng = rng or random.Random(1)
        creds = handle.credentials
        self._hub = [open_channel(handle.address("hub"), credentials=creds) for _ in range(max(1, channels))]
        self._ehealth = open_channel(handle.address("ehealth"), credentials=creds)
        self._dmg = [dmg_service_pb2_grpc.DmgServiceStub(c) for c in self._hub]
        self._mailbox = [mailbox_service_pb2_grpc.MailboxServiceStub(c) for c in self._hub]
        self._insurability = [insurability_service_pb2_grpc.InsurabilityServiceStub(c) for c in self._hub]
        self._auth = auth_pb2_grpc.AuthServiceStub(self._ehealth)
        self.tokens: dict[str, str] = {}
        self._next = 0
        self._reference = 0

    @property
    def mailbox(self) -> mailbox_service_pb2_grpc.MailboxServiceStub:
        """A mailbox stub on the first hub channel (for measurements outside the scenario mix)."""
        return self._mailbox[0]

    async def close(self) -> None:
        for channel in self._hub:
            await channel.close(None)
        await self._ehealth.close(None)

    async def login(self, inami: str, pharmacist: str = "") -> str:
        """A session of ``inami`` (a pharmacy's, opened by ``pharmacist``, when one is given)."""
        key = load_private_key(self.handle.keys / f"{inami}.pem")
        kind = auth_pb2.SUBJECT_KIND_ORGANISATION if pharmacist else auth_pb2.SUBJECT_KIND_PROVIDER
        challenge = await self._auth.CreateChallenge(
            auth_pb2.CreateChallengeRequest(subject=auth_pb2.Subject(kind=kind, id=inami)), timeout=30
        )
        request = auth_pb2.CreateSessionRequest(
            challenge_id=challenge.challenge_id, signature=key.sign(challenge.nonce)
        )
        if pharmacist:
            user = await self._auth.CreateChallenge(
                auth_pb2.CreateChallengeRequest(
                    subject=auth_pb2.Subject(kind=auth_pb2.SUBJECT_KIND_PROVIDER, id=pharmacist)
                ),
                timeout=30,
            )
            request.user_challenge_id = user.challenge_id
            request.user_signature = load_private_key(self.handle.keys / f"{pharmacist}.pem").sign(user.nonce)
        session = await self._auth.CreateSession(request, timeout=30)
        self.tokens[inami] = session.token
        return session.token

    async def login_all(
        self, inamis: Sequence[str], concurrency: int = 8, *, pharmacies: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Log every provider of ``inamis`` in, and every pharmacy of ``pharmacies`` with its pharmacist."""
        sem = asyncio.Semaphore(concurrency)

        async def one(inami: str, pharmacist: str = "") -> None:
            async with sem:
                await self.login(inami, pharmacist)

        await asyncio.gather(*(one(i) for i in inamis), *(one(o, p) for o, p in pharmacies))

    def _stubs(
        self,
    ) -> tuple[dmg_service_pb2_grpc.DmgServiceStub, mailbox_service_pb2_grpc.MailboxServiceStub]:
        self._next = (self._next + 1) % len(self._dmg)
        return self._dmg[self._next], self._mailbox[self._next]

    def _ref(self) -> str:
        self._reference += 1
        return f"bench-{os.getpid()}-{self._reference}-{self.rng.randrange(1 << 30):08x}"

    def _meta(self, inami: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.tokens[inami]}"),)

    async def timed(
        self,
        rpc: str,
        oa: str | None,
        call: Callable[[], Any],
        start: float,
        record: Callable[[Result], None],
    ) -> Any:
        """Await ``call()``; report the outcome (status name, or "HUNG" past deadline + grace)."""
        try:
            # asyncio.timeout, not wait_for: no task per call (the bench's own CPU is part of the chain's)
            async with asyncio.timeout(self.deadline + self.hang_grace):
                answer = await call()
        except TimeoutError:
            record((rpc, oa, "HUNG", None, "", start, time.monotonic()))
            return None
        except grpc.aio.AioRpcError as error:
            end = time.monotonic()
            parsed = parse_rpc_error(error)
            record((rpc, oa, parsed.status.name, parsed.code, parsed.reason, start, end))
            return None
        record((rpc, oa, "OK", None, "", start, time.monotonic()))
        return answer

    async def scenario(self, name: str, intended: float, record: Callable[[Result], None]) -> None:
        """Run one scenario; latency of its first call counts from ``intended``."""
        dmg, mailbox = self._stubs()
        today = self.handle.today
        date = common_pb2.Date(year=today.year, month=today.month, day=today.day)
        wl = self.workload
        if name == "consult":
            p = self.rng.choice(wl.patients)
            request = dmg_service_pb2.ConsultDmgRequest(
                requester_reference=self._ref(),
                patient=common_pb2.PatientSelector(niss=p.niss),
                request_date=date,
            )
            await self.timed(
                "ConsultDmg",
                p.insurer,
                lambda: dmg.ConsultDmg(request, timeout=self.deadline, metadata=self._meta(p.gp)),
                intended,
                record,
            )
        elif name == "notify":
            p = self.rng.choice(wl.notify_patients)
            notify = dmg_service_pb2.NotifyDmgRequest(
                requester_reference=self._ref(),
                patient=common_pb2.PatientSelector(niss=p.niss),
                contact_date=date,
                nomenclature_code=CONTACT_CODES[0],
            )
            await self.timed(
                "NotifyDmg",
                p.insurer,
                lambda: dmg.NotifyDmg(notify, timeout=self.deadline, metadata=self._meta(p.gp)),
                intended,
                record,
            )
        elif name == "list":
            gp = self.rng.choice(wl.gps)
            post = mailbox_service_pb2.PostPatientListRequest(
                requester_reference=self._ref(), reference_date=date
            )
            await self.timed(
                "PostPatientList",
                None,
                lambda: mailbox.PostPatientList(post, timeout=self.deadline, metadata=self._meta(gp)),
                intended,
                record,
            )
        elif name in ("insurability", "rights"):
            if not wl.pharmacies:
                raise RuntimeError("no pharmacy with a key in <data>/keys (a cluster seeded before them?)")
            p = self.rng.choice(wl.patients)
            who, _pharmacist = self.rng.choice(wl.pharmacies)
            stub = self._insurability[self._next]
            selector = common_pb2.PatientSelector(niss=p.niss)
            if name == "insurability":
                asked = insurability_service_pb2.GetMemberDataRequest(
                    requester_reference=self._ref(), patient=selector, date=date
                )
                await self.timed(
                    "GetMemberData",
                    p.insurer,
                    lambda: stub.GetMemberData(asked, timeout=self.deadline, metadata=self._meta(who)),
                    intended,
                    record,
                )
            else:
                rights = insurability_service_pb2.ConsultRightsRequest(
                    requester_reference=self._ref(), patient=selector, dispensing_date=date
                )
                await self.timed(
                    "ConsultRights",
                    p.insurer,
                    lambda: stub.ConsultRights(rights, timeout=self.deadline, metadata=self._meta(who)),
                    intended,
                    record,
                )
        elif name == "mailbox":
            gp = self.rng.choice(wl.gps)
            get = mailbox_service_pb2.GetMessagesRequest(page_size=20)
            page = await self.timed(
                "GetMessages",
                None,
                lambda: mailbox.GetMessages(get, timeout=self.deadline, metadata=self._meta(gp)),
                intended,
                record,
            )
            ids = [m.message_id for m in page.messages] if page is not None else []
            if ids:
                confirm = mailbox_service_pb2.ConfirmMessagesRequest(message_ids=ids)
                await self.timed(
                    "ConfirmMessages",
                    None,
                    lambda: mailbox.ConfirmMessages(confirm, timeout=self.deadline, metadata=self._meta(gp)),
                    time.monotonic(),
                    record,
                )
        else:
            raise ValueError(name)

    def pick(self, mix: dict[str, float]) -> str:
        names = list(mix)
        return self.rng.choices(names, [mix[n] for n in names])[0]
