"""The hot path of eHealth (issue 13): CheckRelation is one statement sent to the driver, read without a
write transaction. Checks cut short by their caller's deadline leave no connection busy, no transaction open
and no lock behind: the next checks answer right, a write goes through at once, and PostgreSQL shows no
session of this database idle in a transaction. Bad input is INVALID_ARGUMENT with every violation, never
INTERNAL."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import asyncpg
import grpc
import pytest
from ehealth_support import GP, GP2, MEDICAL_HOUSE, NOW, PATIENT, PATIENT2, Env, Stubs, pdate, rpc_error

from ehealth.app import EhealthApp
from mycarenet_core.channels import open_channel
from mycarenet_core.clock import FixedClock
from mycarenet_core.gen.mycarenet.ehealth.v1 import therapeutic_relation_pb2 as tr

D = dt.date


async def check(env: Env, provider: str, patient: str, deadline: float = 10) -> tr.CheckRelationResponse:
    reply: tr.CheckRelationResponse = await env.hub.relations.CheckRelation(
        tr.CheckRelationRequest(provider_inami=provider, patient_niss=patient, date=pdate(D(2025, 3, 3))),
        timeout=deadline,
    )
    return reply


async def test_checks_cut_short_leave_nothing_behind(env: Env, database_url: str, pg_admin_url: str) -> None:
    await env.provider(GP)
    await env.provider(GP2)
    await env.organisation(MEDICAL_HOUSE, [(GP2, D(2020, 1, 1), None)])
    for provider, patient in ((GP, PATIENT), (MEDICAL_HOUSE, PATIENT2)):
        await env.relations.RegisterRelation(
            tr.RegisterRelationRequest(
                provider_inami=provider,
                patient_niss=patient,
                proof=tr.RELATION_PROOF_EID_READ,
                start_date=pdate(D(2024, 1, 1)),
            ),
            timeout=10,
        )
    cut = await asyncio.gather(
        *(check(env, GP, PATIENT, deadline=0.001 * (i % 5 + 1)) for i in range(60)), return_exceptions=True
    )
    assert all(
        isinstance(r, tr.CheckRelationResponse)
        or (isinstance(r, grpc.aio.AioRpcError) and r.code() == grpc.StatusCode.DEADLINE_EXCEEDED)
        for r in cut
    )
    answers = await asyncio.gather(*(check(env, GP, PATIENT) for _ in range(20)))
    assert all(a.exists and a.relation.provider_inami == GP for a in answers)
    assert (await check(env, GP2, PATIENT2)).relation.provider_inami == MEDICAL_HOUSE  # as a member
    assert not (await check(env, GP2, PATIENT)).exists
    # A write goes through at once: no check holds a lock.
    written = await asyncio.wait_for(
        env.relations.RegisterRelation(
            tr.RegisterRelationRequest(
                provider_inami=GP2, patient_niss=PATIENT, proof=tr.RELATION_PROOF_EID_READ
            ),
            timeout=10,
        ),
        timeout=5,
    )
    assert written.relation.provider_inami == GP2
    if database_url.startswith("postgresql"):
        name = database_url.rsplit("/", 1)[1]
        conn = await asyncpg.connect(pg_admin_url)
        try:
            states = [
                r["state"]
                for r in await conn.fetch("SELECT state FROM pg_stat_activity WHERE datname = $1", name)
            ]
        finally:
            await conn.close()
        assert states  # eHealth's pools are connected ...
        assert "idle in transaction" not in states  # ... and none of them sits in a transaction
        assert "idle in transaction (aborted)" not in states


async def test_bad_checks_are_invalid_arguments_with_every_violation(env: Env) -> None:
    error = await rpc_error(
        env.hub.relations.CheckRelation(
            tr.CheckRelationRequest(
                provider_inami="1" * 40, patient_niss="x", date=tr.CheckRelationRequest().date
            ),
            timeout=10,
        )
    )
    assert error.status == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted((v.field, v.code) for v in error.violations) == [
        ("patient_niss", 111),
        ("provider_inami", 111),
    ]
    bad_date = await rpc_error(
        env.hub.relations.CheckRelation(
            tr.CheckRelationRequest(provider_inami=GP, patient_niss=PATIENT, date=pdate(D(1800, 1, 1))),
            timeout=10,
        )
    )
    assert [(v.field, v.code) for v in bad_date.violations] == [("date", 113)]


@pytest.mark.integration
@pytest.mark.postgres
async def test_a_database_restart_costs_one_retryable_answer_on_postgresql(pg_admin_url: str) -> None:
    """PostgreSQL ends every connection of eHealth (as a restart does): the next check answers UNAVAILABLE
    DATABASE_BUSY (retry; never INTERNAL), and the one after answers right on a new connection."""
    name = f"mcn_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = pg_admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{name}"
    app = await EhealthApp.create(database_url=url, clock=FixedClock(NOW))
    try:
        port = await app.start()
        async with open_channel(f"127.0.0.1:{port}", identity="admin") as channel:
            stubs = Stubs(channel)
            env = Env(
                app, FixedClock(NOW), {"admin": channel, "client": channel, "hub": channel, "oa-300": channel}
            )
            await env.provider(GP)
            await stubs.relations.RegisterRelation(
                tr.RegisterRelationRequest(
                    provider_inami=GP, patient_niss=PATIENT, proof=tr.RELATION_PROOF_EID_READ
                ),
                timeout=10,
            )
            assert (await check(env, GP, PATIENT)).exists
            ended = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1", name
            )
            assert ended >= 1
            error = await rpc_error(check(env, GP, PATIENT))
            assert (error.status, error.reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_BUSY")
            assert (await check(env, GP, PATIENT)).exists
    finally:
        await app.stop(0)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
