"""The check after payment (seed 000 §1.3.1, §3.2.2, §3.3.1): a notification's fee is paid at once, and the
contact it names is checked afterwards ("le contrôle de la présence d'une prestation ... sera réalisé à
postériori"): that contact must reach the insurer through invoicing (eFact, eAttest or the back office's
intake) for that physician, that patient, that date. A fee whose contact has not come within the insurer's
period (:attr:`oa_node.settings.OaSettings.unbilled_contact_months`) is recovered, and its beneficiary is told
in the mailbox (``MESSAGE_KIND_FEE_RECOVERY``).

The rule is a pure function of the patient's file and the date (:func:`unbilled_notification_fees`); the job
(:class:`FeeChecks`) runs it for every patient with a notification fee old enough, one transaction per
patient (the lock, the file, the rule, the recovered payment and its message in the outbox). Running it
again is harmless: a recovered fee is no longer a candidate. It runs at the node's start, when the sandbox's
test clock moves, and at each mesh midnight.

*Decisions* (the seeds give no period, no message, and say nothing of the right): the period is an insurer's
setting in months after the end of the contact's month, 24 by default: the provider's own time to bill a
service under Belgian law (two years from the end of the month of the service, art. 174 of the coordinated
law of 14 July 1994; outside the seeds, so labelled illustrative here); the DMG right the notification
opened stays (only the fee is recovered); a contact registered after the recovery does not pay it again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from dataclasses import dataclass, replace

from google.protobuf import timestamp_pb2
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from mycarenet_core import dates
from mycarenet_core.clock import Clock
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from oa_node import convert, rules
from oa_node import models as m
from oa_node.audit import AuditTrail
from oa_node.feeds import Wakeup
from oa_node.repositories import (
    DmgFileRepository,
    MemberRepository,
    OutboxRepository,
    ReferenceRepository,
    outbox_row,
)

log = logging.getLogger(__name__)

DEFAULT_PERIOD_MONTHS = 24
"""Illustrative (the seeds say the check comes afterwards, not when): the statutory two years to bill a
service, from the end of its month."""
REASON = "the notified contact did not reach the insurer through invoicing by {deadline}"


def billing_deadline(contact: dt.date, months: int) -> dt.date:
    """The last day to invoice a contact: the end of the month ``months`` after the contact's month."""
    index = contact.year * 12 + contact.month - 1 + months + 1  # the month after the deadline's
    return dt.date(index // 12, index % 12 + 1, 1) - dt.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Recovery:
    """One notification fee recovered, with the notification it paid (when the file still names it)."""

    payment: rules.Payment
    notification: rules.Notification | None


def unbilled_notification_fees(
    file: rules.DmgFile, *, today: dt.date, months: int
) -> tuple[rules.DmgFile, tuple[Recovery, ...]]:
    """The file with every notification fee recovered whose contact was not invoiced by its
    :func:`billing_deadline` (``today`` is after it), and those recoveries. A contact counts when it was
    registered for that patient, on the fee's contact date, by the holder paid or the physician who notified
    (a GP in training for his supervisor)."""
    found: list[Recovery] = []
    payments = list(file.payments)
    for i, payment in enumerate(payments):
        if payment.kind is not rules.PaymentKind.NOTIFICATION or payment.recovered:
            continue
        if today <= billing_deadline(payment.contact_date, months):
            continue
        notification = next(
            (
                n
                for n in file.notifications
                if n.holder == payment.beneficiary and n.contact_date == payment.contact_date
            ),
            None,
        )
        physicians = {payment.beneficiary} | ({notification.provider} if notification else set())
        if any(c.contact_date == payment.contact_date and c.provider in physicians for c in file.contacts):
            continue
        recovered = replace(payment, recovered=True, recovered_on=today, recovered_for=None)
        payments[i] = recovered
        found.append(Recovery(recovered, notification))
    if not found:
        return file, ()
    return replace(file, payments=tuple(payments)), tuple(found)


class FeeChecks:
    """The periodic check after payment of one insurer node."""

    def __init__(
        self,
        *,
        insurer_code: str,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        audit: AuditTrail,
        outbox: Wakeup,
        period_months: int = DEFAULT_PERIOD_MONTHS,
    ) -> None:
        self.insurer_code = insurer_code
        self._sessions = sessions
        self._clock = clock
        self._audit = audit
        self._outbox = outbox
        self.months = period_months
        self._running = asyncio.Lock()
        self.ran = asyncio.Event()

    async def candidates(self, today: dt.date) -> list[str]:
        """Patients with an unrecovered notification fee whose contact may be past its deadline (a month has
        at least 28 days: a superset, the rule decides)."""
        payment = m.PaymentRow
        async with self._sessions() as session:
            rows = await session.execute(
                select(col(payment.patient))
                .where(
                    col(payment.kind) == rules.PaymentKind.NOTIFICATION.value,
                    col(payment.recovered).is_(False),
                    col(payment.contact_date) < today - dt.timedelta(days=28 * self.months),
                )
                .distinct()
                .order_by(col(payment.patient))
            )
        return list(rows.scalars())

    async def run_once(self) -> int:
        """Check every candidate on the mesh date; the number of fees recovered."""
        async with self._running:
            today = self._clock.today()
            recovered = 0
            for niss in await self.candidates(today):
                recovered += await self._check(niss, today)
            self.ran.set()
            return recovered

    async def _check(self, niss: str, today: dt.date) -> int:
        fields = {"patient_niss": niss, "peer": "fee check"}
        async with (
            self._audit.call("CheckAfterPayment", fields) as entry,
            self._audit.transaction(entry) as session,
        ):
            member = await MemberRepository(session).get(niss)
            files = DmgFileRepository(session)
            if member is None or not await files.lock(niss):
                return 0
            loaded = await files.load(niss)
            after, found = unbilled_notification_fees(loaded.file, today=today, months=self.months)
            if not found:
                return 0
            await files.save(loaded, after)
            reference = ReferenceRepository(session)
            wanted = [r.payment.beneficiary for r in found]
            names = convert.names_of(await reference.providers(wanted), await reference.organisations(wanted))
            now = self._clock.now()
            patient = convert.patient(member)
            rows = [self._message(r, patient, names, today, now) for r in found]
            await OutboxRepository(session).add(rows)
            entry.incidents.append(f"{len(found)} notification fees recovered")
        self._outbox.set()
        log.info("check after payment: %s: %d fees recovered", niss, len(found))
        return len(found)

    def _message(
        self,
        recovery: Recovery,
        patient: common_pb2.Patient,
        names: convert.Names,
        today: dt.date,
        now: dt.datetime,
    ) -> dict[str, object]:
        payment = recovery.payment
        notification = recovery.notification
        payload = dmg_pb2.FeeRecovery(
            patient=patient,
            payment=convert.payment(payment, names),
            contact_date=dates.to_proto(payment.contact_date),
            notification_reference=notification.requester_reference if notification else "",
            recovery_date=dates.to_proto(today),
            reason=REASON.format(deadline=billing_deadline(payment.contact_date, self.months).isoformat()),
        )
        created = timestamp_pb2.Timestamp()
        created.FromDatetime(now.astimezone(dt.UTC))
        message = dmg_pb2.MailboxMessage(
            message_id=f"{self.insurer_code}-recovery-{payment.reference}",
            kind=dmg_pb2.MESSAGE_KIND_FEE_RECOVERY,
            insurer_code=self.insurer_code,
            recipient_inami=payment.beneficiary,
            requester_reference=payload.notification_reference,
            created_time=created,
            fee_recovery=payload,
            content_hash=hashlib.sha256(payload.SerializeToString(deterministic=True)).hexdigest(),
        )
        return outbox_row(message, now)


__all__ = ["DEFAULT_PERIOD_MONTHS", "FeeChecks", "Recovery", "billing_deadline", "unbilled_notification_fees"]
