"""The a-posteriori purpose check of the insurability consultations (seed 003 §7.3: "les organismes assureurs
procéderont également à des contrôles a posteriori pour comparer l'usage des services MyCareNet avec leur
finalité (prestations facturées par rapport aux requêtes d'assurabilité)"; seed 001 annex 2: the provider
"s'engage à effectivement attester des soins remboursables pour les patients pour qui il/elle a sollicité les
données").

The consultations are those this insurer answered (GetMemberData, ConsultRights), read from its own durable
audit (``oa_audit``: requester of record, role, patient, time; a row of an answered request is never lost);
one consultation per provider, patient and day (a patient asked twice at one contact is one consultation).
The billed services are the contacts the insurer registered for that provider and patient (``oa_contact``:
the back office's intake, eFact and eAttest). A consultation is *followed* when a service of the same
provider for the same patient lies within ``delay_days`` of it, on either side (a pharmacist may consult for
a past dispensing date).

Periods of ``period_days`` (aligned on the day number, the same for every node) are checked once each, when
the delay after their end has passed (a period without consultations leaves no trace). A provider whose
consultations in the period number at least ``min_consultations`` and are unfollowed for more than
``max_unfollowed_share`` gets a finding: a USAGE_NOTICE without a consequence in the outbox, in the
transaction that records the period as checked; the relay delivers it to the hub, which decides the
consequence (hub/abuse.py). The message id names the provider and the period, so a rerun never finds it
twice.

Only the roles whose billed services the insurer sees are checked (:data:`PHYSICIANS`, the job's
``roles``): the pharmacists' tarification lines are not recorded line by line yet (only the rejected ones),
so a pharmacy would be found "unfollowed" for every dispensing. The thresholds are illustrative (the seeds
give none).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from google.protobuf import timestamp_pb2
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from mycarenet_core.clock import Clock
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from oa_node import models as m
from oa_node.audit import AuditTrail
from oa_node.feeds import Wakeup
from oa_node.repositories import OutboxRepository, outbox_row

log = logging.getLogger(__name__)

CONSULTATION_RPCS = ("GetMemberData", "ConsultRights")
PHYSICIANS = (
    common_pb2.PROVIDER_ROLE_GENERAL_PRACTITIONER,
    common_pb2.PROVIDER_ROLE_GP_IN_TRAINING,
    common_pb2.PROVIDER_ROLE_GP_NON_ACCREDITED,
    common_pb2.PROVIDER_ROLE_PHYSICIAN_NO_COMPETENCE,
    common_pb2.PROVIDER_ROLE_SPECIALIST,
)


# --- the pure rule -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Use:
    """A consultation or a billed service: who, for whom, which day."""

    provider: str
    niss: str
    day: dt.date


@dataclass(frozen=True, slots=True)
class ProviderUse:
    """One provider's consultations in a period and how many were never followed by a billed service."""

    provider: str
    consultations: int
    distinct_patients: int
    unfollowed: int

    @property
    def unfollowed_share(self) -> float:
        return self.unfollowed / self.consultations if self.consultations else 0.0


