"""The provider cadastre: providers (identity, role from the INAMI competence, validity, supervisor) and
organisations (medical houses, group practices) with their members over periods."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ehealth.auth import PROVIDER
from ehealth.models import CredentialRow, MembershipRow, OrganisationRow, ProviderRow
from ehealth.repositories import CadastreRepository, CredentialRepository
from ehealth.tokens import fingerprint, load_public_key
from mycarenet_core.clock import Clock
from mycarenet_core.db import transaction
from mycarenet_core.errors import McnCode, not_found


@dataclass(frozen=True)
class ProviderRecord:
    """A provider with the public key it authenticates with (empty when none)."""

    row: ProviderRow
    public_key_pem: str


@dataclass(frozen=True)
class OrganisationRecord:
    row: OrganisationRow
    members: list[MembershipRow]


class Cadastre:
    """Read and fill the cadastre."""

    def __init__(self, factory: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self.factory = factory
        self.clock = clock

    async def upsert_provider(self, values: ProviderRow, public_key_pem: str) -> tuple[ProviderRecord, bool]:
        """Create or replace a provider; a given public key is registered as its credential."""
        async with transaction(self.factory) as session:
            created = await CadastreRepository(session).put_provider(values)
            credentials = CredentialRepository(session)
            if public_key_pem:
                print_ = fingerprint(load_public_key(public_key_pem))
                await credentials.put(PROVIDER, values.inami, public_key_pem, print_, self.clock.now())
            credential = await credentials.get(PROVIDER, values.inami)
            row = await CadastreRepository(session).provider(values.inami)
            assert row is not None
            return ProviderRecord(row, _pem(credential)), created

    async def get_provider(self, inami: str) -> tuple[ProviderRecord, list[str]]:
        """The provider and the organisations it belongs to today; NOT_FOUND 141 when unknown."""
        async with transaction(self.factory) as session:
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
        async with transaction(self.factory) as session:
            rows = await CadastreRepository(session).list_providers(role, after, limit)
            credentials = CredentialRepository(session)
            return [ProviderRecord(r, _pem(await credentials.get(PROVIDER, r.inami))) for r in rows]

    async def upsert_organisation(
        self, values: OrganisationRow, members: Sequence[MembershipRow]
    ) -> tuple[OrganisationRecord, bool]:
        async with transaction(self.factory) as session:
            cadastre = CadastreRepository(session)
            created = await cadastre.put_organisation(values, members)
            return (await self._records(cadastre, [values.inami]))[0], created

    async def get_organisation(self, inami: str) -> OrganisationRecord:
        async with transaction(self.factory) as session:
            cadastre = CadastreRepository(session)
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
        async with transaction(self.factory) as session:
            cadastre = CadastreRepository(session)
            rows = await cadastre.list_organisations(kind, after, limit)
            return await self._records(cadastre, [r.inami for r in rows])

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
