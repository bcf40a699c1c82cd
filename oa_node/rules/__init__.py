"""Pure DMG business rules of an insurer (OA) node: who holds a patient's DMG, and who is paid for it.

No I/O, no clock, no gRPC, no database: every entry point takes the patient's
:class:`~oa_node.rules.model.DmgFile`, the call's data, an explicit processing date and a
:class:`~oa_node.rules.context.RuleContext`, and returns a :class:`~oa_node.rules.model.Decision`
(new file + effects) or raises :class:`~oa_node.rules.errors.DmgRuleError` (nothing changed).

Modules: ``model`` (rows and effects), ``context`` (tariffs, codes, enrolments, groups, patient),
``errors``, ``timeline`` (one holder at a time), ``payments`` (one fee a year, cohabitation),
``engine`` (the entry points), ``testing`` (renderers and INAMI numbers for tests).

Where SPEC.md and the seeds disagree or are silent (the seed wins; choices are marked *decision*)
-------------------------------------------------------------------------------------------------

1. Notify indicator (SPEC §3.2 "WITH_PAYMENT iff no DMG was paid to anyone this year"): an
   administrative prolongation already paid for the year does not count, because a notification has
   priority over it and recovers it (seed 000 §5.1 second bullet, seed 002 last paragraph).
2. Administrative prolongation "for year t" is paid in year t as soon as its conditions are met, at the
   paper holder's contact of t (seed 002: a contact in t, no 102771 in t by the holder nor by another
   physician, no notification; issue 14). Its conditions cover the whole year (seed 000 §5.1: "pas de
   prolongation administrative si attestation ou notification faite la même année"), so a 102771 or a
   notification of t arriving later recovers it (seed 000 §5.1 "priorité", seed 002 "devrait être
   récupéré"). A year-end run (:func:`process_year_end`) pays what the contacts could not (a 102771 of
   t-1 handed in after the contact of t: paper arrives late, seed 000 §1.1.3).
3. Seed 002's own example is inconsistent with its rule: 102771 in 2011 then administrative
   prolongations for 2012 and 2013 gives "31 décembre 2014", whereas the rule ("fin de la deuxième
   année civile qui suit l'année ... pour laquelle le DMG a été prolongé") gives 31.12.2015. We follow
   the rule: every opening/prolongation for year t grants a right to 31 Dec t+2.
4. "The holder held the DMG in t-1" (SPEC §3.3) is read with seed 000 §1.3.1 ("avait un DMG pour
   ce patient l'année précédente"): the holding in force (or expired) at the contact date started by
   31.12.t-1 and ran through that day. The contact must fall within that holder's time, so in
   §5.2.1.2.2 M1's contact of 01.07.2012, registered after M2's takeover, still pays M1.
5. Cohabitation by "first contact of the year" (seed 000 §5.1) applies between every two fees of a
   year, whatever their order of arrival: a notification whose contact is earlier than that of a
   prolongation already paid is paid and recovers it (seed 000 §5.1, issue 14 correction 7; SPEC §3.2's
   "WITH_PAYMENT iff no DMG was paid this year" yields to the seed); two paper 102771 of one year keep
   the legacy rule "first accepted wins" (seed 000 §5 intro: the paper-paper case is unchanged).
6. Rights after a cohabitation conflict (seed 000 §5.2 tables): an eDMG holder keeps the right of his
   notification (5.2.1.2.2, 5.2.3.1.2); a paper right follows its payment, so a recovered 102771
   cancels its holding and reopens the predecessor (5.2.2.2.2). A paid prolongation is always told to its
   holder by a GMD-EXTENSION (seed 000 §3.3.6.1.2), also when his holding stays closed (5.2.1.2.2 "les
   droits restent tels quels": the message gives the right as it stays).
7. *decision*: a GMD-CLOSURE is also posted when an accepted 102771 takes the DMG over from an
   enrolled holder (seed 000 §3.3.5 says the OAs "could"; ``RuleContext.closure_on_paper_takeover``).
8. *decision*: a 102771 attested by an enrolled GP is refused (seed 000 §3.1.1: enrolment commits
   to the electronic procedure, no paper in parallel); refusals are recorded outcomes, not errors.
9. *decision*: for a GP in training the *supervisor* must be enrolled and becomes the holder (SPEC
   §9); the holding records the trainee (``Holding.trainee``), since the supervisor is the holder.
   The supervisor named must be the one the cadastre records for the trainee
   (``RuleContext.supervisor_of``), else 156: a trainee cannot make any enrolled GP holder.
10. *decision* (outside the seeds): a patient under a medical-house contract: GP notifications are
    rejected with 162, the medical house itself may notify and hold the DMG, with no separate DMG fee
    (the house's flat fee covers it); contacts and 102771 on such dates have no DMG effect.
11. *decision*: the fee category (55 EUR, seed 002) uses the patient's age and chronic status (held by
    period) on the contact date the fee corresponds to; the category exists from 2016 on, and its 2016
    fees are paid from 1 July 2016 (seed 002).
12. *decision*: 165 ("duplicate contact date") rejects a notification whose contact date is on or
    before the start of another live holding (a right cannot be inserted before a newer holder), and
    an already registered contact (same provider, date, code) or 102771 (same provider, date).
13. *decision*: a fee keeps pointing at its holder's first contact of the year: when an earlier
    contact of the same holder is registered after the fee, the fee's ``contact_date`` moves back
    (the row is updated in the returned file; it is not listed among the Decision's effects).
14. *decision*: a notification's fee is for the contact's year (a contact of 30 Dec notified on 2 Jan
    belongs to the old year), and a rejected call (DmgRuleError) never records anything, whereas a
    refused 102771 is recorded with its outcome (it is information the OA received).
"""

from .context import (
    DEFAULT_CONTACT_CODES,
    DEFAULT_TARIFFS,
    PAPER_DMG_CODE,
    MedicalHouseContract,
    PatientProfile,
    RuleContext,
    TariffMissingError,
    TariffTable,
    is_accredited_gp,
    is_gp_in_training,
    tariff_source,
)
from .engine import notify, process_year_end, register_contact, register_paper_attestation
from .errors import DmgRuleError
from .model import (
    AttestationOutcome,
    ClosureMessage,
    Contact,
    Decision,
    DmgFile,
    ExtensionMessage,
    HolderMove,
    Holding,
    HoldingStatus,
    Message,
    Notification,
    NotifyAnswer,
    PaperAttestation,
    Payee,
    Payment,
    PaymentIndicator,
    PaymentKind,
    Procedure,
    RefusalReason,
    StatusReason,
    TariffCategory,
)

__all__ = [
    "DEFAULT_CONTACT_CODES",
    "DEFAULT_TARIFFS",
    "PAPER_DMG_CODE",
    "AttestationOutcome",
    "ClosureMessage",
    "Contact",
    "Decision",
    "DmgFile",
    "DmgRuleError",
    "ExtensionMessage",
    "HolderMove",
    "Holding",
    "HoldingStatus",
    "MedicalHouseContract",
    "Message",
    "Notification",
    "NotifyAnswer",
    "PaperAttestation",
    "PatientProfile",
    "Payee",
    "Payment",
    "PaymentIndicator",
    "PaymentKind",
    "Procedure",
    "RefusalReason",
    "RuleContext",
    "StatusReason",
    "TariffCategory",
    "TariffMissingError",
    "TariffTable",
    "is_accredited_gp",
    "is_gp_in_training",
    "notify",
    "process_year_end",
    "register_contact",
    "register_paper_attestation",
    "tariff_source",
]
