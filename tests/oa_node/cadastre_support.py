"""A stand-in for eHealth's cadastre change feed (ListCadastreChanges / WatchCadastreChanges served from a
list), for the follower tests that need to control what eHealth says, when it is down, and what it replays.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from mycarenet_core import dates
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import cadastre_pb2 as cad_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import cadastre_pb2_grpc as cad_grpc

Context = grpc.aio.ServicerContext[Any, Any]


def period(start: dt.date | None, end: dt.date | None = None) -> common_pb2.Period:
    return common_pb2.Period(start=dates.to_proto(start), end=dates.to_proto(end))


class FakeCadastre(cad_grpc.CadastreServiceServicer):
    """Serves ``changes`` (sequence = position + 1). ``replay_everything``: ignore ``after_sequence`` and
    serve from the first change (a misbehaving source: the follower must not apply anything twice)."""

    def __init__(self) -> None:
        self.changes: list[cad_pb2.CadastreChange] = []
        self.replay_everything = False
        self.list_requests: list[int] = []
        self.watch_requests: list[int] = []
        self.peers: set[str] = set()
        self._grown = asyncio.Condition()

    @property
    def head(self) -> int:
        return len(self.changes)

    async def _append(self, change: cad_pb2.CadastreChange) -> int:
        change.sequence = self.head + 1
        change.change_time.CopyFrom(Timestamp(seconds=1_700_000_000 + change.sequence))
        self.changes.append(change)
        async with self._grown:
            self._grown.notify_all()
        return change.sequence

    async def provider(
        self,
        inami: str,
        first: str = "Dr",
        last: str = "",
        *,
        supervisor: str = "",
        validity: common_pb2.Period | None = None,
    ) -> int:
        """Record a provider; the follower sees no NISS and no key, as from the real feed."""
        return await self._append(
            cad_pb2.CadastreChange(
                provider=cad_pb2.CadastreProvider(
                    inami=inami,
                    first_name=first,
                    last_name=last or inami[-6:],
                    supervisor_inami=supervisor,
                    validity=validity,
                )
            )
        )

    async def organisation(
        self,
        inami: str,
        kind: cad_pb2.OrganisationKind.ValueType,
        name: str,
        members: list[tuple[str, dt.date | None, dt.date | None]],
    ) -> int:
        return await self._append(
            cad_pb2.CadastreChange(
                organisation=cad_pb2.Organisation(
                    inami=inami,
                    kind=kind,
                    name=name,
                    validity=period(dt.date(2000, 1, 1)),
                    members=[
                        cad_pb2.OrganisationMember(inami=who, period=period(start, end))
                        for who, start, end in members
                    ],
                )
            )
        )

    async def raw(self, change: cad_pb2.CadastreChange) -> int:
        return await self._append(change)

    def _after(self, after: int) -> list[cad_pb2.CadastreChange]:
        start = 0 if self.replay_everything else after
        return self.changes[start:]

    def _note_peer(self, context: Context) -> None:
        self.peers |= {str(v) for k, v in context.invocation_metadata() or () if k == "x-mcn-peer"}

    async def ListCadastreChanges(
        self, request: cad_pb2.ListCadastreChangesRequest, context: Context
    ) -> cad_pb2.ListCadastreChangesResponse:
        self._note_peer(context)
        self.list_requests.append(request.after_sequence)
        size = min(request.page_size or 500, 5000)
        return cad_pb2.ListCadastreChangesResponse(
            changes=self._after(request.after_sequence)[:size], head_sequence=self.head
        )

    async def WatchCadastreChanges(
        self, request: cad_pb2.WatchCadastreChangesRequest, context: Context
    ) -> AsyncIterator[cad_pb2.WatchCadastreChangesResponse]:
        self._note_peer(context)
        self.watch_requests.append(request.after_sequence)
        sent = 0 if self.replay_everything else request.after_sequence
        while True:
            while sent < self.head:
                yield cad_pb2.WatchCadastreChangesResponse(change=self.changes[sent])
                sent += 1
            async with self._grown:
                await self._grown.wait_for(lambda waited=sent: self.head > waited)  # type: ignore[misc]


class FakeEhealth:
    """A gRPC server serving a :class:`FakeCadastre`; it can go away and come back on the same port."""

    def __init__(self, cadastre: FakeCadastre) -> None:
        self.cadastre = cadastre
        self.port = 0
        self._server: grpc.aio.Server | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        server = grpc.aio.server()
        cad_grpc.add_CadastreServiceServicer_to_server(self.cadastre, server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        assert self.port, "could not bind"
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
            self._server = None