@dataclass(frozen=True)
class PurposeRule:
    """The thresholds of the purpose check (oa settings ``MCN_OA_PURPOSE_*``; illustrative)."""

    period_days: int = 30
    delay_days: int = 30
    min_consultations: int = 20
    max_unfollowed_share: float = 0.5

    def describe(self) -> str:
        return (
            f"more than {self.max_unfollowed_share:.0%} of at least {self.min_consultations} consultations "
            f"in {self.period_days} days never followed by a billed service within {self.delay_days} days"
        )

    def period_of(self, day: dt.date) -> tuple[dt.date, dt.date]:
        """The period holding ``day``: [start, end) of ``period_days`` aligned on the day number."""
        start = (day.toordinal() // self.period_days) * self.period_days
        return dt.date.fromordinal(start), dt.date.fromordinal(start + self.period_days)

    def last_checkable(self, today: dt.date) -> tuple[dt.date, dt.date] | None:
        """The latest period whose delay has passed on ``today`` (its end + the delay ≤ today)."""
        start, _end = self.period_of(today - dt.timedelta(days=self.delay_days))
        previous = start - dt.timedelta(days=self.period_days)
        return (previous, start) if previous.toordinal() > 0 else None

    def flagged(self, use: ProviderUse) -> bool:
        return (
            use.consultations >= self.min_consultations and use.unfollowed_share > self.max_unfollowed_share
        )


def provider_uses(
    consultations: Iterable[Use], services: Iterable[Use], *, delay_days: int
) -> list[ProviderUse]:
    """Per provider: its consultations (one per patient and day), distinct patients, and those with no
    billed service of the same provider for the same patient within ``delay_days`` of the day."""
    billed: dict[tuple[str, str], list[dt.date]] = defaultdict(list)
    for service in services:
        billed[(service.provider, service.niss)].append(service.day)
    delay = dt.timedelta(days=delay_days)
    per_provider: dict[str, set[Use]] = defaultdict(set)
    for use in consultations:
        per_provider[use.provider].add(use)
    out = []
    for provider, uses in sorted(per_provider.items()):
        unfollowed = sum(
            1
            for u in uses
            if not any(abs(day - u.day) <= delay for day in billed.get((provider, u.niss), ()))
        )
        out.append(ProviderUse(provider, len(uses), len({u.niss for u in uses}), unfollowed))
    return out


def findings(consultations: Iterable[Use], services: Iterable[Use], rule: PurposeRule) -> list[ProviderUse]:
    """The providers the purpose check finds against over one period's consultations."""
    return [u for u in provider_uses(consultations, services, delay_days=rule.delay_days) if rule.flagged(u)]


# --- the job -----------------------------------------------------------------------------------------------


class PurposeChecks:
    """The periodic purpose check of one insurer node."""

    def __init__(
        self,
        *,
        insurer_code: str,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        audit: AuditTrail,
        outbox: Wakeup,
        rule: PurposeRule | None = None,
        roles: Sequence[int] = PHYSICIANS,
        lookback_days: int = 365,
    ) -> None:
        self.insurer_code = insurer_code
        self._sessions = sessions
        self._clock = clock
        self._audit = audit
        self._outbox = outbox
        self.rule = rule or PurposeRule()
        self.roles = tuple(roles)
        self.lookback = dt.timedelta(days=lookback_days)
        self._running = asyncio.Lock()

    async def run_once(self) -> int:
        """Check every period due on the mesh date and not checked yet (within the look-back); the number of
        findings."""
        async with self._running:
            today = self._clock.today()
            last = self.rule.last_checkable(today)
            if last is None:
                return 0
            step = dt.timedelta(days=self.rule.period_days)
            starts = []
            start = last[0]
            while start >= today - self.lookback and start.toordinal() > self.rule.period_days:
                starts.append(start)
                start -= step
            async with self._sessions() as session:
                checked = set(
                    (
                        await session.execute(
                            select(col(m.PurposeCheckRow.period_start)).where(
                                col(m.PurposeCheckRow.period_start).in_(starts)
                            )
                        )
                    ).scalars()
                )
            found = 0
            for start in sorted(set(starts) - checked):
                found += await self._check(start, start + step)
            return found

    async def _check(self, start: dt.date, end: dt.date) -> int:
        rule = self.rule
        async with self._sessions() as session:
            if not await self._consultations(session, start, end):
                return 0  # nothing to check: no row, no audit (looked at again next time, one indexed read)
        fields = {"peer": "purpose check"}
        async with (
            self._audit.call("CheckPurpose", fields) as entry,
            self._audit.transaction(entry) as session,
        ):
            if await session.get(m.PurposeCheckRow, start) is not None:
                return 0  # checked meanwhile
            consultations = await self._consultations(session, start, end)
            services = await self._services(session, start, end)
            found = findings(consultations, services, rule)
            now = self._clock.now()
            await OutboxRepository(session).add([self._message(use, start, end, now) for use in found])
            session.add(
                m.PurposeCheckRow(
                    period_start=start,
                    period_end=end,
                    checked_at=now,
                    consultations=len({(u.provider, u.niss, u.day) for u in consultations}),
                    findings=len(found),
                )
            )
            entry.incidents.append(f"period {start}..{end}: {len(found)} findings")
        if found:
            self._outbox.set()
            log.warning("purpose check %s..%s: findings against %s", start, end, [u.provider for u in found])
        return len(found)

    async def _consultations(self, session: AsyncSession, start: dt.date, end: dt.date) -> list[Use]:
        audit = m.AuditRecord
        since = dt.datetime.combine(start, dt.time(), tzinfo=dt.UTC)
        until = dt.datetime.combine(end, dt.time(), tzinfo=dt.UTC)
        rows = await session.execute(
            select(
                col(audit.requester_inami), col(audit.patient_niss), col(audit.at), col(audit.requester_role)
            ).where(
                col(audit.rpc).in_(CONSULTATION_RPCS),
                col(audit.outcome) == "OK",
                col(audit.at) >= since,
                col(audit.at) < until,
                col(audit.patient_niss) != "",
                col(audit.requester_role).in_(self.roles),
            )
        )
        return [Use(provider, niss, _utc(at).date()) for provider, niss, at, _role in rows.all() if provider]

    async def _services(self, session: AsyncSession, start: dt.date, end: dt.date) -> list[Use]:
        contact = m.ContactRow
        delay = dt.timedelta(days=self.rule.delay_days)
        rows = await session.execute(
            select(col(contact.provider), col(contact.niss), col(contact.contact_date)).where(
                col(contact.contact_date) >= start - delay,
                col(contact.contact_date) < end + delay,
            )
        )
        return [Use(provider, niss, day) for provider, niss, day in rows.all()]

    def _message(self, use: ProviderUse, start: dt.date, end: dt.date, now: dt.datetime) -> dict[str, object]:
        notice = dmg_pb2.UsageNotice(
            finding=dmg_pb2.USAGE_FINDING_UNFOLLOWED_CONSULTATIONS,
            period_start=_ts(dt.datetime.combine(start, dt.time(), tzinfo=dt.UTC)),
            period_end=_ts(dt.datetime.combine(end, dt.time(), tzinfo=dt.UTC)),
            consultation_count=use.consultations,
            distinct_patients=use.distinct_patients,
            unfollowed_count=use.unfollowed,
            rule=self.rule.describe()[:300],
        )
        message = dmg_pb2.MailboxMessage(
            message_id=f"{self.insurer_code}-usage-{use.provider}-{start.isoformat()}",
            kind=dmg_pb2.MESSAGE_KIND_USAGE_NOTICE,
            insurer_code=self.insurer_code,
            recipient_inami=use.provider,
            created_time=_ts(now),
            usage_notice=notice,
        )
        return outbox_row(message, now)


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value.astimezone(dt.UTC))
    return out


__all__ = ["PHYSICIANS", "ProviderUse", "PurposeChecks", "PurposeRule", "Use", "findings", "provider_uses"]
