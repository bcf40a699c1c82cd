"""CPU of one insurer node per ConsultDmg, and of an idle node per second.

The node is built with ``OaNodeApp.create`` (the code the ``mycarenet-oa`` process runs, on uvloop as
``run_service`` runs it) in a child process of its own, so that the figures are the node's alone: its CPU
is read from ``/proc/<pid>/stat`` (utime + stime) before and after. This process seeds it through its gRPC
services (providers, enrolments, members, one notification per patient so that every consult answers a
holding), then calls ``ConsultDmg`` N times over a real channel, one call at a time, as the hub does. The
node also has the outbox relay and the cadastre follower of a real deployment: they talk to a stand-in hub
mailbox and a stand-in eHealth cadastre served here. Then the node is left idle for ``--idle`` seconds.

    .venv/bin/python benchmarks/oa_consult_cpu.py                       # SQLite in a temporary folder
    .venv/bin/python benchmarks/oa_consult_cpu.py --database-url postgresql://postgres@127.0.0.1/mcn_bench
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from mycarenet_core import dates
from mycarenet_core.channels import open_channel
from mycarenet_core.clock import FixedClock
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import cadastre_pb2, cadastre_pb2_grpc
from mycarenet_core.gen.mycarenet.hub.v1 import mailbox_intake_service_pb2 as mi_pb2
from mycarenet_core.gen.mycarenet.hub.v1 import mailbox_intake_service_pb2_grpc as mi_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import context_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import membership_service_pb2 as ms_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import membership_service_pb2_grpc as ms_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import oa_dmg_service_pb2 as oa_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import oa_dmg_service_pb2_grpc as oa_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import reference_data_service_pb2 as rd_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import reference_data_service_pb2_grpc as rd_grpc
from mycarenet_core.identifiers import Profession, make_inami, make_niss

INSURER = "100"
TODAY = dt.date(2025, 3, 4)
GPS = [make_inami(Profession.PHYSICIAN, 10001 + i, "003") for i in range(5)]
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (every thread), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


# --- the node, in its own process -----------------------------------------------------------------------


def run_node(database_url: str, hub: str, ehealth: str, ports: Any, stop: Any) -> None:
    import uvloop

    from oa_node.app import OaNodeApp

    async def serve() -> None:
        app = await OaNodeApp.create(
            insurer_code=INSURER,
            database_url=database_url,
            clock=FixedClock(dt.datetime.combine(TODAY, dt.time(9), tzinfo=dt.UTC)),
            hub_intake_target=hub,
            ehealth_target=ehealth,
        )
        ports.put(await app.start("127.0.0.1:0"))
        try:
            await asyncio.get_running_loop().run_in_executor(None, stop.wait)
        finally:
            await app.stop()

    uvloop.run(serve())  # as run_service runs every process


# --- stand-ins for the hub's mailbox intake and eHealth's cadastre ------------------------------------


class Mailbox(mi_grpc.MailboxIntakeServiceServicer):
    async def DeliverMessages(self, request: Any, context: Any) -> mi_pb2.DeliverMessagesResponse:
        return mi_pb2.DeliverMessagesResponse(stored_ids=[m.message_id for m in request.messages])


class Cadastre(cadastre_pb2_grpc.CadastreServiceServicer):
    async def ListCadastreChanges(
        self, request: Any, context: Any
    ) -> cadastre_pb2.ListCadastreChangesResponse:
        return cadastre_pb2.ListCadastreChangesResponse(head_sequence=0)

    async def WatchCadastreChanges(self, request: Any, context: Any) -> Any:
        await asyncio.Event().wait()  # nothing ever changes
        yield cadastre_pb2.WatchCadastreChangesResponse()


# --- the client -----------------------------------------------------------------------------------------


def context(requester: str, reference: str) -> context_pb2.RequestContext:
    return context_pb2.RequestContext(
        requester_inami=requester,
        requester_reference=reference,
        processing_date=dates.to_proto(TODAY),
        executor_id=requester,
        executor_kind="SUBJECT_KIND_PROVIDER",
        session_id="bench",
    )


def patients(count: int) -> list[str]:
    return [
        make_niss(dt.date(1950 + i % 50, 1 + i % 12, 1 + i % 28), 1 + 2 * (i // 600)) for i in range(count)
    ]


async def seed(port: int, people: list[str], pid: int | None = None) -> float:
    """Providers, enrolments, members, then one notification per patient; the node's CPU per notification
    (when ``pid`` is given)."""
    office = open_channel(f"127.0.0.1:{port}", identity="backoffice")
    hub = open_channel(f"127.0.0.1:{port}", identity="hub")
    try:
        reference = rd_grpc.ReferenceDataServiceStub(office)
        members = ms_grpc.MembershipServiceStub(office)
        dmg = oa_grpc.OaDmgServiceStub(hub)
        await reference.UpsertProviders(
            rd_pb2.UpsertProvidersRequest(
                providers=[
                    rd_pb2.KnownProvider(
                        provider=common_pb2.Provider(inami=gp, first_name="Dr", last_name=gp[-5:])
                    )
                    for gp in GPS
                ]
            ),
            timeout=30,
        )
        bank = common_pb2.BankAccount(iban="BE68539007547034", bic="GKCCBEBB", holder_name="Dr")
        for gp in GPS:
            await dmg.EnrolDmg(
                oa_pb2.EnrolDmgRequest(context=context(gp, "enrol"), bank_account=bank), timeout=30
            )
        await members.UpsertMembers(
            ms_pb2.UpsertMembersRequest(
                members=[
                    ms_pb2.Member(
                        patient=common_pb2.Patient(
                            niss=niss,
                            first_name="Jan",
                            last_name=f"Peeters {i}",
                            member=common_pb2.MemberNumber(
                                mutuality_code=INSURER, registration_number=f"{i + 1:07d}"
                            ),
                        ),
                        affiliations=[common_pb2.Period(start=dates.to_proto(dt.date(2000, 1, 1)))],
                    )
                    for i, niss in enumerate(people)
                ]
            ),
            timeout=60,
        )
        before = cpu_seconds(pid) if pid else 0.0
        for i, niss in enumerate(people):
            await dmg.NotifyDmg(
                oa_pb2.NotifyDmgRequest(
                    context=context(GPS[i % len(GPS)], f"seed-{i}"),
                    patient=common_pb2.PatientSelector(niss=niss),
                    contact_date=dates.to_proto(TODAY),
                    nomenclature_code="101010",
                ),
                timeout=30,
            )
        return (cpu_seconds(pid) - before) / len(people) if pid else 0.0
    finally:
        await office.close(None)
        await hub.close(None)


async def consults(port: int, people: list[str], count: int) -> float:
    """Make ``count`` consults one after the other; return the wall time."""
    channel = open_channel(f"127.0.0.1:{port}", identity="hub")
    try:
        dmg = oa_grpc.OaDmgServiceStub(channel)
        started = time.perf_counter()
        for i in range(count):
            answer = await dmg.ConsultDmg(
                oa_pb2.ConsultDmgRequest(
                    context=context(GPS[(i + 1) % len(GPS)], f"c-{i}"),
                    patient=common_pb2.PatientSelector(niss=people[i % len(people)]),
                    request_date=dates.to_proto(TODAY),
                ),
                timeout=10,
            )
            assert answer.holding.holder.inami, "every consult answers a holding"
        return time.perf_counter() - started
    finally:
        await channel.close(None)


async def bench(args: argparse.Namespace, database_url: str) -> None:
    stand_ins = grpc.aio.server()
    mi_grpc.add_MailboxIntakeServiceServicer_to_server(Mailbox(), stand_ins)
    cadastre_pb2_grpc.add_CadastreServiceServicer_to_server(Cadastre(), stand_ins)  # type: ignore[abstract]
    stand_in_port = stand_ins.add_insecure_port("127.0.0.1:0")
    await stand_ins.start()
    spawn = multiprocessing.get_context("spawn")
    ports, stop = spawn.Queue(), spawn.Event()
    target = f"127.0.0.1:{stand_in_port}"
    node = spawn.Process(target=run_node, args=(database_url, target, target, ports, stop), daemon=True)
    node.start()
    try:
        assert node.pid is not None
        port = await asyncio.get_running_loop().run_in_executor(None, ports.get, True, 60)
        people = patients(args.patients)
        per_notify = await seed(port, people, node.pid)
        await consults(port, people, args.warmup)
        before = cpu_seconds(node.pid)
        wall = await consults(port, people, args.consults)
        used = cpu_seconds(node.pid) - before
        print(f"database: {database_url.split('://', 1)[0]}")
        print(
            f"NotifyDmg x{len(people)} (one in flight, one patient each): "
            f"node CPU {1000 * per_notify:.2f} ms/notify"
        )
        print(
            f"ConsultDmg x{args.consults} (one in flight): node CPU "
            f"{1000 * used / args.consults:.2f} ms/consult, wall {1000 * wall / args.consults:.2f} ms/consult"
        )
        if args.idle > 0:
            await asyncio.sleep(1)  # let the last audit rows and deliveries settle
            before = cpu_seconds(node.pid)
            await asyncio.sleep(args.idle)
            used = cpu_seconds(node.pid) - before
            print(f"idle node over {args.idle:.0f} s: {1000 * used / args.idle:.2f} CPU-ms/s")
    finally:
        stop.set()
        node.join(30)
        if node.is_alive():
            node.kill()
        await stand_ins.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--consults", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle measurement (0: none)")
    parser.add_argument("--database-url", default="", help="default: SQLite in a temporary folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = args.database_url or f"sqlite+aiosqlite:///{folder}/oa-bench.db"
        asyncio.run(bench(args, url))


if __name__ == "__main__":
    main()
