"""Playing a scenario against a running mesh: its own providers and patients, then each step, compared with
what the file expects.

Everything the story needs is made fresh through the administrator's client: a new INAMI number and key per
actor, a new NISS per patient (with the story's birth date, shifted), the therapeutic relation of every actor
with every patient, the enrolments. Nothing of the seeded population or of another story is touched, so
stories can follow one another on one cluster. Steps are played on their dates shifted by whole years
(:mod:`mycarenet_scenario.timeshift`), the mesh clock moved forward before a step whose date is later than
the mesh's today; what the mesh answers is shifted back, so that the report reads like the file.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from mycarenet_sdk.admin import AdminClient
from mycarenet_sdk.client import Client, MyCareNetError, new_reference

from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import intake_service_pb2
from mycarenet_core.identifiers import Profession, make_inami, make_niss
from mycarenet_scenario.loader import LoadedScenario, play_date
from mycarenet_scenario.model import (
    Clock,
    Consult,
    Contact,
    Expect,
    HoldingExpect,
    ListEntryExpect,
    ListRequest,
    Mailbox,
    MessageExpect,
    Notify,
    Paper,
    PaymentExpect,
    Period,
    Scenario,
    Step,
)
from mycarenet_scenario.timeshift import choose_shift, same_calendar, shift_date, story_years

SHOWN_ERRORS = ("error", "error_message")
COMPETENCES = {"gp": "003", "gp_in_training": "005", "specialist": "580", "dentist": "001"}
BANK = {"iban": "BE68539007547034", "bic": "GEBABEBB"}
# Fresh identifiers are drawn where the seeded population never goes: INAMI sequences 80000..99999 (the
# population counts up from 10000, the in-process mesh from 70000), NISS sequences 833..998 (the population
# uses 1..832).
INAMI_SEQUENCES = (80_000, 99_999)
NISS_SEQUENCES = (833, 998)


class ClockState(Protocol):
    @property
    def today(self) -> dt.date: ...


class MeshClock(Protocol):
    """The sandbox's test clock (``AdminClient.clock`` / ``set_clock`` / ``advance_clock``)."""

    async def clock(self) -> ClockState: ...

    async def set_clock(self, day: dt.date) -> ClockState: ...

    async def advance_clock(self, days: int) -> ClockState: ...


@dataclass
class MeshAccess:
    """What a scenario is played with: the administrator's client, the mesh clock, provider-software
    clients and each insurer's invoicing intake (the back office's certificate)."""

    admin: AdminClient
    clock: MeshClock
    new_client: Callable[[], Client]
    intake: Mapping[str, Any]  # insurer code -> InvoicingIntakeServiceStub
    wait_seconds: float = 30.0  # for what the mesh does asynchronously (routing, mailbox)
    tariff_years: Callable[[], Awaitable[set[int]]] | None = None  # the years the insurers have a fee for


@dataclass
class StepResult:
    index: int
    line: int
    title: str
    action: str
    status: str  # passed, failed, xfail (a known gap that failed), xpass (a known gap that passed)
    played_on: dt.date | None  # in the file's dates
    expected: dict[str, Any]
    actual: dict[str, Any]
    differences: list[str]
    known_gap: str | None
    seconds: float

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "xpass")


@dataclass
class StoryResult:
    path: str
    story: str
    title: str
    shift_years: int = 0
    steps: list[StepResult] = field(default_factory=list)
    error: str | None = None  # the story could not be set up or played further
    seconds: float = 0.0
    identities: dict[str, str] = field(default_factory=dict)  # label -> INAMI or NISS

    @property
    def failed(self) -> bool:
        return self.error is not None or any(s.failed for s in self.steps)


class StoryError(Exception):
    """The story cannot go on (setup failed, the clock refused)."""


# --- rendering: one text per value, in the file's dates ----------------------------------------------------


def fmt_date(day: dt.date | None) -> str:
    return "—" if day is None else f"{day:%d.%m.%Y}"


