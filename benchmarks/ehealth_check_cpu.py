"""CPU per CheckRelation at eHealth, in process: the fallback of the hub's relation cache.

Starts a real ``EhealthApp`` (its own database, port 0, plaintext), fills a small register through the
administrator's RPCs (providers, a medical house, relations of every proof, DMG moves), then calls
``CheckRelation`` N times over a real gRPC channel with the ``hub`` identity and reports the process CPU
(``time.process_time()``: server AND client of this one process) per call. For scale, the same calls are
made to a *floor* in the same process: a bare grpc.aio server answering CheckRelation with a constant, no
interceptor, no database — what one Python gRPC round trip costs on this box.

    .venv/bin/python benchmarks/ehealth_check_cpu.py                     # SQLite, 3 000 calls
    .venv/bin/python benchmarks/ehealth_check_cpu.py --postgres postgresql://postgres@127.0.0.1:5432/postgres

(``--postgres``: a scratch database is created on that server for the run and dropped after it.)

The checks cycle through a hit on the provider's own relation, a hit through the medical house it belongs
to, a DMG hit, and a miss, so that every branch of the check is in the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc

from ehealth.app import EhealthApp
from ehealth.tokens import generate_signing_key
from mycarenet_core.channels import open_channel
from mycarenet_core.clock import FixedClock
from mycarenet_core.dates import to_proto
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import cadastre_pb2, cadastre_pb2_grpc
from mycarenet_core.gen.mycarenet.ehealth.v1 import therapeutic_relation_pb2 as tr
from mycarenet_core.gen.mycarenet.ehealth.v1 import therapeutic_relation_pb2_grpc as tr_grpc
from mycarenet_core.identifiers import Profession, make_inami, make_niss

NOW = dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC)
TODAY = dt.date(2026, 11, 20)


def period(start: dt.date, end: dt.date | None = None) -> common_pb2.Period:
    return common_pb2.Period(start=to_proto(start), end=to_proto(end))


async def fill(channel: grpc.aio.Channel, providers: int) -> list[tr.CheckRelationRequest]:
    """A register of ``providers`` GPs (every other one in a medical house), one patient each with an eID
    relation, a DMG moved to every GP; the checks to repeat."""
    cadastre = cadastre_pb2_grpc.CadastreServiceStub(channel)
    relations = tr_grpc.TherapeuticRelationServiceStub(channel)
    gps = [make_inami(Profession.PHYSICIAN, 10_000 + i, "003") for i in range(providers)]
    patients = [make_niss(dt.date(1960 + i % 50, 1 + i % 12, 1 + i % 28), 100 + i) for i in range(providers)]
    house = make_inami(Profession.ORGANISATION, 30_001, "100")
    key = generate_signing_key().public_key_pem
    for gp in gps:
        await cadastre.UpsertProvider(
            cadastre_pb2.UpsertProviderRequest(
                provider=cadastre_pb2.CadastreProvider(
                    inami=gp,
                    niss=make_niss(dt.date(1970, 1, 1), 500),
                    first_name="Ann",
                    last_name=f"Doc {gp[:6]}",
                    validity=period(dt.date(2000, 1, 1)),
                    public_key_pem=key,
                )
            )
        )
    await cadastre.UpsertOrganisation(
        cadastre_pb2.UpsertOrganisationRequest(
            organisation=cadastre_pb2.Organisation(
                inami=house,
                name="MM Zuid",
                validity=period(dt.date(2000, 1, 1)),
                members=[
                    cadastre_pb2.OrganisationMember(inami=gp, period=period(dt.date(2010, 1, 1)))
                    for gp in gps[::2]
                ],
            )
        )
    )
    for i, (gp, patient) in enumerate(zip(gps, patients, strict=True)):
        await relations.RegisterRelation(
            tr.RegisterRelationRequest(
                provider_inami=gp if i % 2 else house,
                patient_niss=patient,
                proof=tr.RELATION_PROOF_EID_READ,
                start_date=to_proto(dt.date(2024, 1, 1)),
            )
        )
        await relations.TransferDmgRelation(
            tr.TransferDmgRelationRequest(
                patient_niss=patients[(i + 1) % providers],
                new_holder_inami=gp,
                start_date=to_proto(dt.date(2025, 1, 1 + i % 28)),
                source_reference=f"100:bench-{i}",
            )
        )
    day = to_proto(TODAY)
    checks = []
    for i in range(0, providers, 4):
        checks += [
            tr.CheckRelationRequest(provider_inami=gps[i + 1], patient_niss=patients[i + 1], date=day),  # own
            tr.CheckRelationRequest(provider_inami=gps[i], patient_niss=patients[i], date=day),  # house
            tr.CheckRelationRequest(provider_inami=gps[i], patient_niss=patients[i + 1], date=day),  # DMG
            tr.CheckRelationRequest(provider_inami=gps[i], patient_niss=patients[i + 3], date=day),  # miss
        ]
    return checks


async def measure(
    channel: grpc.aio.Channel, checks: list[tr.CheckRelationRequest], calls: int
) -> dict[str, Any]:
    stub = tr_grpc.TherapeuticRelationServiceStub(channel)
    for request in checks * 5:  # warm-up: caches, pools, statement compilation
        await stub.CheckRelation(request, timeout=10)
    answers = [0, 0]
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(calls):
        reply = await stub.CheckRelation(checks[i % len(checks)], timeout=10)
        answers[reply.exists] += 1
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "calls": calls,
        "cpu_ms_per_call": round(cpu * 1000 / calls, 3),
        "wall_ms_per_call": round(wall * 1000 / calls, 3),
        "exists": answers[1],
        "missing": answers[0],
    }


class Floor(tr_grpc.TherapeuticRelationServiceServicer):
    """A constant answer: the cost of one Python gRPC round trip, nothing else."""

    ANSWER = tr.CheckRelationResponse(exists=True, relation=tr.TherapeuticRelation(relation_id="x" * 32))

    async def CheckRelation(self, request: tr.CheckRelationRequest, context: Any) -> tr.CheckRelationResponse:
        return self.ANSWER


async def floor(checks: list[tr.CheckRelationRequest], calls: int) -> dict[str, Any]:
    server = grpc.aio.server()
    tr_grpc.add_TherapeuticRelationServiceServicer_to_server(Floor(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        return await measure(channel, checks, calls)
    finally:
        await channel.close(None)
        await server.stop(0)


@asynccontextmanager
async def scratch_database(postgres: str | None) -> AsyncIterator[str]:
    """A SQLite file in a temporary folder, or a scratch database on the PostgreSQL server ``postgres``."""
    if postgres is None:
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite+aiosqlite:///{Path(folder) / 'ehealth.db'}"
        return
    import asyncpg

    name = f"mcn_bench_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(postgres)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield f"{postgres.rsplit('/', 1)[0]}/{name}"
    finally:
        conn = await asyncpg.connect(postgres)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def run(postgres: str | None, calls: int, providers: int) -> dict[str, Any]:
    async with scratch_database(postgres) as database_url:
        return await bench(database_url, calls, providers)


async def bench(database_url: str, calls: int, providers: int) -> dict[str, Any]:
    app = await EhealthApp.create(database_url=database_url, clock=FixedClock(NOW))
    port = await app.start("127.0.0.1:0")
    admin = open_channel(f"127.0.0.1:{port}", identity="admin")
    hub = open_channel(f"127.0.0.1:{port}", identity="hub")
    try:
        checks = await fill(admin, providers)
        result: dict[str, Any] = {
            "ehealth": await measure(hub, checks, calls),
            "floor": await floor(checks, calls),
        }
    finally:
        await admin.close(None)
        await hub.close(None)
        await app.stop(0)
    result["database"] = database_url.split(":", 1)[0]
    result["ratio_to_floor"] = round(
        result["ehealth"]["cpu_ms_per_call"] / result["floor"]["cpu_ms_per_call"], 2
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--providers", type=int, default=200, help="GPs in the register (a multiple of 4)")
    parser.add_argument("--postgres", help="PostgreSQL server URL (default: SQLite in a temporary folder)")
    args = parser.parse_args()
    result = asyncio.run(run(args.postgres, args.calls, max(4, args.providers // 4 * 4)))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
