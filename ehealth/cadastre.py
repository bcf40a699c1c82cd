"""The provider cadastre: providers (identity, role from the INAMI competence, validity, supervisor) and
organisations (medical houses, group practices) with their members over periods.

The cadastre is the authentic source of the mesh: the administrator writes it (standing in for the
authentic sources), and the insurers and the hub follow its change log (:meth:`Cadastre.changes`,
:meth:`Cadastre.watch_changes`) instead of being written one by one. A write that changes what a follower
sees appends a change; followers never see a NISS or a key. A write that ends a validity ends the sessions
it no longer covers (the provider's or organisation's own, and those opened under mandates it gave).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from ehealth.audit import note
from ehealth.auth import ORGANISATION, PROVIDER
from ehealth.logs import Logs
from ehealth.models import CadastreChangeRow, CredentialRow, MembershipRow, OrganisationRow, ProviderRow
from ehealth.repositories import CadastreChangeRepository, CadastreRepository, CredentialRepository
from ehealth.rules import Period
from ehealth.scope import NOT_OWN_ENTRY, Actor
from ehealth.store import Database
from ehealth.tokens import fingerprint, load_public_key
from mycarenet_core.clock import Clock
from mycarenet_core.errors import McnCode, not_found

PROVIDER_CHANGE = "provider"
ORGANISATION_CHANGE = "organisation"


@dataclass(frozen=True)
class ProviderRecord:
    """A provider with the public key it authenticates with (empty when none)."""

    row: ProviderRow
    public_key_pem: str


@dataclass(frozen=True)
class OrganisationRecord:
    row: OrganisationRow
    members: list[MembershipRow]


@dataclass(frozen=True)
class CadastreChange:
    """One entry of the change log with the entry as it is now (the log is compacted: a later change of
    the same entry moves it to a later sequence)."""

    row: CadastreChangeRow
    provider: ProviderRecord | None = None
    organisation: OrganisationRecord | None = None


def _provider_view(row: ProviderRow) -> tuple[Any, ...]:
    """What a follower sees of a provider (no NISS, no key): a change of anything else is not a change."""
    return (row.first_name, row.last_name, row.role, row.valid_from, row.valid_to, row.supervisor_inami)


def _organisation_view(row: OrganisationRow, members: Sequence[MembershipRow]) -> tuple[Any, ...]:
    people = sorted(
        (m.member_inami, m.valid_from, m.valid_to is None, m.valid_to or m.valid_from) for m in members
    )
    return (row.kind, row.name, row.valid_from, row.valid_to, tuple(people))


class Cadastre:
    """Read and fill the cadastre."""

    def __init__(self, db: Database, clock: Clock, logs: Logs) -> None:
        self.db = db
        self.clock = clock
        self.logs = logs

    async def upsert_provider(
        self, values: ProviderRow, public_key_pem: str
    ) -> tuple[ProviderRecord, bool, int]:
        """Create or replace a provider; a given public key is registered as its credential. (the record,
        created, the change sequence — 0 when a follower would see no difference)."""
        note(subject=values.inami)
        async with self.logs.transaction() as log:
            cadastre = CadastreRepository(log.session)
            before = await cadastre.provider(values.inami)
            seen_before = _provider_view(before) if before is not None else None
            created = await cadastre.put_provider(values)
            row = await cadastre.provider(values.inami)
            assert row is not None
            sequence = 0
            if _provider_view(row) != seen_before:
                sequence = await log.change(PROVIDER_CHANGE, row.inami)
            await log.end_sessions_outside(row.inami, PROVIDER, Period(row.valid_from, row.valid_to))
            credentials = CredentialRepository(log.session)
            if public_key_pem:  # a key revoked before is not bound again (the record shows the one in force)
                print_ = fingerprint(load_public_key(public_key_pem))
                await credentials.put(PROVIDER, values.inami, public_key_pem, print_, log.now)
            credential = await credentials.get(PROVIDER, values.inami)
            return ProviderRecord(row, _pem(credential)), created, sequence

    async def get_provider(self, inami: str, actor: Actor) -> tuple[ProviderRecord, list[str]]:
        """The provider and the organisations it belongs to today; NOT_FOUND 141 when unknown. A provider's
        session reads only its own entry."""
        actor.check(inami, NOT_OWN_ENTRY, f"the cadastre entry of {inami}")
        async with self.db.read() as session:
            cadastre = CadastreRepository(session)
            row = await cadastre.provider(inami)
            if row is None:
                raise not_found(
                    "PROVIDER_UNKNOWN",
                    f"provider {inami} is not in the cadastre",
                    code=McnCode.PROVIDER_UNKNOWN,
                    field_path="inami",
                )
            credential = await CredentialRepository(session).get(PROVIDER, inami)
            organisations = await cadastre.organisations_of(inami, self.clock.today())
            return ProviderRecord(row, _pem(credential)), organisations

    async def list_providers(self, role: str | None, after: str | None, limit: int) -> list[ProviderRecord]:
        async with self.db.read() as session:
            rows = await CadastreRepository(session).list_providers(role, after, limit)
            credentials = CredentialRepository(session)
            return [ProviderRecord(r, _pem(await credentials.get(PROVIDER, r.inami))) for r in rows]

    async def upsert_organisation(
        self, values: OrganisationRow, members: Sequence[MembershipRow]
    ) -> tuple[OrganisationRecord, bool, int]:
        """Create or replace the organisation and its membership; (record, created, change sequence)."""
        note(subject=values.inami)
        async with self.logs.transaction() as log:
            cadastre = CadastreRepository(log.session)
            before = await cadastre.organisation(values.inami)
            seen_before = None
            if before is not None:
                old_members = (await cadastre.members([values.inami]))[values.inami]
                seen_before = _organisation_view(before, old_members)
            created = await cadastre.put_organisation(values, members)
            record = (await self._records(cadastre, [values.inami]))[0]
            sequence = 0
            if _organisation_view(record.row, record.members) != seen_before:
                sequence = await log.change(ORGANISATION_CHANGE, values.inami)
            validity = Period(record.row.valid_from, record.row.valid_to)
            await log.end_sessions_outside(values.inami, ORGANISATION, validity)
            today = self.clock.today()
            await log.end_sessions_of_users_gone(
                values.inami,
                [m.member_inami for m in members if Period(m.valid_from, m.valid_to).contains(today)],
            )
            return record, created, sequence

    async def get_organisation(self, inami: str, actor: Actor) -> OrganisationRecord:
        """The organisation with its members. A provider's session reads only an organisation it is, or
        belongs to today."""
        async with self.db.read() as session:
            cadastre = CadastreRepository(session)
            if actor.own is not None and actor.own != inami:
                member_of = await cadastre.organisations_of(actor.own, self.clock.today())
                actor.check(inami, NOT_OWN_ENTRY, f"the cadastre entry of {inami}", member_of=member_of)
            if await cadastre.organisation(inami) is None:
                raise not_found(
                    "ORGANISATION_UNKNOWN",
                    f"organisation {inami} is not in the cadastre",
                    code=McnCode.PROVIDER_UNKNOWN,
                    field_path="inami",
                )
            return (await self._records(cadastre, [inami]))[0]

    async def list_organisations(
        self, kind: str | None, after: str | None, limit: int
    ) -> list[OrganisationRecord]:
        async with self.db.read() as session:
            cadastre = CadastreRepository(session)
            rows = await cadastre.list_organisations(kind, after, limit)
            return await self._records(cadastre, [r.inami for r in rows])

    # --- the change log --------------------------------------------------------------------------------

    async def changes(self, after_sequence: int, limit: int) -> tuple[list[CadastreChange], int]:
        """The changes after ``after_sequence`` in sequence order (at most ``limit``), each with its entry as
        it is now, and the head of the log — read in one transaction."""
        async with self.db.read() as session:
            log = CadastreChangeRepository(session)
            rows = await log.after(after_sequence, limit)
            head = await log.head()
            providers = await log.providers([r.inami for r in rows if r.kind == PROVIDER_CHANGE])
            organisations = await self._records(
                CadastreRepository(session), [r.inami for r in rows if r.kind == ORGANISATION_CHANGE]
            )
            by_inami = {o.row.inami: o for o in organisations}
            out = []
            for row in rows:
                if row.kind == PROVIDER_CHANGE and row.inami in providers:
                    out.append(CadastreChange(row, provider=ProviderRecord(providers[row.inami], "")))
                elif row.kind == ORGANISATION_CHANGE and row.inami in by_inami:
                    out.append(CadastreChange(row, organisation=by_inami[row.inami]))
            return out, head

    async def watch_changes(self, after_sequence: int, *, batch: int = 500) -> AsyncIterator[CadastreChange]:
        """The changes after ``after_sequence``, then each new one as it is committed (woken by the log's
        feed, no polling); ends when the feed is closed (server stop) or the caller stops iterating."""
        async for change in self.logs.cadastre.follow(
            after_sequence, self._page, lambda c: c.row.sequence or 0, batch=batch
        ):
            yield change

    async def _page(self, after_sequence: int, limit: int) -> list[CadastreChange]:
        return (await self.changes(after_sequence, limit))[0]

    @staticmethod
    async def _records(cadastre: CadastreRepository, inamis: list[str]) -> list[OrganisationRecord]:
        members = await cadastre.members(inamis)
        records = []
        for inami in inamis:
            row = await cadastre.organisation(inami)
            assert row is not None
            records.append(OrganisationRecord(row, members[inami]))
        return records


def _pem(credential: CredentialRow | None) -> str:
    return credential.public_key_pem if credential is not None else ""
