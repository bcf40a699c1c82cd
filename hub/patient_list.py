"""The physician's patient list (SPEC §3.4): posted asynchronously, answered from every OA.

A post is stored and acknowledged at once (tAck with a hub reference). A background task asks the OAs in
parallel (``ListHoldings``, paging through), retries an OA that fails with backoff for a bounded time, then
writes ONE ``PATIENT_LIST`` message to the mailbox saying, per OA, complete or missing — in the same
transaction that marks the request done, so a restart resumes exactly the requests still pending.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from google.protobuf import timestamp_pb2
from opentelemetry import trace
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select

from hub.mailbox import MailboxNotifier, MailboxRepository
from hub.models import ListRequest
from hub.upstream import OaClient
from mycarenet_core.clock import Clock
from mycarenet_core.db import transaction
from mycarenet_core.errors import MeshError, unavailable
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import context_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import oa_dmg_service_pb2 as oa_pb
from mycarenet_core.lifecycle import Backoff

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ListPolicy:
    """How long an OA may keep failing before the list is sent with that OA missing."""

    retry_window: float = 60.0
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    page_size: int = 1000
    page_timeout: float = 10.0


@dataclass
class FanOutTiming:
    """Wall time of a list's fan-out and of each OA's answer (seconds), for the latency report."""

    total: float = 0.0
    per_oa: dict[str, float] = field(default_factory=dict)


def tack_message(row: ListRequest, tack: dmg_pb2.TechnicalAck, now: dt.datetime) -> dmg_pb2.MailboxMessage:
    created = timestamp_pb2.Timestamp()
    created.FromDatetime(now)
    return dmg_pb2.MailboxMessage(
        message_id=f"hub:tack:{row.reference}",
        kind=dmg_pb2.MESSAGE_KIND_TECHNICAL_ACK,
        recipient_inami=row.requester_inami,
        requester_reference=row.requester_reference,
        created_time=created,
        technical_ack=tack,
    )


class PatientListWorker:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        oas: Mapping[str, OaClient],
        notifier: MailboxNotifier,
        policy: ListPolicy,
        clock: Clock,
        *,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._tracer = tracer or trace.NoOpTracer()
        self._sessions = sessions
        self._oas = oas
        self._notifier = notifier
        self.policy = policy
        self._clock = clock
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.timings: dict[str, FanOutTiming] = {}
        self.finished: dict[str, asyncio.Event] = {}

    def _clock_now(self) -> dt.datetime:
        return self._clock.now()

    async def post(
        self,
        context: context_pb2.RequestContext,
        year: int,
        insurer_codes: Sequence[str],
    ) -> dmg_pb2.TechnicalAck:
        """Store the request (or find the first one with this requester reference) and start it. Posts of
        one reference racing each other all get the first one's tAck: the one whose row is committed first
        wins, the others meet the unique index (IntegrityError) and answer with the winner's tAck."""
        try:
            return await self._post(context, year, insurer_codes)
        except IntegrityError:
            async with transaction(self._sessions) as session:
                existing = await self._first(session, context)
            if existing is None:
                raise
            return dmg_pb2.TechnicalAck.FromString(existing.tack)

    @staticmethod
    async def _first(session: AsyncSession, context: context_pb2.RequestContext) -> ListRequest | None:
        """The list request already posted with this requester reference, if any."""
        found: ListRequest | None = (
            await session.execute(
                select(ListRequest).where(
                    col(ListRequest.requester_inami) == context.requester_inami,
                    col(ListRequest.requester_reference) == context.requester_reference,
                )
            )
        ).scalar_one_or_none()
        return found

    async def _post(
        self,
        context: context_pb2.RequestContext,
        year: int,
        insurer_codes: Sequence[str],
    ) -> dmg_pb2.TechnicalAck:
        async with transaction(self._sessions) as session:
            existing = await self._first(session, context)
            if existing is not None:
                return dmg_pb2.TechnicalAck.FromString(existing.tack)
            reference = f"PL-{uuid.uuid4().hex}"
            tack = dmg_pb2.TechnicalAck(reference=reference, result=dmg_pb2.TECHNICAL_ACK_RESULT_SUCCESS)
            row = ListRequest(
                reference=reference,
                requester_inami=context.requester_inami,
                requester_reference=context.requester_reference,
                year=year,
                insurer_codes=",".join(insurer_codes),
                context=context.SerializeToString(),
                tack=tack.SerializeToString(),
                created_at=self._clock_now(),
            )
            session.add(row)
            stored = await MailboxRepository(session).store(
                [tack_message(row, tack, self._clock_now())], self._clock_now()
            )
        self._notifier.notify(stored.recipients)
        self._start(reference)
        return tack

    def _start(self, reference: str) -> None:
        if reference in self._tasks:
            return
        self.finished.setdefault(reference, asyncio.Event())
        task = asyncio.create_task(self._run(reference), name=f"patient-list {reference}")
        self._tasks[reference] = task
        task.add_done_callback(lambda _t: self._tasks.pop(reference, None))

    async def resume(self) -> int:
        """Start every request left pending by a previous run; return how many."""
        async with self._sessions() as session:
            refs = (
                (await session.execute(select(ListRequest.reference).where(col(ListRequest.done).is_(False))))
                .scalars()
                .all()
            )
        for reference in refs:
            self._start(reference)
        return len(refs)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _page(self, oa: OaClient, request: oa_pb.ListHoldingsRequest) -> oa_pb.ListHoldingsResponse:
        return await oa.call(
            lambda t: oa.dmg.ListHoldings(request, timeout=t, wait_for_ready=False), self.policy.page_timeout
        )

    async def _collect(
        self, code: str, context: context_pb2.RequestContext, year: int
    ) -> list[dmg_pb2.PatientListEntry]:
        """Every page of one OA's answer, retrying the whole OA with backoff within the retry window."""
        oa = self._oas.get(code)
        if oa is None:
            raise unavailable("OA_UNAVAILABLE", f"no route to insurer {code}").with_metadata(
                insurer_code=code
            )
        give_up = time.monotonic() + self.policy.retry_window
        backoff = Backoff(self.policy.initial_backoff, self.policy.max_backoff)
        while True:
            try:
                entries: list[dmg_pb2.PatientListEntry] = []
                token = ""
                while True:
                    request = oa_pb.ListHoldingsRequest(
                        context=context, year=year, page_size=self.policy.page_size, page_token=token
                    )
                    page = await self._page(oa, request)
                    entries.extend(page.entries)
                    token = page.next_page_token
                    if not token:
                        return entries
            except MeshError as error:
                if error.status.name not in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                    raise
                delay = backoff.next_delay()
                if time.monotonic() + delay > give_up:
                    raise
                log.info("patient list: insurer %s failed (%s); retrying", code, error.reason)
                await asyncio.sleep(delay)

    async def _run(self, reference: str) -> None:
        # A span for the fan-out (a child of the post's span when started by it), one child per OA.
        with self._tracer.start_as_current_span(
            "patient_list.fan_out", attributes={"mycarenet.list_reference": reference}
        ):
            await self._fan_out(reference)

    async def _fan_out(self, reference: str) -> None:
        async with self._sessions() as session:
            row = await session.get(ListRequest, reference)
        if row is None or row.done:
            self.finished[reference].set()
            return
        context = context_pb2.RequestContext.FromString(row.context)
        codes = [c for c in row.insurer_codes.split(",") if c]
        timing = FanOutTiming()
        started = time.monotonic()

        async def one(code: str) -> list[dmg_pb2.PatientListEntry]:
            try:
                with self._tracer.start_as_current_span(
                    "patient_list.oa", attributes={"mycarenet.oa": code}
                ) as span:
                    entries = await self._collect(code, context, row.year)
                    span.set_attribute("mycarenet.patient_count", len(entries))
                    return entries
            finally:
                timing.per_oa[code] = time.monotonic() - started

        results = await asyncio.gather(*(one(c) for c in codes), return_exceptions=True)
        timing.total = time.monotonic() - started
        self.timings[reference] = timing
        answer = dmg_pb2.PatientListMessage(list_reference=reference, year=row.year)
        for code, result in zip(codes, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                answer.insurers.append(
                    dmg_pb2.InsurerOutcome(
                        insurer_code=code,
                        status=dmg_pb2.INSURER_OUTCOME_STATUS_MISSING,
                        error=str(result)[:500],
                    )
                )
                continue
            for entry in result:
                if not entry.insurer_code:
                    entry.insurer_code = code
            answer.entries.extend(result)
            answer.insurers.append(
                dmg_pb2.InsurerOutcome(
                    insurer_code=code,
                    status=dmg_pb2.INSURER_OUTCOME_STATUS_COMPLETE,
                    patient_count=len(result),
                )
            )
        created = timestamp_pb2.Timestamp()
        created.FromDatetime(self._clock_now())
        message = dmg_pb2.MailboxMessage(
            message_id=f"hub:list:{reference}",
            kind=dmg_pb2.MESSAGE_KIND_PATIENT_LIST,
            recipient_inami=row.requester_inami,
            requester_reference=row.requester_reference,
            created_time=created,
            patient_list=answer,
        )
        async with transaction(self._sessions) as session:
            stored = await MailboxRepository(session).store([message], self._clock_now())
            fresh = await session.get(ListRequest, reference)
            if fresh is not None:
                fresh.done = True
        self._notifier.notify(stored.recipients)
        log.info(
            "patient list %s: %d entries in %.3fs (slowest OA %.3fs)",
            reference,
            len(answer.entries),
            timing.total,
            max(timing.per_oa.values(), default=0.0),
        )
        self.finished[reference].set()
