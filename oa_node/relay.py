"""The outbox relay: delivers the outbox's mailbox messages to the hub, at least once, in order.

A background job of the node (:meth:`OutboxRelay.run`) loops: read a batch of undelivered messages
(oldest first), send them to the hub's ``MailboxIntakeService.DeliverMessages`` with a deadline, and mark
delivered only the ids the hub acknowledged (stored or duplicate) — so a crash between the hub's store
and our update re-sends them, and the hub drops the duplicate by its stable ``message_id``. When the
outbox is empty the job sleeps until a writer that committed outbox rows wakes it (:class:`Wakeup`),
with a long safety timeout (``interval``, 30 s by default), never a short poll. When the hub fails it
backs off (the core :class:`~mycarenet_core.lifecycle.Backoff`). All state is in the database: a
restarted node goes on where it stopped.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mycarenet_core.clock import Clock
from mycarenet_core.db import transaction
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from mycarenet_core.gen.mycarenet.hub.v1 import mailbox_intake_service_pb2 as intake_pb2
from mycarenet_core.gen.mycarenet.hub.v1 import mailbox_intake_service_pb2_grpc as intake_grpc
from mycarenet_core.lifecycle import Backoff
from mycarenet_core.telemetry import message_links
from oa_node.feeds import SAFETY_TIMEOUT, Wakeup
from oa_node.repositories import OutboxRepository

log = logging.getLogger(__name__)


class OutboxRelay:
    """Delivers the outbox over ``channel`` (to the hub's MailboxIntakeService)."""

    def __init__(
        self,
        *,
        insurer_code: str,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        channel: grpc.aio.Channel,
        wakeup: Wakeup,
        interval: float = SAFETY_TIMEOUT,
        batch_size: int = 100,
        deadline: float = 5.0,
        max_backoff: float = 5.0,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.insurer_code = insurer_code
        self._sessions = sessions
        self._clock = clock
        self._stub: intake_grpc.MailboxIntakeServiceAsyncStub = intake_grpc.MailboxIntakeServiceStub(channel)
        self._wakeup = wakeup
        self._interval = interval
        self._batch_size = batch_size
        self._deadline = deadline
        self._backoff = Backoff(min(0.2, interval), max_backoff)
        self._tracer = tracer or trace.NoOpTracer()
        self.delivered = 0
        self.failures = 0

    def wake(self) -> None:
        """A writer committed messages: deliver now."""
        self._wakeup.set()

    async def run(self) -> None:
        """Deliver until cancelled (a batch in flight is abandoned: it stays undelivered in the database)."""
        while True:
            try:
                sent = await self.deliver_once()
                self._backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the hub is down or slow, or the database hiccupped: back off
                self.failures += 1
                delay = self._backoff.next_delay()
                log.warning("outbox relay %s: %s; retrying in %.1fs", self.insurer_code, error, delay)
                await asyncio.sleep(delay)
                continue
            if sent < self._batch_size:
                await self._wakeup.wait(self._interval)

    async def deliver_once(self) -> int:
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
                reply = await self._stub.DeliverMessages(request, timeout=self._deadline)
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
