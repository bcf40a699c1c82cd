"""The outbox relay: delivers the outbox's mailbox messages to the hub, at least once, in order.

A background job of the node (:meth:`OutboxRelay.run`) loops: read a batch of undelivered messages
(oldest first), send them to the hub's ``MailboxIntakeService.DeliverMessages`` with a deadline, and mark
delivered only the ids the hub acknowledged (stored or duplicate) — so a crash between the hub's store
and our update re-sends them, and the hub drops the duplicate by its stable ``message_id``. When the
outbox is empty the job sleeps until a writer that committed outbox rows wakes it (:class:`Wakeup`),
with a long safety timeout (``interval``, 30 s by default), never a short poll. When the hub fails it
backs off (the core :class:`~mycarenet_core.lifecycle.Backoff`). All state is in the database: a
restarted node goes on where it stopped.

A batch is bounded in count (``batch_size``) and in bytes (``max_batch_bytes``, half of gRPC's 4 MiB
message limit: the envelope and the hub's limit keep their margin). One message that cannot be delivered
because of itself never blocks the ones behind it: a message bigger than ``max_message_bytes`` is set
aside at once, and when the hub refuses a batch for good (INVALID_ARGUMENT, FAILED_PRECONDITION,
OUT_OF_RANGE, RESOURCE_EXHAUSTED "larger than max" (a message limit lower than ours), or RESOURCE_EXHAUSTED
for a batch of several) the relay sends that batch's messages one by one, and sets aside each one the hub
refuses on its own (FAILED_PRECONDITION only after ``poison_attempts`` failed deliveries: it may be a
passing state). A set-aside message (a dead letter) keeps its error in ``oa_outbox``; it is logged
(WARNING, with its message id), counted (``mycarenet.outbox.dead_letters``) and listed or re-queued by the
operator with ``python -m oa_node.dead_letters``.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from opentelemetry import metrics, trace
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
from oa_node.repositories.records import Oversized, Pending

log = logging.getLogger(__name__)

GRPC_MESSAGE_LIMIT = 4 * 1024 * 1024  # gRPC's default max receive size (the hub keeps the default)
MAX_BATCH_BYTES = GRPC_MESSAGE_LIMIT // 2  # payload bytes of one delivery: half the limit, for margin
MAX_MESSAGE_BYTES = 1024 * 1024  # one mailbox message (a few KB normally); bigger ones are set aside
# The hub's answers that say "this delivery will never be taken": retrying the same messages is useless.
REFUSED = frozenset(
    {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE}
)


class _Refused(Exception):
    """The hub refused a delivery for good (``error`` is its answer)."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        super().__init__(error.details())
        self.error = error


def too_big(error: grpc.aio.AioRpcError) -> bool:
    """The delivery is over a gRPC message limit (ours when sending, the hub's when receiving): the same
    messages will never pass. (RESOURCE_EXHAUSTED also says "throttled" or "busy", which pass.)"""
    return error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in (error.details() or "")


