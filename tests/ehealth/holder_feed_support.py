"""A stand-in insurer for eHealth's holder-feed tests: a ``HoldingFeedService`` behind the real trust
interceptor (it answers eHealth and the administrator only), serving the changes a test adds. It can replay
everything whatever position it is asked for (a source that replays must not make eHealth apply twice), be
stopped and started again on the same port (an insurer down, then back), and say who called it."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import grpc

from mycarenet_core.dates import to_proto
from mycarenet_core.gen.mycarenet.oa.v1 import holding_feed_service_pb2 as feed
from mycarenet_core.gen.mycarenet.oa.v1 import holding_feed_service_pb2_grpc as feed_grpc
from mycarenet_core.server import MeshServer, Service
from mycarenet_core.trust import TrustInterceptor, current_peer

SERVICE = "mycarenet.oa.v1.HoldingFeedService"


class StandInFeed(feed_grpc.HoldingFeedServiceServicer):
    """The holder changes of one insurer, in memory."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.changes: list[feed.HolderChange] = []
        self.replay_everything = False
        self.callers: list[str] = []
        self._event = asyncio.Event()

    def add(
        self,
        patient: str,
        holder: str,
        previous: str,
        start: dt.date | None,
        reference: str = "",
        *,
        publish: bool = True,
        end: dt.date | None = None,
    ) -> feed.HolderChange:
        sequence = len(self.changes) + 1
        change = feed.HolderChange(
            sequence=sequence,
            patient_niss=patient,
            holder_inami=holder,
            previous_holder_inami=previous,
            start_date=to_proto(start),
            end_date=to_proto(end),
            source_reference=reference or f"{self.code}:ref-{sequence}",
        )
        change.change_time.FromDatetime(dt.datetime(2025, 3, 3, 9, 0))
        self.changes.append(change)
        if publish:
            self.publish()
        return change

    def publish(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    def _after(self, sequence: int) -> list[feed.HolderChange]:
        start = 0 if self.replay_everything else sequence
        return [c for c in self.changes if c.sequence > start]

    async def ListHolderChanges(
        self, request: feed.ListHolderChangesRequest, context: Any
    ) -> feed.ListHolderChangesResponse:
        self.callers.append(current_peer().name)
        page = self._after(request.after_sequence)[: request.page_size or 500]
        return feed.ListHolderChangesResponse(changes=page, head_sequence=len(self.changes))

    async def WatchHolderChanges(self, request: feed.WatchHolderChangesRequest, context: Any) -> Any:
        self.callers.append(current_peer().name)
        last = request.after_sequence
        replay = self.replay_everything
        while True:
            event = self._event
            pending = [c for c in self.changes if c.sequence > (0 if replay else last)]
            replay = False
            for change in pending:
                last = max(last, change.sequence)
                yield feed.WatchHolderChangesResponse(change=change)
            await event.wait()


class StandInInsurer:
    """A stand-in insurer node serving :class:`StandInFeed` (plaintext, or TLS with ``credentials``)."""

    def __init__(self, code: str = "100", credentials: grpc.ServerCredentials | None = None) -> None:
        self.feed = StandInFeed(code)
        self.credentials = credentials
        self.port = 0
        self.server: MeshServer | None = None

    @property
    def target(self) -> str:
        return f"localhost:{self.port}" if self.credentials else f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        server = MeshServer(
            f"oa-{self.feed.code}",
            [Service(feed_grpc.add_HoldingFeedServiceServicer_to_server, self.feed, SERVICE)],
            credentials=self.credentials,
            trust=TrustInterceptor(secure=self.credentials is not None),
        )
        self.port = await server.start(f"127.0.0.1:{self.port}")
        self.server = server

    async def stop(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            await server.stop(0)
