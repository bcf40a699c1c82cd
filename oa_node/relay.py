"""The outbox relay: delivers the outbox's mailbox messages to the hub, at least once, in order.

A task loops: read a batch of undelivered messages (oldest first), send them to the hub's
``MailboxIntakeService.DeliverMessages`` with a deadline, and mark delivered only the ids the hub
acknowledged (stored or duplicate) — so a crash between the hub's store and our update re-sends them,
and the hub drops the duplicate by its stable ``message_id``. When the outbox is empty the task sleeps
until a writer wakes it (:meth:`OutboxRelay.wake`) or ``interval`` passes; when the hub fails it backs
off exponentially up to ``max_backoff``. All state is in the database: a restarted node goes on where
it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import grpc
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mycarenet_core.channels import open_channel
from mycarenet_core.clock import Clock
from mycarenet_core.db import transaction
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from mycarenet_core.gen.mycarenet.hub.v1 import mailbox_intake_service_pb2 as intake_pb2
from mycarenet_core.gen.mycarenet.hub.v1 import mailbox_intake_service_pb2_grpc as intake_grpc
from mycarenet_core.telemetry import message_links
from oa_node.repositories import OutboxRepository

log = logging.getLogger(__name__)


class OutboxRelay:
    """Delivers the outbox to ``target`` (the hub's MailboxIntakeService)."""

    def __init__(
        self,
        *,
        insurer_code: str,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        target: str,
        interval: float = 0.2,
        batch_size: int = 100,
        deadline: float = 5.0,
        max_backoff: float = 5.0,
        credentials: grpc.ChannelCredentials | None = None,
        interceptors: Sequence[Any] = (),
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.insurer_code = insurer_code
        self._interceptors = tuple(interceptors)
        self._tracer = tracer or trace.NoOpTracer()
        self._sessions = sessions
        self._clock = clock
        self._target = target
        self._interval = interval
        self._batch_size = batch_size
        self._deadline = deadline
        self._max_backoff = max_backoff
        self._credentials = credentials
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None
        self.delivered = 0
        self.failures = 0

    def start(self) -> None:
        if self._task is None:
            # The hub takes this insurer's messages only from its own node (trust.toml): on a plaintext
            # channel the node declares itself; under TLS its certificate says it.
            self._channel = open_channel(
                self._target,
                credentials=self._credentials,
                interceptors=self._interceptors,
                identity=f"oa-{self.insurer_code}",
            )
            self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self.insurer_code}")

    def wake(self) -> None:
        """A writer committed messages: deliver now instead of at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop at once (a batch in flight is abandoned: it is still undelivered in the database)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None

    async def _run(self) -> None:
        assert self._channel is not None
        stub: intake_grpc.MailboxIntakeServiceAsyncStub = intake_grpc.MailboxIntakeServiceStub(self._channel)
        backoff = self._interval
        while True:
            try:
                sent = await self.deliver_once(stub)
                backoff = self._interval
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the hub is down or slow, or the database hiccupped: back off
                self.failures += 1
                log.warning("outbox relay %s: %s; retrying in %.1fs", self.insurer_code, error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            if sent < self._batch_size:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._interval)

    async def deliver_once(self, stub: intake_grpc.MailboxIntakeServiceAsyncStub) -> int:
        """Send one batch; return how many messages it held."""
        async with self._sessions() as session:
            pending = await OutboxRepository(session).pending(self._batch_size)
        if not pending:
            return 0
        request = intake_pb2.DeliverMessagesRequest(
            insurer_code=self.insurer_code,
            messages=[dmg_pb2.MailboxMessage.FromString(row.payload) for row in pending],
        )
        # A delivery is its own trace, linked to the request that caused each message.
        with self._tracer.start_as_current_span(
            "outbox.deliver",
            context=trace.set_span_in_context(trace.INVALID_SPAN),
            kind=trace.SpanKind.PRODUCER,
            links=message_links(request.messages),
            attributes={"mycarenet.oa": self.insurer_code, "messaging.batch.message_count": len(pending)},
        ):
            try:
                reply = await stub.DeliverMessages(request, timeout=self._deadline)
            except grpc.aio.AioRpcError:
                async with transaction(self._sessions) as session:
                    await OutboxRepository(session).count_attempt(
                        [row.id for row in pending if row.id is not None]
                    )
                raise
            acknowledged = [*reply.stored_ids, *reply.duplicate_ids]
            if not acknowledged:
                raise RuntimeError(f"the hub acknowledged none of {len(pending)} messages")
            async with transaction(self._sessions) as session:
                await OutboxRepository(session).mark_delivered(acknowledged, self._clock.now())
        self.delivered += len(reply.stored_ids)
        return len(pending)