def fmt_period(start: dt.date | None, end: dt.date | None) -> str:
    return f"{fmt_date(start)}..{fmt_date(end)}"


def fmt_payment(to: str | None, year: int, kind: str, recovered: bool, amount: Decimal | None) -> str:
    text = f"{to + ' ' if to else ''}{year} {kind}" + (" recovered" if recovered else "")
    return text + (f" {amount:.2f}" if amount is not None else "")


@dataclass
class _MeshTime:
    """The mesh's today as the runner last saw it, and how many times it moved the clock (the sessions
    opened before a move are opened again: tokens follow the mesh clock)."""

    clock: MeshClock
    today: dt.date = dt.date.min
    moves: int = 0

    async def move_to(self, day: dt.date) -> None:
        if day > self.today:
            try:
                state = await self.clock.set_clock(day)
            except MyCareNetError as error:
                raise StoryError(f"the mesh clock refused {day:%d.%m.%Y}: {error}") from None
            self.today = state.today
            self.moves += 1


@dataclass
class _Play:
    """One story being played: its identities, its shift and its clients."""

    access: MeshAccess
    scenario: Scenario
    shift: int
    time: _MeshTime
    inami: dict[str, str] = field(default_factory=dict)
    keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)
    niss: dict[str, str] = field(default_factory=dict)
    clients: dict[str, tuple[Client, int]] = field(default_factory=dict)

    @property
    def today(self) -> dt.date:
        return self.time.today

    # -- dates and names between the file and the mesh --

    def fwd(self, day: dt.date) -> dt.date:
        return shift_date(day, self.shift)

    def back(self, day: common_pb2.Date) -> dt.date | None:
        if not day.year:
            return None
        return shift_date(dt.date(day.year, day.month, day.day), -self.shift)

    def who(self, inami: str) -> str:
        for label, number in self.inami.items():
            if number == inami:
                return label
        return f"{inami} (not an actor)" if inami else "nobody"

    def patient_label(self, niss: str) -> str:
        for label, number in self.niss.items():
            if number == niss:
                return label
        return f"{niss} (not a patient of the story)"

    # -- the mesh clock and the sessions --

    async def client(self, label: str) -> Client:
        """The actor's client, logged in since the clock last moved (tokens follow the mesh clock)."""
        known = self.clients.get(label)
        if known is not None and known[1] == self.time.moves:
            return known[0]
        client = known[0] if known is not None else self.access.new_client()
        await client.login(self.inami[label], self.keys[label])
        self.clients[label] = (client, self.time.moves)
        return client

    async def close(self) -> None:
        for client, _ in self.clients.values():
            await client.close()
        self.clients.clear()

    # -- setup --

    async def setup(self) -> None:
        admin = self.access.admin
        rng = random.SystemRandom()
        ordered = sorted(self.scenario.actors.items(), key=lambda kv: kv[1].supervisor is not None)
        last_sequence = 0
        for label, actor in ordered:
            inami = await self._fresh_inami(rng, actor.role)
            self.inami[label] = inami
            self.keys[label] = Ed25519PrivateKey.generate()
            added = await admin.add_provider(
                inami,
                first_name=actor.first_name or label,
                last_name=actor.last_name or f"Scenario {self.scenario.story}",
                niss=make_niss(
                    dt.date(rng.randint(1950, 1990), rng.randint(1, 12), rng.randint(1, 28)),
                    rng.randint(*NISS_SEQUENCES),
                ),
                supervisor_inami=self.inami[actor.supervisor] if actor.supervisor else "",
                public_key=self.keys[label].public_key(),
            )
            last_sequence = max(last_sequence, added.change_sequence)
        await admin.wait_for_cadastre(last_sequence or await admin.cadastre_head())
        for label, patient in self.scenario.patients.items():
            born = self.fwd(patient.born)
            niss = await self._fresh_niss(rng, born, patient.sex)
            self.niss[label] = niss
            await admin.add_patient(
                niss,
                insurer=patient.insurer,
                first_name=patient.first_name or label,
                last_name=patient.last_name or f"Scenario {self.scenario.story}",
                birth_date=born,
                sex=patient.sex,
                chronic_condition=patient.chronic,
            )
        for provider in self.inami.values():
            for niss in self.niss.values():
                await admin.register_relation(provider, niss)
        for label, actor in self.scenario.actors.items():
            if actor.enrolled:
                client = await self.client(label)
                reply = await client.enrol(**BANK, holder_name=f"{label} {self.scenario.story}")
                failed = [o for o in reply.outcomes if o.error_code or o.error]
                if failed:
                    raise StoryError(f"{label} could not enrol: {failed[0].error} ({failed[0].error_code})")
        await self._wait_for_routing()

    async def _fresh_inami(self, rng: random.SystemRandom, role: str) -> str:
        profession = Profession.DENTIST if role == "dentist" else Profession.PHYSICIAN
        for _ in range(50):
            inami = make_inami(profession, rng.randint(*INAMI_SEQUENCES), COMPETENCES[role])
            try:
                await self.access.admin.get_provider(inami)
            except MyCareNetError as error:
                if error.status == grpc.StatusCode.NOT_FOUND:
                    return inami
                raise
        raise StoryError("no fresh INAMI number found in 50 draws")

    async def _fresh_niss(self, rng: random.SystemRandom, born: dt.date, sex: str) -> str:
        admin = self.access.admin
        for _ in range(50):
            sequence = rng.randint(*NISS_SEQUENCES)
            if sequence % 2 != (1 if sex == "male" else 0):
                sequence = sequence + 1 if sequence < NISS_SEQUENCES[1] else sequence - 1
            niss = make_niss(born, sequence)
            known = False
            for code in admin.insurer_codes:
                try:
                    await admin.get_member(niss, insurer=code)
                    known = True
                    break
                except MyCareNetError as error:
                    if error.status != grpc.StatusCode.NOT_FOUND:
                        raise
            if not known:
                return niss
        raise StoryError(f"no fresh NISS born {born} found in 50 draws")

    async def _wait_for_routing(self) -> None:
        """Until the hub routes every patient born by today (it learns them from the insurers' feeds)."""
        client = await self.client(next(iter(self.scenario.actors)))  # every role may consult
        deadline = time.monotonic() + self.access.wait_seconds
        for label, niss in self.niss.items():
            if self.fwd(self.scenario.patients[label].born) > self.today:
                continue
            while True:
                try:
                    await client.consult(niss, date=self.today)
                    break
                except MyCareNetError as error:
                    if 120 not in error.codes or time.monotonic() > deadline:
                        raise StoryError(f"the hub does not route {label} ({niss}): {error}") from None
                await asyncio.sleep(0.2)

    # -- the steps --

    async def play(self, step: Step) -> dict[str, Any]:
        """Play one step; what the mesh answered, in the file's terms (``error`` when it refused)."""
        d = step.detail
        try:
            if isinstance(d, Notify):
                return await self._notify(d)
            if isinstance(d, Consult):
                return await self._consult(d)
            if isinstance(d, Contact | Paper):
                return await self._intake(d, step.expect)
            if isinstance(d, Clock):
                return await self._clock(d)
            if isinstance(d, ListRequest):
                return await self._list(d, step.expect)
            assert isinstance(d, Mailbox)
            return await self._mailbox(d, step.expect)
        except MyCareNetError as error:
            return _refused(error)
        except grpc.RpcError as error:
            return _refused(MyCareNetError.from_rpc_error(error))

    async def _notify(self, d: Notify) -> dict[str, Any]:
        client = await self.client(d.by)
        supervisor = self.scenario.actors[d.by].supervisor  # a GP in training notifies under it
        reply = await client.notify(
            self.niss[d.patient],
            contact_date=self.fwd(d.contact),
            nomenclature_code=d.code,
            supervisor_inami=self.inami[supervisor] if supervisor else "",
        )
        payment = {
            dmg_pb2.PAYMENT_INDICATOR_WITH_PAYMENT: "with",
            dmg_pb2.PAYMENT_INDICATOR_WITHOUT_PAYMENT: "without",
        }.get(reply.payment, dmg_pb2.PaymentIndicator.Name(reply.payment))
        return {
            "holder": self.who(reply.holder.inami),
            "period": fmt_period(self.back(reply.start_date), self.back(reply.end_date)),
            "payment": payment,
        }

    async def _consult(self, d: Consult) -> dict[str, Any]:
        client = await self.client(d.by)
        reply = await client.consult(self.niss[d.patient], date=self.fwd(d.date) if d.date else self.today)
        h = reply.holding
        held = reply.HasField("holding") and bool(h.holder.inami)
        return {
            "holder": self.who(h.holder.inami) if held else "nobody",
            "period": fmt_period(self.back(h.period.start), self.back(h.period.end)) if held else "—",
            "paid_this_year": reply.payment_made_this_year,
            "procedure": dmg_pb2.Procedure.Name(h.procedure).removeprefix("PROCEDURE_").lower()
            if held
            else "—",
        }

    async def _intake(self, d: Contact | Paper, expect: Expect) -> dict[str, Any]:
        insurer = self.scenario.patients[d.patient].insurer
        stub = self.access.intake[insurer]
        reference, niss, inami = f"scenario-{new_reference()}", self.niss[d.patient], self.inami[d.by]
        submitted = _proto(self.fwd(d.submitted))
        reply: Any
        if isinstance(d, Contact):
            request = intake_service_pb2.RegisterContactRequest(
                intake_reference=reference,
                patient_niss=niss,
                provider_inami=inami,
                submission_date=submitted,
                contact_date=_proto(self.fwd(d.date)),
                nomenclature_code=d.code,
            )
            reply = await stub.RegisterContact(request, timeout=self.access.wait_seconds)
        else:
            request_paper = intake_service_pb2.RegisterPaperAttestationRequest(
                intake_reference=reference,
                patient_niss=niss,
                provider_inami=inami,
                submission_date=submitted,
                attestation_date=_proto(self.fwd(d.attested)),
                payment_method=(
                    intake_service_pb2.PAPER_PAYMENT_METHOD_THIRD_PARTY
                    if d.paid == "third_party"
                    else intake_service_pb2.PAPER_PAYMENT_METHOD_CASH
                ),
            )
            reply = await stub.RegisterPaperAttestation(request_paper, timeout=self.access.wait_seconds)
        e = reply.effects
        amounts = any(p.amount is not None for p in [*(expect.payments or ()), *(expect.recoveries or ())])
        procedure = any(h.procedure is not None for h in expect.holdings or ())
        reopened = any(h.reopened is not None for h in expect.holdings or ())
        return {
            "payments": sorted(self._payment(p, amounts) for p in e.payments),
            "recoveries": sorted(self._payment(p, amounts) for p in e.recoveries),
            "holdings": sorted(self._holding(h, procedure, reopened) for h in e.holdings),
            "messages_written": len(e.message_ids),
            "note": e.note,
        }

    def _payment(self, p: dmg_pb2.DmgPayment, amounts: bool, *, to: bool = True) -> str:
        return fmt_payment(
            self.who(p.beneficiary.inami) if to else None,
            p.year - self.shift,
            dmg_pb2.PaymentKind.Name(p.kind).removeprefix("PAYMENT_KIND_").lower(),
            p.recovered,
            Decimal(p.amount.amount) if amounts and p.amount.amount else None,
        )

    def _holding(self, h: dmg_pb2.DmgHolding, procedure: bool, reopened: bool) -> str:
        return _holding_text(
            self.who(h.holder.inami),
            fmt_period(self.back(h.period.start), self.back(h.period.end)),
            dmg_pb2.HoldingStatus.Name(h.status).removeprefix("HOLDING_STATUS_").lower(),
            dmg_pb2.Procedure.Name(h.procedure).removeprefix("PROCEDURE_").lower() if procedure else None,
            h.reopened if reopened else None,
        )

    async def _clock(self, d: Clock) -> dict[str, Any]:
        # The timeline moved the clock to the step's date already (an advance is a date: the step before's
        # plus the days); what the mesh says its today is now is the answer.
        state = await self.access.clock.clock()
        self.time.today = state.today
        return {"today": fmt_date(shift_date(self.today, -self.shift))}

    async def _list(self, d: ListRequest, expect: Expect) -> dict[str, Any]:
        client = await self.client(d.by)
        year = d.year + self.shift
        if year == self.today.year:
            on = self.today
        elif year < self.today.year:
            on = dt.date(year, 12, 31)
        else:
            on = dt.date(year, 1, 1)
        ack = await client.post_patient_list(reference_date=on)
        reference = ack.technical_ack.reference
        message: dmg_pb2.MailboxMessage | None = None
        try:
            async with asyncio.timeout(self.access.wait_seconds):
                async for m in client.watch_messages(kinds=[dmg_pb2.MESSAGE_KIND_PATIENT_LIST]):
                    if m.patient_list.list_reference == reference:
                        message = m
                        break
        except TimeoutError:
            return {
                "error": "no answer",
                "error_message": f"no list in the mailbox within {self.access.wait_seconds:.0f} s",
            }
        assert message is not None
        await client.confirm([message.message_id])
        amounts = any(p.amount is not None for e in expect.patients or () for p in e.payments)
        entries = []
        for entry in message.patient_list.entries:
            periods = ", ".join(fmt_period(self.back(p.start), self.back(p.end)) for p in entry.periods)
            pays = ", ".join(sorted(self._payment(p, amounts, to=False) for p in entry.payments))
            entries.append(f"{self.patient_label(entry.patient.niss)}: periods [{periods}] payments [{pays}]")
        missing = [
            o.insurer_code
            for o in message.patient_list.insurers
            if o.status == dmg_pb2.INSURER_OUTCOME_STATUS_MISSING
        ]
        return {"patients": sorted(entries), **({"insurers_missing": missing} if missing else {})}

    async def _mailbox(self, d: Mailbox, expect: Expect) -> dict[str, Any]:
        client = await self.client(d.of)
        kinds = [dmg_pb2.MESSAGE_KIND_CLOSURE, dmg_pb2.MESSAGE_KIND_EXTENSION]
        wanted = len(expect.messages or ())
        deadline = time.monotonic() + d.wait
        while True:
            messages = await client.all_messages(kinds=kinds)
            if len(messages) >= wanted or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        if messages:
            await client.confirm([m.message_id for m in messages])
        return {"messages": sorted(self._message(m) for m in messages)}

    def _message(self, m: dmg_pb2.MailboxMessage) -> str:
        if m.HasField("closure"):
            c = m.closure
            return _closure_text(
                self.patient_label(c.patient.niss),
                self.back(c.end_date),
                self.who(c.new_holder.inami),
                self.back(c.start_date),
            )
        e = m.extension
        return _extension_text(
            self.patient_label(e.patient.niss), self.back(e.new_end_date), self.back(e.contact_date)
        )


