"""The cadastre change log (issue 12: the cadastre is the authentic source the insurers follow): every upsert
that changes what a follower sees appends a change and answers its sequence, the log is compacted (one entry
per provider or organisation, at its latest change), listed after a sequence with the head, watched (replay
then live, without polling), never shows a NISS or a key, and a database from v0001 starts with every
provider and organisation in it."""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ehealth_support import GP, GP2, MEDICAL_HOUSE, NOW, PATIENT, TRAINEE, Env, Stubs, rpc_error

from ehealth.app import EhealthApp
from ehealth.tokens import generate_signing_key
from mycarenet_core.channels import open_channel
from mycarenet_core.clock import FixedClock
from mycarenet_core.db import create_engine
from mycarenet_core.gen.mycarenet.ehealth.v1 import auth_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import cadastre_pb2 as cp
from mycarenet_core.migrations import HISTORIES, upgrade

D = dt.date


async def changes(stubs: Stubs, after: int = 0, size: int = 0) -> cp.ListCadastreChangesResponse:
    reply: cp.ListCadastreChangesResponse = await stubs.cadastre.ListCadastreChanges(
        cp.ListCadastreChangesRequest(after_sequence=after, page_size=size), timeout=10
    )
    return reply


def entry(change: cp.CadastreChange) -> str:
    return change.provider.inami if change.HasField("provider") else change.organisation.inami


async def test_upserts_append_changes_that_show_no_niss_and_no_key(env: Env) -> None:
    gp = await env.provider(GP)
    trainee = await env.provider(TRAINEE, supervisor=GP)
    house = await env.organisation(MEDICAL_HOUSE, [(GP, D(2024, 1, 1), None)])
    sequences = [gp.change_sequence, trainee.change_sequence, house.change_sequence]
    assert 0 < sequences[0] < sequences[1] < sequences[2]

    listed = await changes(env.oa)
    assert [c.sequence for c in listed.changes] == sequences
    assert listed.head_sequence == sequences[2]
    assert [entry(c) for c in listed.changes] == [GP, TRAINEE, MEDICAL_HOUSE]
    for change in listed.changes[:2]:
        assert change.WhichOneof("entry") == "provider"
        assert (change.provider.niss, change.provider.public_key_pem) == ("", "")
        assert change.provider.last_name
        assert change.change_time.ToDatetime(dt.UTC) == NOW
    assert listed.changes[1].provider.supervisor_inami == GP
    assert [m.inami for m in listed.changes[2].organisation.members] == [GP]
    # The administrator's read of the same provider does show them: only followers are spared.
    assert (await env.cadastre.GetProvider(cp.GetProviderRequest(inami=GP))).provider.niss

    # What a follower cannot see is no change: the same data, another NISS, another key.
    assert (await env.provider(GP)).change_sequence == 0
    assert (await env.provider(GP, niss=PATIENT)).change_sequence == 0
    env.keys[GP] = Ed25519PrivateKey.generate()
    assert (await env.provider(GP)).change_sequence == 0
    assert (await env.organisation(MEDICAL_HOUSE, [(GP, D(2024, 1, 1), None)])).change_sequence == 0
    assert (await changes(env.oa)).head_sequence == sequences[2]

    # A real change moves the entry to the head: the log keeps each entry once, at its latest change.
    moved = await env.provider(GP, end=D(2030, 12, 31))
    assert moved.change_sequence > sequences[2]
    after = await changes(env.hub)
    assert [(entry(c), c.sequence) for c in after.changes] == [
        (TRAINEE, sequences[1]),
        (MEDICAL_HOUSE, sequences[2]),
        (GP, moved.change_sequence),
    ]
    assert after.changes[2].provider.validity.end.year == 2030
    member_left = await env.organisation(MEDICAL_HOUSE, [(GP, D(2024, 1, 1), D(2025, 1, 31))])
    assert member_left.change_sequence > moved.change_sequence

    # Pages after a position.
    first = await changes(env.oa, after=0, size=1)
    assert [entry(c) for c in first.changes] == [TRAINEE]
    rest = await changes(env.oa, after=first.changes[0].sequence)
    assert [entry(c) for c in rest.changes] == [GP, MEDICAL_HOUSE]
    assert rest.head_sequence == member_left.change_sequence
    assert list((await changes(env.oa, after=rest.head_sequence)).changes) == []


async def test_only_followers_and_the_administrator_read_the_log(env: Env) -> None:
    await env.provider(GP)
    for caller in ("admin", "hub", "oa-300"):
        assert len((await changes(env.as_(caller))).changes) == 1
    for caller in ("client", "backoffice"):
        error = await rpc_error(changes(env.as_(caller)))
        assert (error.status, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "CERTIFICATE_NOT_ALLOWED")
    gp = await env.own(GP)  # not even with a session
    error = await rpc_error(
        env.client.cadastre.ListCadastreChanges(cp.ListCadastreChangesRequest(), metadata=gp)
    )
    assert error.reason == "CERTIFICATE_NOT_ALLOWED"
    negative = await rpc_error(changes(env.oa, after=-1))
    assert [(v.field, v.code) for v in negative.violations] == [("after_sequence", 130)]


