"""Abuse control of the insurability services (seed 003 §7.2–§7.3, seed 001 §3 and annex 2).

The rules of use: a provider consults for a patient actually treated, once per contact, never
systematically (e.g. to refresh a whole pharmacy database). Two findings, one registry of consequences:

* **Many distinct patients in a short window** (found here, at the hub, the one entry point): a sliding window
  of the distinct patients each requester of record (the principal under a mandate; the pharmacy for a
  pharmacy's session) had routed to an insurer by GetMemberData or ConsultRights; more than
  ``max_distinct_patients`` within ``window`` is a finding. The window of that provider then starts afresh.
* **Consultations never followed by a billed service** (the a-posteriori purpose check, §7.3): found by each
  insurer, who knows what it was billed (:mod:`oa_node.purpose`). The insurer writes a USAGE_NOTICE without a
  consequence to its outbox; its relay delivers it to the hub's mailbox intake, where
  :meth:`AbuseControl.take_findings` records the strike in the transaction that stores the message (keyed by
  insurer and message id: a retried delivery is a duplicate and counts once) and fills in the consequence.

Consequence (:func:`consequence_of`, pure): the first finding is a **warning**; a finding within
``repeat_days`` (365, seed 001 §3) of an earlier one is a **temporary exclusion** of ``exclusion`` from the
insurability services (seed 003 §7.2: "exclure temporairement les officines qui ne respecteraient pas les
règles malgré un avertissement"). Both reach the provider as a USAGE_NOTICE in its mailbox; an excluded
provider's calls are refused PERMISSION_DENIED ``SYSTEMATIC_CONSULTATION_EXCLUDED`` with the end of the
exclusion in the ErrorInfo metadata (``excluded_until``): not RESOURCE_EXHAUSTED, which says "a quota, retry
later" (clients retry it after the RetryInfo delay, the throttle's THROTTLED uses it) while an exclusion is a
sanction on the provider's conduct for days, that no retry can lift.

The strikes are rows of ``abuse_strike`` (durable, the operator's record); the registry that refuses calls is
an in-memory view of them (loaded at start, updated after each commit): the check on the hot path is one dict
look-up, no SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field

from google.protobuf import timestamp_pb2
from opentelemetry import metrics
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col, select

from hub.mailbox import MailboxNotifier, MailboxRepository
from hub.models import AbuseStrike
from mycarenet_core.clock import Clock
from mycarenet_core.db import transaction
from mycarenet_core.errors import permission_denied
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2

log = logging.getLogger(__name__)

EXCLUDED_REASON = "SYSTEMATIC_CONSULTATION_EXCLUDED"
FINDING_NAMES = {
    dmg_pb2.USAGE_FINDING_DISTINCT_PATIENTS: "DISTINCT_PATIENTS",
    dmg_pb2.USAGE_FINDING_UNFOLLOWED_CONSULTATIONS: "UNFOLLOWED_CONSULTATIONS",
}
FINDINGS_BY_NAME = {name: value for value, name in FINDING_NAMES.items()}
MAX_RULE = 300


# --- the pure rules ---------------------------------------------------------------------------------------


class Consequence(enum.StrEnum):
    WARNING = "WARNING"
    EXCLUSION = "EXCLUSION"


CONSEQUENCE_PROTO = {
    Consequence.WARNING: dmg_pb2.USAGE_CONSEQUENCE_WARNING,
    Consequence.EXCLUSION: dmg_pb2.USAGE_CONSEQUENCE_EXCLUSION,
}


@dataclass(frozen=True)
class Strike:
    """One finding against a provider and what followed from it."""

    notice_id: str
    provider: str
    finding: str
    detected_at: dt.datetime
    consequence: Consequence
    excluded_until: dt.datetime | None = None


@dataclass(frozen=True)
class Decision:
    consequence: Consequence
    excluded_until: dt.datetime | None
    repeats: Strike | None


def consequence_of(
    earlier: Iterable[Strike], at: dt.datetime, *, repeat_days: int, exclusion: dt.timedelta
) -> Decision:
    """The consequence of a finding at ``at`` given the provider's earlier strikes (seed 001 §3): a warning,
    or, when an earlier finding lies within ``repeat_days`` before it, an exclusion until ``at + exclusion``
    (never shortening one in force). ``repeats`` is the earliest finding of those days (the "first
    infraction" the repeat is counted from)."""
    since = at - dt.timedelta(days=repeat_days)
    recent = sorted((s for s in earlier if since <= s.detected_at <= at), key=lambda s: s.detected_at)
    if not recent:
        return Decision(Consequence.WARNING, None, None)
    until = at + exclusion
    for strike in recent:
        if strike.excluded_until is not None and strike.excluded_until > until:
            until = strike.excluded_until
    return Decision(Consequence.EXCLUSION, until, recent[0])


def excluded_until(strikes: Iterable[Strike], at: dt.datetime) -> dt.datetime | None:
    """The end of the exclusion in force at ``at``, if any."""
    ends = [s.excluded_until for s in strikes if s.excluded_until is not None and s.excluded_until > at]
    return max(ends) if ends else None


class DistinctWindow:
    """The distinct patients of one provider seen within the last ``window`` (a sliding window; the time is
    a parameter). Holds at most one entry per patient, its last time."""

    def __init__(self, window: dt.timedelta) -> None:
        self.window = window
        self._seen: OrderedDict[str, dt.datetime] = OrderedDict()  # patient -> last seen, oldest first

    def see(self, patient: str, at: dt.datetime) -> int:
        """Record a consultation of ``patient`` at ``at``; the number of distinct patients in the window."""
        self._seen[patient] = at
        self._seen.move_to_end(patient)
        self._expire(at)
        return len(self._seen)

    def count(self, at: dt.datetime) -> int:
        self._expire(at)
        return len(self._seen)

    def first(self) -> dt.datetime | None:
        return next(iter(self._seen.values()), None)

    def _expire(self, at: dt.datetime) -> None:
        horizon = at - self.window
        while self._seen:
            oldest, when = next(iter(self._seen.items()))
            if when > horizon:
                break
            del self._seen[oldest]


# --- the registry -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AbuseConfig:
    """Thresholds of the abuse control (hub settings ``MCN_HUB_ABUSE_*``)."""

    window: dt.timedelta = dt.timedelta(hours=1)
    max_distinct_patients: int = 120
    repeat_days: int = 365
    exclusion: dt.timedelta = dt.timedelta(days=30)
    max_tracked_providers: int = 100_000

    def rule(self) -> str:
        minutes = self.window.total_seconds() / 60
        return f"more than {self.max_distinct_patients} distinct patients in {minutes:g} minutes"


@dataclass
class _Finding:
    """A finding on its way into the registry (a strike row and its notice)."""

    strike: Strike
    source_key: str
    message: dmg_pb2.MailboxMessage
    insurer_code: str = ""


@dataclass
class _Provider:
    strikes: list[Strike] = field(default_factory=list)
    until: dt.datetime | None = None


class AbuseControl:
    """The hub's abuse control: the sliding windows, the strike registry (table + in-memory view), the
    refusal of excluded providers, the notices, the metrics."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        notifier: MailboxNotifier,
        clock: Clock,
        config: AbuseConfig | None = None,
        *,
        meter: metrics.Meter | None = None,
    ) -> None:
        self.sessions = sessions
        self.notifier = notifier
        self.clock = clock
        self.config = config or AbuseConfig()
        self._windows: OrderedDict[str, DistinctWindow] = OrderedDict()
        self._providers: dict[str, _Provider] = {}
        self._lock = asyncio.Lock()
        meter = meter or metrics.NoOpMeter("hub.abuse")
        self._findings = meter.create_counter(
            "mycarenet.abuse.findings",
            unit="{finding}",
            description="Findings of systematic consultation recorded, by finding and consequence",
        )
        self._refusals = meter.create_counter(
            "mycarenet.abuse.refusals",
            unit="{call}",
            description="Insurability calls refused because their requester is excluded",
        )
        meter.create_observable_gauge(
            "mycarenet.abuse.excluded",
            callbacks=[lambda _options: [metrics.Observation(len(self.excluded(self.clock.now())))]],
            unit="{provider}",
            description="Providers excluded from the insurability services (at the last check)",
        )

    # --- start ----------------------------------------------------------------------------------------

    async def load(self) -> int:
        """Fill the in-memory view with the strikes that can still matter (the repeat days, the exclusions
        not yet over); the number of strikes loaded."""
        now = self.clock.now()
        since = now - dt.timedelta(days=self.config.repeat_days)
        async with self.sessions() as session:
            rows = (
                await session.execute(
                    select(AbuseStrike).where(
                        (col(AbuseStrike.detected_at) >= since) | (col(AbuseStrike.excluded_until) > now)
                    )
                )
            ).scalars()
            strikes = [_strike_of(row) for row in rows]
        self._providers.clear()
        for strike in strikes:
            self._apply(strike)
        return len(strikes)

    # --- the hot path ---------------------------------------------------------------------------------

    def admit(self, provider: str, now: dt.datetime) -> None:
        """Refuse an excluded provider (PERMISSION_DENIED SYSTEMATIC_CONSULTATION_EXCLUDED): one look-up."""
        state = self._providers.get(provider)
        if state is None or state.until is None or state.until <= now:
            return
        self._refusals.add(1)
        until = state.until.astimezone(dt.UTC)
        raise permission_denied(
            EXCLUDED_REASON,
            f"excluded from the insurability services until {until.isoformat()} for systematic "
            "consultation (a repeat within 365 days of a warning; see the usage notices in your mailbox)",
        ).with_metadata(excluded_until=until.isoformat())

    async def consulted(self, provider: str, patient: str, now: dt.datetime) -> Strike | None:
        """Count ``patient`` in the provider's window; past the threshold, a finding (the strike)."""
        window = self._windows.get(provider)
        if window is None:
            window = self._windows[provider] = DistinctWindow(self.config.window)
            if len(self._windows) > self.config.max_tracked_providers:
                self._forget_idle(now)
        else:
            self._windows.move_to_end(provider)
        count = window.see(patient, now)
        if count <= self.config.max_distinct_patients:
            return None
        start = window.first() or now
        # The provider's window starts afresh at once (a call crossing the threshold meanwhile must not find
        # it again); if the finding cannot be recorded, the window is put back for the next call.
        del self._windows[provider]
        notice = dmg_pb2.UsageNotice(
            finding=dmg_pb2.USAGE_FINDING_DISTINCT_PATIENTS,
            period_start=_ts(start),
            period_end=_ts(now),
            consultation_count=count,
            distinct_patients=count,
            rule=self.config.rule(),
        )
        message_id = f"hub:usage:{uuid.uuid4()}"
        try:
            return await self._record_own(provider, message_id, notice, now)
        except BaseException:
            self._windows.setdefault(provider, window)
            raise

    # --- findings ---------------------------------------------------------------------------------------

    async def _record_own(
        self, provider: str, message_id: str, notice: dmg_pb2.UsageNotice, now: dt.datetime
    ) -> Strike:
        message = dmg_pb2.MailboxMessage(
            message_id=message_id,
            kind=dmg_pb2.MESSAGE_KIND_USAGE_NOTICE,
            recipient_inami=provider,
            created_time=_ts(now),
            usage_notice=notice,
        )
        async with self._lock:
            finding = self._decide(message, "", now)
            async with transaction(self.sessions) as session:
                session.add(_row_of(finding))
                await MailboxRepository(session).store([finding.message], now)
            self._committed([finding])
        self.notifier.notify([provider])
        return finding.strike

    @contextlib.asynccontextmanager
    async def findings_of(
        self, code: str, messages: Sequence[dmg_pb2.MailboxMessage], now: dt.datetime
    ) -> AsyncIterator[_Intake]:
        """Around the transaction of a delivery from insurer ``code``: its USAGE_NOTICE messages become
        strikes (:meth:`_Intake.record`, in that transaction), applied to the registry once it committed.
        Deliveries without a notice take no lock."""
        notices = [m for m in messages if m.kind == dmg_pb2.MESSAGE_KIND_USAGE_NOTICE]
        intake = _Intake(self, code, notices, now)
        if not notices:
            yield intake
            return
        async with self._lock:
            yield intake
            self._committed(intake.recorded)

    def _decide(self, message: dmg_pb2.MailboxMessage, code: str, now: dt.datetime) -> _Finding:
        """The consequence of a finding (in the message's notice), under the lock."""
        notice = message.usage_notice
        provider = message.recipient_inami
        state = self._providers.get(provider)
        decision = consequence_of(
            state.strikes if state else (),
            now,
            repeat_days=self.config.repeat_days,
            exclusion=self.config.exclusion,
        )
        notice.consequence = CONSEQUENCE_PROTO[decision.consequence]
        notice.ClearField("excluded_until")
        if decision.excluded_until is not None:
            notice.excluded_until.CopyFrom(_ts(decision.excluded_until))
        notice.repeats_notice_id = decision.repeats.notice_id if decision.repeats else ""
        message.content_hash = ""  # the hub's filled-in notice: its hash is computed when stored
        strike = Strike(
            notice_id=message.message_id,
            provider=provider,
            finding=FINDING_NAMES.get(notice.finding, "UNSPECIFIED"),
            detected_at=now,
            consequence=decision.consequence,
            excluded_until=decision.excluded_until,
        )
        return _Finding(strike, f"{code or 'hub'}:{message.message_id}", message, code)

    def _committed(self, findings: Iterable[_Finding]) -> None:
        for finding in findings:
            self._apply(finding.strike)
            strike = finding.strike
            self._findings.add(1, {"finding": strike.finding, "consequence": strike.consequence.value})
            log.warning(
                "usage finding %s against %s: %s%s",
                strike.finding,
                strike.provider,
                strike.consequence.value,
                f" until {strike.excluded_until.isoformat()}" if strike.excluded_until else "",
            )

    def _apply(self, strike: Strike) -> None:
        state = self._providers.setdefault(strike.provider, _Provider())
        if any(s.notice_id == strike.notice_id for s in state.strikes):
            return
        horizon = strike.detected_at - dt.timedelta(days=self.config.repeat_days)
        kept = [s for s in state.strikes if s.detected_at >= horizon or s.excluded_until == state.until]
        state.strikes = [*kept, strike]
        if strike.excluded_until is not None and (state.until is None or strike.excluded_until > state.until):
            state.until = strike.excluded_until

    # --- what the operator and the tests see ----------------------------------------------------------

    def excluded(self, now: dt.datetime) -> dict[str, dt.datetime]:
        """Providers excluded at ``now`` and until when."""
        out = {p: s.until for p, s in self._providers.items() if s.until is not None and s.until > now}
        return out

    def strikes(self, provider: str) -> list[Strike]:
        state = self._providers.get(provider)
        return list(state.strikes) if state else []

    def _forget_idle(self, now: dt.datetime) -> None:
        """Drop the windows that are empty at ``now`` (oldest first), keeping at most the bound."""
        for provider in list(self._windows):
            if len(self._windows) <= self.config.max_tracked_providers // 2:
                break
            if self._windows[provider].count(now) == 0:
                del self._windows[provider]
        while len(self._windows) > self.config.max_tracked_providers:
            self._windows.popitem(last=False)


class _Intake:
    """The USAGE_NOTICE messages of one delivery, turned into strikes in its transaction."""

    def __init__(
        self, control: AbuseControl, code: str, notices: list[dmg_pb2.MailboxMessage], now: dt.datetime
    ) -> None:
        self.control = control
        self.code = code
        self.notices = notices
        self.now = now
        self.recorded: list[_Finding] = []

    async def record(self, session: AsyncSession) -> None:
        """A strike for each notice not recorded before (by insurer and message id: a redelivery counts
        once, and the stored notice keeps the consequence decided the first time); the notices get their
        consequence filled in before the mailbox stores them."""
        if not self.notices:
            return
        keys = [f"{self.code}:{m.message_id}" for m in self.notices]
        known = set(
            (
                await session.execute(
                    select(col(AbuseStrike.source_key)).where(col(AbuseStrike.source_key).in_(keys))
                )
            ).scalars()
        )
        for message in self.notices:
            key = f"{self.code}:{message.message_id}"
            if key in known or message.WhichOneof("payload") != "usage_notice":
                continue  # a redelivery, or a notice without its payload (stored as it came, no strike)
            known.add(key)
            finding = self.control._decide(message, self.code, self.now)
            session.add(_row_of(finding))
            self.recorded.append(finding)
        await session.flush()


def _row_of(finding: _Finding) -> AbuseStrike:
    strike, notice = finding.strike, finding.message.usage_notice
    return AbuseStrike(
        notice_id=strike.notice_id,
        source_key=finding.source_key,
        insurer_code=finding.insurer_code,
        provider_inami=strike.provider,
        finding=strike.finding,
        consequence=strike.consequence.value,
        detected_at=strike.detected_at,
        excluded_until=strike.excluded_until,
        repeats_notice_id=notice.repeats_notice_id,
        consultation_count=notice.consultation_count,
        distinct_patients=notice.distinct_patients,
        unfollowed_count=notice.unfollowed_count,
        rule=notice.rule[:MAX_RULE],
    )


def _strike_of(row: AbuseStrike) -> Strike:
    return Strike(
        notice_id=row.notice_id,
        provider=row.provider_inami,
        finding=row.finding,
        detected_at=_aware(row.detected_at),
        consequence=Consequence(row.consequence),
        excluded_until=_aware(row.excluded_until) if row.excluded_until else None,
    )


def _aware(value: dt.datetime) -> dt.datetime:
    """SQLite gives naive instants back (stored in UTC)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value.astimezone(dt.UTC))
    return out


__all__ = [
    "EXCLUDED_REASON",
    "AbuseConfig",
    "AbuseControl",
    "Consequence",
    "Decision",
    "DistinctWindow",
    "Strike",
    "consequence_of",
    "excluded_until",
]