def _proto(day: dt.date) -> common_pb2.Date:
    return common_pb2.Date(year=day.year, month=day.month, day=day.day)


def _refused(error: MyCareNetError) -> dict[str, Any]:
    codes = list(error.codes)
    return {
        "error": error.status.name + (f" [{', '.join(str(c) for c in codes)}]" if codes else ""),
        "error_message": error.message,
        "error_status": error.status.name,
        "error_codes": codes,
    }


def _holding_text(holder: str, period: str, status: str, procedure: str | None, reopened: bool | None) -> str:
    return (
        f"{holder} {period} {status}"
        + (f" {procedure}" if procedure else "")
        + (" reopened" if reopened else "")
    )


def _closure_text(patient: str, end: dt.date | None, new_holder: str, start: dt.date | None) -> str:
    return f"closure of {patient}: ends {fmt_date(end)}, {new_holder} from {fmt_date(start)}"


def _extension_text(patient: str, until: dt.date | None, contact: dt.date | None) -> str:
    return f"extension of {patient}: until {fmt_date(until)}, contact {fmt_date(contact)}"


# --- expectations in the same texts ---------------------------------------------------------------------


def _expected_payment(p: PaymentExpect, *, to: bool = True) -> str:
    return fmt_payment(p.to if to else None, p.year, p.kind, p.recovered, p.amount)


