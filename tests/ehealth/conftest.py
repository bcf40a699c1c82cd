"""eHealth test fixtures: a real eHealth (in-process, port 0) on SQLite and PostgreSQL, with a fixed clock,
and a plaintext channel per kind of caller (declared in ``x-mcn-peer``); every server started here is
stopped by the fixture's teardown."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest
from ehealth_support import NOW, Env

from ehealth.app import EhealthApp
from mycarenet_core.channels import open_channel
from mycarenet_core.clock import FixedClock

IDENTITIES = ("admin", "client", "hub", "oa-300", "backoffice")


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
async def app(pg_admin_url: str, database_url: str, clock: FixedClock) -> AsyncIterator[EhealthApp]:
    # pg_admin_url first: that shared session fixture probes with asyncio.run(), which fails when it is
    # first requested from inside the async database_url fixture.
    instance = await EhealthApp.create(
        database_url=database_url, clock=clock, challenge_ttl=dt.timedelta(minutes=2)
    )
    await instance.start()
    try:
        yield instance
    finally:
        await instance.stop(0)


@pytest.fixture
async def env(app: EhealthApp, clock: FixedClock) -> AsyncIterator[Env]:
    target = f"127.0.0.1:{app.port}"
    channels = {name: open_channel(target, identity=name) for name in IDENTITIES}
    try:
        yield Env(app, clock, channels)
    finally:
        for channel in channels.values():
            await channel.close()