async def test_watch_replays_then_follows_without_polling(env: Env) -> None:
    first = await env.provider(GP)
    stream = env.oa.cadastre.WatchCadastreChanges(
        cp.WatchCadastreChangesRequest(after_sequence=0), timeout=20
    )
    replayed = await asyncio.wait_for(stream.read(), timeout=5)
    assert (replayed.change.sequence, entry(replayed.change)) == (first.change_sequence, GP)
    live = asyncio.ensure_future(stream.read())
    await asyncio.sleep(0.2)
    assert not live.done()  # nothing new: the watcher waits
    second = await env.provider(GP2)
    change = (await asyncio.wait_for(live, timeout=5)).change
    assert (change.sequence, entry(change), change.provider.niss) == (second.change_sequence, GP2, "")
    nothing = await env.provider(GP2)  # no change, no message
    assert nothing.change_sequence == 0
    house = await env.organisation(MEDICAL_HOUSE, [])
    change = (await asyncio.wait_for(stream.read(), timeout=5)).change
    assert (change.sequence, entry(change)) == (house.change_sequence, MEDICAL_HOUSE)
    stream.cancel()
    # A follower that resumes after its position gets only what it missed.
    resumed = env.hub.cadastre.WatchCadastreChanges(
        cp.WatchCadastreChangesRequest(after_sequence=second.change_sequence), timeout=20
    )
    assert entry((await asyncio.wait_for(resumed.read(), timeout=5)).change) == MEDICAL_HOUSE
    resumed.cancel()


@pytest.fixture
async def v0001_database(pg_admin_url: str, database_url: str) -> str:
    """A database as eHealth v0001 left it: two providers, an organisation, a signing key, a retired one."""
    engine = create_engine(database_url)
    try:
        await upgrade(engine, HISTORIES["ehealth"].script_location, "0001")
        provider = sa.table(
            "provider",
            *(sa.column(c) for c in ("inami", "niss", "first_name", "last_name", "role", "valid_from")),
        )
        organisation = sa.table(
            "organisation", *(sa.column(c) for c in ("inami", "kind", "name", "valid_from"))
        )
        key = sa.table(
            "signing_key",
            *(
                sa.column(c)
                for c in ("key_id", "private_key_pem", "public_key_pem", "create_time", "retire_time")
            ),
        )
        naive = NOW.replace(tzinfo=None)
        async with engine.begin() as conn:
            for inami in (GP2, GP):
                await conn.execute(
                    provider.insert().values(
                        inami=inami,
                        niss=PATIENT,
                        first_name="A",
                        last_name="B",
                        role="general_practitioner",
                        valid_from=D(2020, 1, 1),
                    )
                )
            await conn.execute(
                organisation.insert().values(
                    inami=MEDICAL_HOUSE, kind="medical_house", name="MM", valid_from=D(2020, 1, 1)
                )
            )
            for pair, retired in ((generate_signing_key(), None), (generate_signing_key(), naive)):
                await conn.execute(
                    key.insert().values(
                        key_id=pair.key_id,
                        private_key_pem=pair.private_key_pem,
                        public_key_pem=pair.public_key_pem,
                        create_time=naive - dt.timedelta(days=1),
                        retire_time=retired,
                    )
                )
    finally:
        await engine.dispose()
    return database_url


async def test_a_database_from_v0001_starts_with_the_whole_cadastre_in_the_log(v0001_database: str) -> None:
    app = await EhealthApp.create(database_url=v0001_database, clock=FixedClock(NOW))
    try:
        port = await app.start()
        async with open_channel(f"127.0.0.1:{port}", identity="oa-300") as channel:
            stubs = Stubs(channel)
            listed = await changes(stubs)
            assert [entry(c) for c in listed.changes] == [*sorted([GP, GP2]), MEDICAL_HOUSE]
            assert listed.head_sequence == listed.changes[-1].sequence
            assert all(c.provider.niss == "" for c in listed.changes[:2])
            keys = await stubs.auth.GetSigningKeys(auth_pb2.GetSigningKeysRequest(), timeout=10)
            assert [k.state for k in keys.keys] == [
                auth_pb2.SIGNING_KEY_STATE_CURRENT,
                auth_pb2.SIGNING_KEY_STATE_NEXT,  # published at the first start after the upgrade
                auth_pb2.SIGNING_KEY_STATE_RETIRED,
            ]
    finally:
        await app.stop(0)
