"""Background followers: each OA's affiliation feed (→ routing index) and eHealth's revocations (→ the
token verifier); eHealth's relation register has its own (:mod:`hub.relations`).

Each follower catches up with the List RPC from its stored position, then follows the Watch stream, and
reconnects with the core :class:`~mycarenet_core.lifecycle.Backoff` when the peer goes away (an OA restart,
an eHealth restart). Each is one :class:`~mycarenet_core.lifecycle.Background` job of the hub.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterable, Callable, Sequence

import grpc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.auth import TokenVerifier
from hub.routing import INSURER_INDEX, RoutingIndex, RoutingRepository, spans_of
from hub.upstream import EhealthClient, OaClient
from mycarenet_core.db import transaction
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import auth_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import membership_service_pb2 as ms
from mycarenet_core.lifecycle import Backoff

WATCH_APPLY_BATCH = 5000
log = logging.getLogger(__name__)

Periods = list[tuple[dt.date, dt.date | None]]


def _date(value: common_pb2.Date) -> dt.date | None:
    if not (value.year or value.month or value.day):
        return None
    return dt.date(value.year, value.month, value.day)


def periods_of(change: ms.AffiliationChange) -> Periods:
    out: Periods = []
    for period in change.periods:
        start = _date(period.start)
        if start is None:
            continue
        out.append((start, _date(period.end) if period.HasField("end") else None))
    return out


class AffiliationFollower:
    """Keeps the routing index (memory and DB) in step with one OA's affiliation feed."""

    def __init__(
        self,
        oa: OaClient,
        index: RoutingIndex,
        sessions: async_sessionmaker[AsyncSession],
        *,
        page_size: int = 5000,
    ) -> None:
        self.oa = oa
        self.index = index
        self.sessions = sessions
        self.page_size = page_size
        self.sequence = 0
        self.caught_up = asyncio.Event()
        self._advanced = asyncio.Condition()

    async def _apply(self, changes: Sequence[ms.AffiliationChange]) -> None:
        code = self.oa.insurer_code
        rows = [(c.niss, c.registration_number, periods_of(c)) for c in changes if c.niss]
        last = max((c.sequence for c in changes), default=self.sequence)
        async with transaction(self.sessions) as session:
            await RoutingRepository(session).apply(code, rows, last)
        if code in INSURER_INDEX:
            for niss, _reg, periods in rows:
                if niss.isdigit():
                    self.index.replace(int(niss), code, spans_of(code, periods))
        async with self._advanced:
            self.sequence = max(self.sequence, last)
            self._advanced.notify_all()

    async def _follow(
        self, stream: AsyncIterable[ms.WatchAffiliationChangesResponse], backoff: Backoff
    ) -> None:
        """Apply the live changes, in one transaction per burst: a reader queues the events, the applier
        takes everything queued so far (a bulk load of members arrives as a burst of thousands)."""
        queue: asyncio.Queue[ms.AffiliationChange | None] = asyncio.Queue(maxsize=4 * WATCH_APPLY_BATCH)

        failed: list[BaseException] = []

        async def read() -> None:
            try:
                async for event in stream:
                    await queue.put(event.change)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # handed to the applier, which re-raises it
                failed.append(error)
            await queue.put(None)

        reader = asyncio.ensure_future(read())
        try:
            ended = False
            while not ended:
                burst = [await queue.get()]
                while len(burst) < WATCH_APPLY_BATCH and not queue.empty():
                    burst.append(queue.get_nowait())
                ended = burst[-1] is None
                changes = [c for c in burst if c is not None and c.sequence > self.sequence]
                if changes:
                    await self._apply(changes)
                backoff.reset()
            if failed:
                raise failed[0]
        finally:
            reader.cancel()

    async def wait_for(self, sequence: int, within: float) -> None:
        """Wait until changes up to ``sequence`` are applied (tests, tooling)."""

        async def reached() -> None:
            async with self._advanced:
                await self._advanced.wait_for(lambda: self.sequence >= sequence)

        await asyncio.wait_for(reached(), within)

    async def _catch_up(self) -> None:
        while True:
            page = await self.oa.membership.ListAffiliationChanges(
                ms.ListAffiliationChangesRequest(after_sequence=self.sequence, page_size=self.page_size),
                timeout=30,
            )
            if page.changes:
                await self._apply(page.changes)
            if not page.changes or self.sequence >= page.last_sequence:
                return

    async def run(self) -> None:
        async with self.sessions() as session:
            self.sequence = await RoutingRepository(session).cursor(self.oa.insurer_code)
        backoff = Backoff()
        while True:
            try:
                await self._catch_up()
                self.caught_up.set()
                backoff.reset()
                stream = self.oa.membership.WatchAffiliationChanges(
                    ms.WatchAffiliationChangesRequest(after_sequence=self.sequence)
                )
                await self._follow(stream, backoff)
                log.info("affiliation feed of %s ended; reconnecting", self.oa.insurer_code)
            except asyncio.CancelledError:
                raise
            except grpc.RpcError as error:
                log.info("affiliation feed of %s: %s", self.oa.insurer_code, error.code())
            except Exception:
                log.exception("affiliation feed of %s failed", self.oa.insurer_code)
            await backoff.sleep()


class RevocationFollower:
    """Feeds the verifier's revocation list: ListRevocations catch-up, then WatchRevocations."""

    def __init__(
        self,
        ehealth: EhealthClient,
        verifier: TokenVerifier,
        on_revoke: Callable[[str], None] = lambda _session_id: None,
    ) -> None:
        self.ehealth = ehealth
        self.verifier = verifier
        self.on_revoke = on_revoke  # told the session id of each revocation (the mailbox watches end)
        self.caught_up = asyncio.Event()

    def _revoke(self, revocation: auth_pb2.Revocation) -> None:
        self.verifier.revoke(revocation)
        self.on_revoke(revocation.session_id)

    async def _catch_up(self) -> None:
        token = ""
        while True:
            page = await self.ehealth.auth.ListRevocations(
                auth_pb2.ListRevocationsRequest(
                    after_sequence=self.verifier.revocation_sequence, page_size=5000, page_token=token
                ),
                timeout=10,
            )
            for revocation in page.revocations:
                self._revoke(revocation)
            token = page.next_page_token
            if not token:
                return

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await self._catch_up()
                self.caught_up.set()
                backoff.reset()
                stream = self.ehealth.auth.WatchRevocations(
                    auth_pb2.WatchRevocationsRequest(after_sequence=self.verifier.revocation_sequence)
                )
                async for event in stream:
                    self._revoke(event.revocation)
                    backoff.reset()
            except asyncio.CancelledError:
                raise
            except grpc.RpcError as error:
                log.info("revocation feed: %s", error.code())
            except Exception:
                log.exception("revocation feed failed")
            await backoff.sleep()