def _expected_holding(h: HoldingExpect) -> str:
    period = fmt_period(h.period.start, h.period.end)
    return _holding_text(h.holder, period, h.status, h.procedure, h.reopened)


def _expected_message(m: MessageExpect) -> str:
    if m.closure is not None:
        c = m.closure
        return _closure_text(c.patient, c.end, c.new_holder, c.start)
    assert m.extension is not None
    e = m.extension
    return _extension_text(e.patient, e.until, e.contact)


def _expected_entry(e: ListEntryExpect) -> str:
    periods = ", ".join(fmt_period(p.start, p.end) for p in e.periods)
    pays = ", ".join(sorted(_expected_payment(p, to=False) for p in e.payments))
    return f"{e.patient}: periods [{periods}] payments [{pays}]"


def expected_of(expect: Expect) -> dict[str, Any]:
    """The expectations a file gives, as the texts the runner renders the mesh's answers in."""
    out: dict[str, Any] = {}
    for name in expect.model_fields_set:
        value = getattr(expect, name)
        if value is None:
            continue
        if name == "error":
            out["error"] = (value.status or "") + (f" [{value.code}]" if value.code else "")
        elif name == "period":
            assert isinstance(value, Period)
            out["period"] = fmt_period(value.start, value.end)
        elif name == "today":
            out["today"] = fmt_date(value)
        elif name in ("payments", "recoveries"):
            out[name] = sorted(_expected_payment(p) for p in value)
        elif name == "holdings":
            out[name] = sorted(_expected_holding(h) for h in value)
        elif name == "messages":
            out[name] = sorted(_expected_message(m) for m in value)
        elif name == "patients":
            out[name] = sorted(_expected_entry(e) for e in value)
        else:
            out[name] = value
    return out