def _describe(error: grpc.aio.AioRpcError) -> str:
    return f"{error.code().name}: {error.details() or ''}"


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
        max_batch_bytes: int = MAX_BATCH_BYTES,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        poison_attempts: int = 5,
        deadline: float = 5.0,
        max_backoff: float = 5.0,
        tracer: trace.Tracer | None = None,
        meter: metrics.Meter | None = None,
    ) -> None:
        self.insurer_code = insurer_code
        self._sessions = sessions
        self._clock = clock
        self._stub: intake_grpc.MailboxIntakeServiceAsyncStub = intake_grpc.MailboxIntakeServiceStub(channel)
        self._wakeup = wakeup
        self._interval = interval
        self._batch_size = batch_size
        self._max_batch_bytes = max_batch_bytes
        self._max_message_bytes = min(max_message_bytes, max_batch_bytes)
        self._poison_attempts = poison_attempts
        self._deadline = deadline
        self._backoff = Backoff(min(0.2, interval), max_backoff)
        self._tracer = tracer or trace.NoOpTracer()
        self.delivered = 0
        self.failures = 0
        self.set_aside = 0
        self._dead_counter = (meter or metrics.NoOpMeter("oa_node.relay")).create_counter(
            "mycarenet.outbox.dead_letters",
            unit="{message}",
            description="Outbox messages set aside: they cannot be delivered because of themselves",
        )

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
                log.warning(
                    "outbox relay %s: %s; retrying in %.1fs", self.insurer_code, str(error)[:500], delay
                )
                await asyncio.sleep(delay)
                continue
            if sent == 0:  # a batch bounded by bytes may leave messages behind: look again first
                await self._wakeup.wait(self._interval)

    async def deliver_once(self) -> int:
        """Send one batch; return how many messages it held (a set-aside message counts)."""
        async with self._sessions() as session:
            pending = await OutboxRepository(session).pending(
                self._batch_size, self._max_batch_bytes, self._max_message_bytes
            )
        if not pending:
            return 0
        if isinstance(pending[0], Oversized):
            big = pending[0]
            await self._set_aside(
                big.id, f"{big.size} bytes: bigger than one message may be ({self._max_message_bytes} bytes)"
            )
            return 1
        rows = [row for row in pending if isinstance(row, Pending)]
        try:
            await self._send(rows)
        except _Refused as refused:
            if len(rows) == 1:
                await self._refused_alone(rows[0], refused.error)
                return 1
            log.warning(
                "outbox relay %s: the hub refused a batch of %d (%s); sending them one by one",
                self.insurer_code,
                len(rows),
                _describe(refused.error),
            )
            for row in rows:
                try:
                    await self._send([row])
                except _Refused as alone:
                    await self._refused_alone(row, alone.error)
        return len(rows)

    async def _send(self, rows: list[Pending]) -> None:
        """Deliver ``rows`` and mark the acknowledged ones; raise :class:`_Refused` when the hub refuses
        them for good, the call's error otherwise (the caller backs off)."""
        request = intake_pb2.DeliverMessagesRequest(
            insurer_code=self.insurer_code,
            messages=[dmg_pb2.MailboxMessage.FromString(row.payload) for row in rows],
        )
        # A delivery is its own trace, linked to the request that caused each message.
        with self._tracer.start_as_current_span(
            "outbox.deliver",
            context=trace.set_span_in_context(trace.INVALID_SPAN),
            kind=trace.SpanKind.PRODUCER,
            links=message_links(request.messages),
            attributes={"mycarenet.oa": self.insurer_code, "messaging.batch.message_count": len(rows)},
        ):
            try:
                reply = await self._stub.DeliverMessages(request, timeout=self._deadline)
            except grpc.aio.AioRpcError as error:
                async with transaction(self._sessions) as session:
                    await OutboxRepository(session).count_attempt([row.id for row in rows])
                code = error.code()
                if (
                    code in REFUSED
                    or too_big(error)
                    or (code == grpc.StatusCode.RESOURCE_EXHAUSTED and len(rows) > 1)
                ):
                    raise _Refused(error) from error
                raise
            acknowledged = [*reply.stored_ids, *reply.duplicate_ids]
            if not acknowledged:
                raise RuntimeError(f"the hub acknowledged none of {len(rows)} messages")
            async with transaction(self._sessions) as session:
                await OutboxRepository(session).mark_delivered(acknowledged, self._clock.now())
        self.delivered += len(reply.stored_ids)

    async def _refused_alone(self, row: Pending, error: grpc.aio.AioRpcError) -> None:
        """The hub refused this one message: set it aside, unless the refusal may pass (a precondition
        refused fewer than ``poison_attempts`` times: then the caller backs off and tries again)."""
        if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
            async with self._sessions() as session:
                attempts = await OutboxRepository(session).attempts(row.id)
            if attempts < self._poison_attempts:
                raise error
        await self._set_aside(row.id, _describe(error), row.message_id)

    async def _set_aside(self, row_id: int, why: str, message_id: str = "") -> None:
        async with transaction(self._sessions) as session:
            await OutboxRepository(session).set_aside(row_id, why, self._clock.now())
        self.set_aside += 1
        self._dead_counter.add(1, {"mycarenet.oa": self.insurer_code})
        log.warning(
            "outbox relay %s: message %s (outbox row %d) set aside, it cannot be delivered: %s "
            "(list them with python -m oa_node.dead_letters)",
            self.insurer_code,
            message_id or "?",
            row_id,
            why[:300],
        )
