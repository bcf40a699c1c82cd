"""The one durable channel of the DMG relation move: eHealth follows every insurer's holder-change feed.

Each insurer writes a change of a patient's DMG holder (notification, paper takeover, cancellation and
reopening, end of a holding) in the same transaction as the holding itself, and serves them in order
(``mycarenet.oa.v1.HoldingFeedService``). eHealth follows each configured insurer (``oa_targets``): it
catches up with ``ListHolderChanges`` pages from the position stored in its own database, then holds
``WatchHolderChanges`` open from there. When the insurer goes away the job ends and the process's
:class:`~mycarenet_core.lifecycle.Background` starts it again after the follower's
:class:`~mycarenet_core.lifecycle.Backoff` (reset once it has caught up again).

Live changes are applied in bursts: a reader queues them, the applier takes everything queued so far. Each
burst is ONE transaction (:meth:`HolderMoves.apply`) that claims the insurer's position row first, applies
only the changes after the stored position — each one as ``TransferDmgRelation`` did (the new holder gets a
DMG relation from the start date, the previous holder's ends the day before; no holder: the previous
holder's ends), idempotent by the change's source reference — appends the relations it changed to the
register's change log, writes one audit row per change, and advances the position. Every change is applied
exactly once, whatever the insurer replays and however often eHealth restarts. A change eHealth cannot use
(a malformed NISS or INAMI, no start date, a reference longer than eHealth keeps) is skipped with an audit
row saying why; the position still moves past it, so one bad entry never stalls the feed. The same holds for
a change that passes these checks but that the database refuses (a character PostgreSQL cannot store, a
constraint): when a burst fails for a reason other than a passing one (the database busy or away, the
insurer gone), its changes are applied one by one, and a change that fails on its own
``poison_attempts`` times (3, with the follower's back-off in between) is skipped with an audit row
(``SKIPPED``, ``APPLY_FAILED``) and an ERROR log line naming it, for the administrator to apply by hand
(``TransferDmgRelation``); the changes behind it are applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterable, Sequence
from typing import Any

import grpc
from sqlalchemy import insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from ehealth.audit import audit_row
from ehealth.inputs import MAX_REFERENCE, DmgMove
from ehealth.logs import Logs, LogWriter
from ehealth.models import AUDIT, HOLDER_FEED_POSITION
from ehealth.relations import Relations
from ehealth.store import Database
from mycarenet_core.codes import McnCode
from mycarenet_core.gen.mycarenet.oa.v1 import holding_feed_service_pb2 as feed_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import holding_feed_service_pb2_grpc as feed_grpc
from mycarenet_core.lifecycle import Backoff
from mycarenet_core.telemetry import Telemetry, link_to
from mycarenet_core.validation import Checker

log = logging.getLogger(__name__)

AUDIT_METHOD = "HoldingFeedService/ApplyHolderChange"
POSITION = HOLDER_FEED_POSITION


def parse_change(change: feed_pb2.HolderChange) -> DmgMove | str:
    """The DMG move a holder change asks for, or why eHealth cannot apply it."""
    check = Checker()
    patient = check.niss("patient_niss", change.patient_niss)
    holder = check.optional_inami("holder_inami", change.holder_inami)
    previous = check.optional_inami("previous_holder_inami", change.previous_holder_inami)
    start = check.date("start_date", change.start_date)
    until = check.optional_date("end_date", change.end_date)
    reference = check.text("source_reference", change.source_reference, max_length=MAX_REFERENCE)
    if start is not None and until is not None and until < start:
        check.add("end_date", McnCode.VALUE_NOT_ALLOWED, "ends before it starts")
    if check.violations or start is None:
        return "; ".join(f"{v.field}: {v.code} {v.description}" for v in check.violations)
    return DmgMove(
        patient, holder.value if holder else "", previous.value if previous else "", start, reference, until
    )


def passing(error: BaseException) -> bool:
    """True for a failure that says nothing about the change being applied (the database busy, locked or
    away, a connection lost, a deadline, the insurer gone): the burst is tried again as it is."""
    if isinstance(error, (OperationalError, InterfaceError)):
        return True
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, (grpc.RpcError, TimeoutError, ConnectionError, asyncio.CancelledError))


class HolderMoves:
    """The database side of the holder feeds: positions, and bursts of changes applied exactly once."""

    def __init__(self, db: Database, logs: Logs, relations: Relations, telemetry: Telemetry | None = None):
        self.db = db
        self.logs = logs
        self.relations = relations
        self.telemetry = telemetry

    async def position(self, insurer: str) -> int:
        """The last change of ``insurer`` applied here (its position row is made on first use)."""
        async with self.db.connect() as conn:
            found = (
                await conn.execute(
                    select(POSITION.c.applied_sequence).where(POSITION.c.insurer_code == insurer)
                )
            ).scalar()
        if found is not None:
            return int(found)
        with contextlib.suppress(IntegrityError):  # another process made it at the same moment
            async with self.db.transaction() as session:  # through the write gate, like every write
                await session.execute(
                    insert(POSITION).values(
                        insurer_code=insurer, applied_sequence=0, update_time=self.logs.clock.now()
                    )
                )
        return 0

    async def apply(self, insurer: str, changes: Sequence[feed_pb2.HolderChange]) -> tuple[int, int]:
        """Apply, in ONE transaction, the changes of ``insurer`` after its stored position; (position,
        how many were applied). The position row is claimed first (an UPDATE: the row lock on PostgreSQL,
        the write lock on SQLite), so that a change already applied is never applied again."""
        span = contextlib.nullcontext()
        if self.telemetry is not None:
            links = [link for link in (link_to(c.traceparent) for c in changes) if link is not None]
            span = self.telemetry.tracer.start_as_current_span(  # type: ignore[assignment]
                "dmg_relation.move", links=links, attributes={"mycarenet.oa": insurer}
            )
        with span:
            async with self.logs.transaction() as writer:
                session = writer.session
                stored = await self._claim(writer, insurer)
                fresh = sorted((c for c in changes if c.sequence > stored), key=lambda c: c.sequence)
                if not fresh:
                    return int(stored), 0
                audit = []
                for change in fresh:
                    move = parse_change(change)
                    if isinstance(move, str):
                        log.warning("holder change #%d of oa-%s skipped: %s", change.sequence, insurer, move)
                        audit.append(self._audit(writer.now, insurer, change, "SKIPPED", "INVALID_CHANGE"))
                        continue
                    result = await self.relations.apply_move(writer, move)
                    outcome = "REPLAYED" if result.replayed else "OK"
                    audit.append(self._audit(writer.now, insurer, change, outcome, "", move))
                await session.execute(insert(AUDIT), audit)
                last = fresh[-1].sequence
                await session.execute(
                    update(POSITION).where(POSITION.c.insurer_code == insurer).values(applied_sequence=last)
                )
                return last, len(fresh)

    @staticmethod
    async def _claim(writer: LogWriter, insurer: str) -> int:
        """Claim the position row of ``insurer`` (an UPDATE: the row lock on PostgreSQL, the write lock on
        SQLite) and read it."""
        claimed = await writer.session.execute(
            update(POSITION)
            .where(POSITION.c.insurer_code == insurer)
            .values(update_time=writer.now)
            .returning(POSITION.c.applied_sequence)
        )
        stored = claimed.scalar()
        if stored is None:
            raise RuntimeError(f"no holder feed position for insurer {insurer}: position() first")
        return int(stored)

    async def skip(
        self, insurer: str, change: feed_pb2.HolderChange, error: BaseException
    ) -> tuple[int, int]:
        """Move the position of ``insurer`` past ``change``, which cannot be applied (``error``), with an
        audit row saying so; (position, 0)."""
        async with self.logs.transaction() as writer:
            session = writer.session
            stored = await self._claim(writer, insurer)
            if change.sequence <= stored:
                return stored, 0
            log.error(
                "holder change #%d of oa-%s (source reference %r) skipped, it cannot be applied: %s; "
                "apply it by hand (TransferDmgRelation)",
                change.sequence,
                insurer,
                change.source_reference[:80],
                str(error)[:300],
            )
            audit = self._audit(writer.now, insurer, change, "SKIPPED", "APPLY_FAILED")
            await session.execute(insert(AUDIT), [audit])
            await session.execute(
                update(POSITION)
                .where(POSITION.c.insurer_code == insurer)
                .values(applied_sequence=change.sequence)
            )
            return change.sequence, 0

    @staticmethod
    def _audit(
        now: dt.datetime,
        insurer: str,
        change: feed_pb2.HolderChange,
        outcome: str,
        reason: str,
        move: DmgMove | None = None,
    ) -> dict[str, Any]:
        subject = (move.new_holder or move.previous_holder) if move is not None else change.holder_inami
        return audit_row(now, AUDIT_METHOD, f"oa-{insurer}", outcome, reason=reason, subject=subject)


class HolderFollower:
    """Follows one insurer's holder-change feed; :meth:`run` is a background job of the process."""

    def __init__(
        self,
        insurer: str,
        channel: grpc.aio.Channel,
        moves: HolderMoves,
        *,
        page_size: int = 500,
        burst_size: int = 1000,
        deadline: float = 30.0,
        backoff: Backoff | None = None,
        poison_attempts: int = 3,
    ) -> None:
        self.insurer = insurer
        self.poison_attempts = poison_attempts
        self._refused: dict[int, int] = {}  # sequence -> how many times it failed on its own
        self.channel = channel
        self.moves = moves
        self.page_size = page_size
        self.burst_size = burst_size
        self.deadline = deadline
        self.backoff = backoff or Backoff(0.2, 5.0)
        self._stub = feed_grpc.HoldingFeedServiceStub(channel)
        self._advanced = asyncio.Condition()
        self.sequence = 0
        """The last applied sequence (the database has the same; read at each start)."""
        self.following = False
        """True while the watch on the insurer is open."""
        self.caught_up = asyncio.Event()
        self.applied = 0
        self.failures = 0

    async def wait_for(self, sequence: int, within: float) -> None:
        """Wait until the changes up to ``sequence`` are applied (tests, tooling)."""

        async def reached() -> None:
            async with self._advanced:
                await self._advanced.wait_for(lambda: self.sequence >= sequence)

        await asyncio.wait_for(reached(), within)

    async def run(self) -> None:
        """One session with the insurer: from the stored position, catch up, then watch until the stream
        ends. A failure of the insurer ends it (logged); the process's background starts it again."""
        try:
            await self._advance(await self.moves.position(self.insurer), 0)
            await self._catch_up()
            self.caught_up.set()
            self.backoff.reset()
            call = self._stub.WatchHolderChanges(
                feed_pb2.WatchHolderChangesRequest(after_sequence=self.sequence)
            )
            try:
                self.following = True
                await self._follow(call)
            finally:
                self.following = False
                call.cancel()
            log.info("holder feed of oa-%s ended", self.insurer)
        except grpc.RpcError as error:
            self.failures += 1
            log.info("holder feed of oa-%s: %s", self.insurer, error.code())

    async def _advance(self, sequence: int, applied: int) -> None:
        self.applied += applied
        async with self._advanced:
            self.sequence = max(self.sequence, sequence)
            self._advanced.notify_all()

    async def _apply(self, changes: Sequence[feed_pb2.HolderChange]) -> None:
        try:
            await self._advance(*await self.moves.apply(self.insurer, changes))
            return
        except Exception as error:
            if passing(error):
                raise
            log.warning(
                "holder feed of oa-%s: a burst of %d failed (%s); applying them one by one",
                self.insurer,
                len(changes),
                str(error)[:300],
            )
        for change in sorted(changes, key=lambda c: c.sequence):
            if change.sequence <= self.sequence:
                continue
            try:
                await self._advance(*await self.moves.apply(self.insurer, [change]))
            except Exception as error:
                if passing(error):
                    raise
                failed = self._refused[change.sequence] = self._refused.get(change.sequence, 0) + 1
                if failed < self.poison_attempts:
                    raise  # the follower backs off and tries again: it may pass
                await self._advance(*await self.moves.skip(self.insurer, change, error))
                del self._refused[change.sequence]

    async def _catch_up(self) -> None:
        while True:
            before = self.sequence
            page = await self._stub.ListHolderChanges(
                feed_pb2.ListHolderChangesRequest(after_sequence=before, page_size=self.page_size),
                timeout=self.deadline,
            )
            if page.head_sequence < before:
                log.warning(
                    "holder feed of oa-%s ends at #%d, before #%d applied here (reset?)",
                    self.insurer,
                    page.head_sequence,
                    before,
                )
            if page.changes:
                await self._apply(page.changes)
            # Done when current, or when a page moved nothing on (a source replaying old changes must not
            # keep the catch-up asking for the same page forever; the watch takes over).
            if not page.changes or self.sequence >= page.head_sequence or self.sequence <= before:
                return

    async def _follow(self, stream: AsyncIterable[feed_pb2.WatchHolderChangesResponse]) -> None:
        """Apply the live changes in bursts: one transaction for everything queued so far."""
        queue: asyncio.Queue[feed_pb2.HolderChange | None] = asyncio.Queue(maxsize=4 * self.burst_size)
        failed: list[BaseException] = []

        async def read() -> None:
            try:
                async for event in stream:
                    await queue.put(event.change)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # handed to the applier, which raises it
                failed.append(error)
            await queue.put(None)

        reader = asyncio.ensure_future(read())
        try:
            ended = False
            while not ended:
                burst = [await queue.get()]
                while len(burst) < self.burst_size and not queue.empty():
                    burst.append(queue.get_nowait())
                ended = burst[-1] is None
                changes = [c for c in burst if c is not None and c.sequence > self.sequence]
                if changes:
                    await self._apply(changes)
            if failed:
                raise failed[0]
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


__all__ = ["HolderFollower", "HolderMoves", "parse_change", "passing"]