def differences(expect: Expect, expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Each expected field the answer does not match, as ``field: expected X, got Y``."""
    if "error" in actual and "error" not in expected:
        return [f"refused: {actual['error']}: {actual.get('error_message', '')}".rstrip(": ")]
    if "error" in expected:
        if "error" not in actual:
            return [f"error: expected {expected['error']}, but the call was accepted"]
        wanted = expect.error
        assert wanted is not None
        status_ok = wanted.status is None or actual.get("error_status") == wanted.status
        code_ok = wanted.code is None or wanted.code in actual.get("error_codes", ())
        if status_ok and code_ok:
            return []
        why = actual.get("error_message", "")
        return [f"error: expected {expected['error']}, got {actual['error']}: {why}"]
    out = []
    for name, want in expected.items():
        got = actual.get(name)
        if got != want:
            out.append(f"{name}: expected {_show(want)}, got {_show(got)}")
    return out


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + "; ".join(str(v) for v in value) + "]" if value else "none"
    return str(value)


def common_shift(scenarios: list[Scenario], mesh_today: dt.date) -> int:
    """One shift for stories played together: each first step on or after ``mesh_today``, and the
    calendar of every year any of them touches kept."""
    shift = max(choose_shift(s, mesh_today) for s in scenarios)
    years = set().union(*(story_years(s) for s in scenarios))
    while not same_calendar(years, shift):
        shift += 1
    return shift


async def _untariffed_years(access: MeshAccess, scenarios: list[Scenario], shift: int) -> list[int]:
    """The years the stories would be played in that no tariff of the insurers' table covers (a tariff stays
    in force until the next one: only the years before the table's first are not covered)."""
    if access.tariff_years is None:
        return []
    known = await access.tariff_years()
    played = {when.year + shift for _, _, when in timeline(scenarios) if when is not None}
    return sorted(y for y in played if not known or y < min(known))


def timeline(scenarios: list[Scenario]) -> list[tuple[int, int, dt.date | None]]:
    """Every step of every story as (story, step, play date in the file's dates), in the order they are
    played: by date, a story's own steps in their order (a step without a date goes with the one before)."""
    entries: list[tuple[dt.date, int, int, dt.date | None]] = []
    for i, scenario in enumerate(scenarios):
        current: dt.date | None = None
        for j, step in enumerate(scenario.steps):
            current = play_date(step, current)
            entries.append((current or dt.date.min, i, j, current))
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    return [(i, j, when) for _, i, j, when in entries]


async def play_scenarios(loaded: list[LoadedScenario], access: MeshAccess) -> list[StoryResult]:
    """Set every story up on the mesh, then play their steps together, interleaved by date on one shift
    (stories are isolated by their own providers and patients; only the mesh clock is shared). Never
    raises for what the mesh answers: it is in the results."""
    results = [StoryResult(one.path, one.scenario.story, one.scenario.title) for one in loaded]
    if not loaded:
        return results
    time_ = _MeshTime(access.clock)
    time_.today = (await access.clock.clock()).today
    scenarios = [one.scenario for one in loaded]
    try:
        shift = common_shift(scenarios, time_.today)
    except ValueError as error:
        for r in results:
            r.error = str(error)
        return results
    missing = await _untariffed_years(access, scenarios, shift)
    if missing:
        for r in results:
            r.shift_years = shift
            years = ", ".join(map(str, missing))
            r.error = (
                f"the stories would be played {shift:+d} years, in {years}, for which the insurers have no "
                "DMG tariff (a fee there is refused): start the cluster at an earlier date "
                "(mycarenet-cluster up --today ...)"
            )
        return results
    plays = [_Play(access, s, shift, time_) for s in scenarios]
    try:
        for play, result in zip(plays, results, strict=True):
            result.shift_years = shift
            t0 = time.monotonic()
            try:
                await play.setup()
                result.identities = {**play.inami, **play.niss}
            except (StoryError, MyCareNetError) as error:
                result.error = f"setup: {error}"
            except grpc.RpcError as error:
                result.error = f"setup: {MyCareNetError.from_rpc_error(error)}"
            result.seconds += time.monotonic() - t0
        for i, j, when in timeline(scenarios):
            result, play, step = results[i], plays[i], scenarios[i].steps[j]
            if result.error is not None:
                continue
            t0 = time.monotonic()
            try:
                if when is not None:
                    await time_.move_to(play.fwd(when))
                actual = await play.play(step)
            except StoryError as error:
                result.error = f"step {j + 1}: {error}"
                continue
            finally:
                result.seconds += time.monotonic() - t0
            expected = expected_of(step.expect)
            diffs = differences(step.expect, expected, actual)
            status = ("xfail" if diffs else "xpass") if step.known_gap else ("failed" if diffs else "passed")
            result.steps.append(
                StepResult(
                    index=j + 1,
                    line=loaded[i].step_lines[j],
                    title=step.describe(),
                    action=step.action,
                    status=status,
                    played_on=when,
                    expected=expected,
                    actual={k: v for k, v in actual.items() if k in expected or k in SHOWN_ERRORS},
                    differences=diffs,
                    known_gap=step.known_gap,
                    seconds=time.monotonic() - t0,
                )
            )
    finally:
        for play in plays:
            await play.close()
    return results


async def play_scenario(loaded: LoadedScenario, access: MeshAccess) -> StoryResult:
    """One story (:func:`play_scenarios` with one file)."""
    return (await play_scenarios([loaded], access))[0]


__all__ = [
    "MeshAccess",
    "MeshClock",
    "StepResult",
    "StoryResult",
    "common_shift",
    "differences",
    "expected_of",
    "play_scenario",
    "play_scenarios",
    "timeline",
]
