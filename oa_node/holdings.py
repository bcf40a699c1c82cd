"""HoldingFeedService: the changes of who holds each patient's DMG at this insurer, for eHealth to move the
DMG therapeutic relations by (the one durable channel of the relation move).

Every transaction that changes a patient's holder (a notification, an accepted 102771, a paper holding
cancelled with its payment) appends its :class:`~oa_node.rules.HolderMove` to the log in the same
transaction (:func:`log_moves`), with an idempotency key that a replay of the same cause would give again
(``source_reference``, "<insurer>:<what caused it>") and the trace context of the request. eHealth
catches up with ``ListHolderChanges`` and follows ``WatchHolderChanges``: the changes after its position
from the database, then each change as it is committed, woken by the writer (no polling).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import AsyncIterator, Sequence

from google.protobuf import timestamp_pb2
from sqlalchemy.ext.asyncio import AsyncSession

from mycarenet_core import dates
from mycarenet_core.gen.mycarenet.oa.v1 import holding_feed_service_pb2 as hf_pb2
from mycarenet_core.reads import HotReads
from mycarenet_core.telemetry import current_trace_context
from mycarenet_core.validation import Checker
from oa_node import rules
from oa_node.feeds import SAFETY_TIMEOUT, FeedSignal
from oa_node.repositories import holder_changes as log
from oa_node.repositories.holder_changes import HolderChange, NewHolderChange

DEFAULT_PAGE, MAX_PAGE = 500, 5000
WATCH_BATCH = 500
MAX_SOURCE_REFERENCE = 100


def source_reference(insurer_code: str, cause: str, index: int = 0) -> str:
    """``"<insurer>:<cause>"`` (``#<n>`` for the n-th move of one cause), at most 100 characters: a cause too
    long is replaced by its SHA-256, so that the same cause always gives the same key."""
    suffix = f"#{index + 1}" if index else ""
    key = f"{insurer_code}:{cause}{suffix}"
    if len(key) <= MAX_SOURCE_REFERENCE:
        return key
    digest = hashlib.sha256(cause.encode()).hexdigest()[:64]
    return f"{insurer_code}:{cause.split(':', 1)[0][:16]}:{digest}{suffix}"


async def log_moves(
    session: AsyncSession,
    moves: Sequence[rules.HolderMove],
    *,
    insurer_code: str,
    cause: str,
    now: dt.datetime,
) -> int:
    """Append the holder moves of one decision in the caller's transaction; the last sequence (0: none)."""
    if not moves:
        return 0
    traceparent = current_trace_context()[0][:64]
    return await log.append(
        session,
        [
            NewHolderChange(
                patient_niss=move.patient,
                holder_inami=move.holder or "",
                previous_holder_inami=move.previous or "",
                start_date=move.start,
                end_date=move.end,
                source_reference=source_reference(insurer_code, cause, index),
                traceparent=traceparent,
            )
            for index, move in enumerate(moves)
        ],
        now,
    )


def change_proto(change: HolderChange) -> hf_pb2.HolderChange:
    when = timestamp_pb2.Timestamp()
    moment = change.change_time
    when.FromDatetime(moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC))
    return hf_pb2.HolderChange(
        sequence=change.sequence,
        change_time=when,
        patient_niss=change.patient_niss,
        holder_inami=change.holder_inami,
        previous_holder_inami=change.previous_holder_inami,
        start_date=dates.to_proto(change.start_date),
        end_date=dates.to_proto(change.end_date),
        source_reference=change.source_reference,
        traceparent=change.traceparent,
    )


class HoldingFeed:
    """ListHolderChanges and WatchHolderChanges of one insurer node."""

    def __init__(self, reads: HotReads, signal: FeedSignal) -> None:
        self._reads = reads
        self.signal = signal

    async def list(self, request: hf_pb2.ListHolderChangesRequest) -> hf_pb2.ListHolderChangesResponse:
        with Checker() as check:
            after = check.number("after_sequence", request.after_sequence, minimum=0, maximum=2**62)
            size = check.page_size("page_size", request.page_size, default=DEFAULT_PAGE, maximum=MAX_PAGE)
        # The head first: a change committed between the two reads is in the page (the head is raised to it).
        head = await log.head(self._reads)
        changes = await log.after(self._reads, after, size)
        return hf_pb2.ListHolderChangesResponse(
            changes=[change_proto(c) for c in changes],
            head_sequence=max(head, *(c.sequence for c in changes), 0),
        )

    async def watch(
        self, request: hf_pb2.WatchHolderChangesRequest
    ) -> AsyncIterator[hf_pb2.WatchHolderChangesResponse]:
        """The changes after ``after_sequence`` from the database, then each one as it is committed; ends
        when the caller cancels or the node stops."""
        with Checker() as check:
            cursor = check.number("after_sequence", request.after_sequence, minimum=0, maximum=2**62)
        while not self.signal.closed:
            batch = await log.after(self._reads, cursor, WATCH_BATCH)
            for change in batch:
                yield hf_pb2.WatchHolderChangesResponse(change=change_proto(change))
                cursor = change.sequence
            if len(batch) < WATCH_BATCH:
                await self.signal.wait_beyond(cursor, SAFETY_TIMEOUT)


__all__ = ["HoldingFeed", "change_proto", "log_moves", "source_reference"]
