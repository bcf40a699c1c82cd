"""Reference data of an insurer node: the providers it knows, organisations, the tariff."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mycarenet_core import dates
from mycarenet_core.errors import McnCode
from mycarenet_core.gen.mycarenet.oa.v1 import reference_data_service_pb2 as rd_pb2
from mycarenet_core.identifiers import Role
from mycarenet_core.validation import Checker
from oa_node import controls as c
from oa_node import convert
from oa_node import models as m
from oa_node.audit import AuditEntry, AuditTrail
from oa_node.repositories import CadastreRepository, OrganisationData, ReferenceRepository

_ORGANISATION_ROLES = frozenset({Role.MEDICAL_HOUSE, Role.GROUP_PRACTICE, Role.PHARMACY})
MAX_ENTRIES = 10_000
MAX_MEMBERSHIPS = 10_000


def _declared_role(check: Checker, declared: int, actual: Role, field: str) -> None:
    if declared and convert.role_from_proto(declared) is not actual:
        check.add(field, McnCode.IDENTIFICATION_INCONSISTENT, "role does not match the INAMI number")


def parse_providers(request: rd_pb2.UpsertProvidersRequest) -> list[m.KnownProvider]:
    rows: list[m.KnownProvider] = []
    with Checker() as check:
        if not check.items("providers", request.providers, maximum=MAX_ENTRIES):
            return rows  # the checker raises on leaving the block
        for index, known in enumerate(request.providers):
            field = f"providers[{index}]"
            found = check.inami(f"{field}.provider.inami", known.provider.inami)
            supervisor = check.optional_inami(f"{field}.supervisor_inami", known.supervisor_inami)
            first = check.text(
                f"{field}.provider.first_name",
                known.provider.first_name,
                max_length=c.MAX_NAME,
                required=False,
            )
            last = check.text(
                f"{field}.provider.last_name", known.provider.last_name, max_length=c.MAX_NAME, required=False
            )
            if found is None:
                continue
            _declared_role(check, known.provider.role, found.role, f"{field}.provider.role")
            if found.role in _ORGANISATION_ROLES:
                check.add(
                    f"{field}.provider.inami",
                    McnCode.VALUE_NOT_ALLOWED,
                    "organisations go to UpsertOrganisations",
                )
            rows.append(
                m.KnownProvider(
                    inami=found.value,
                    role=int(convert.role_to_proto(found.role)),
                    first_name=first,
                    last_name=last,
                    supervisor_inami=supervisor.value if supervisor else None,
                )
            )
    return rows


def parse_organisations(request: rd_pb2.UpsertOrganisationsRequest) -> list[OrganisationData]:
    data: list[OrganisationData] = []
    with Checker() as check:
        if not check.items("organisations", request.organisations, maximum=MAX_ENTRIES):
            return data  # the checker raises on leaving the block
        for index, known in enumerate(request.organisations):
            field = f"organisations[{index}]"
            found = check.inami(f"{field}.organisation.inami", known.organisation.inami)
            name = check.text(
                f"{field}.organisation.last_name",
                known.organisation.last_name,
                max_length=c.MAX_NAME,
                required=False,
            )
            members: list[tuple[str, dt.date, dt.date | None]] = []
            if check.items(f"{field}.members", known.members, maximum=MAX_MEMBERSHIPS):
                for j, member in enumerate(known.members):
                    who = check.inami(f"{field}.members[{j}].member_inami", member.member_inami)
                    period = c.periods(check, [member.period], f"{field}.members[{j}].period")
                    if who is not None and period:
                        members.append((who.value, period[0][0], period[0][1]))
            if found is None:
                continue
            _declared_role(check, known.organisation.role, found.role, f"{field}.organisation.role")
            if found.role not in _ORGANISATION_ROLES:
                check.add(
                    f"{field}.organisation.inami",
                    McnCode.VALUE_NOT_ALLOWED,
                    "not a medical house, group practice or pharmacy",
                )
            data.append(
                OrganisationData(
                    inami=found.value,
                    role=int(convert.role_to_proto(found.role)),
                    name=name,
                    members=tuple(members),
                )
            )
    return data


class ReferenceOperations:
    """The ReferenceDataService behaviour of one insurer node."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        audit: AuditTrail,
        following: Callable[[], bool] = lambda: False,
    ) -> None:
        self._sessions = sessions
        self._audit = audit
        self._following = following

    async def upsert_providers(
        self, rows: list[m.KnownProvider], entry: AuditEntry
    ) -> rd_pb2.UpsertProvidersResponse:
        async with self._audit.transaction(entry) as session:
            stored = await ReferenceRepository(session).upsert_providers(rows)
        return rd_pb2.UpsertProvidersResponse(stored=stored)

    async def upsert_organisations(
        self, data: list[OrganisationData], entry: AuditEntry
    ) -> rd_pb2.UpsertOrganisationsResponse:
        async with self._audit.transaction(entry) as session:
            stored = await ReferenceRepository(session).upsert_organisations(data)
        return rd_pb2.UpsertOrganisationsResponse(stored=stored)

    async def list_tariffs(self, request: rd_pb2.ListTariffsRequest) -> rd_pb2.ListTariffsResponse:
        async with self._sessions() as session:
            lines = await ReferenceRepository(session).tariffs(request.year)
        return rd_pb2.ListTariffsResponse(
            tariffs=[
                rd_pb2.Tariff(
                    year=t.year,
                    category=t.category,
                    amount=convert.money(t.amount),
                    source=t.source,
                    payable_from=dates.to_proto(t.payable_from) if t.payable_from else None,
                )
                for t in lines
            ]
        )

    async def cadastre_position(
        self, _request: rd_pb2.GetCadastrePositionRequest
    ) -> rd_pb2.GetCadastrePositionResponse:
        """The last cadastre change applied (from the database) and whether the watch is open."""
        async with self._sessions() as session:
            applied = await CadastreRepository(session).applied()
        return rd_pb2.GetCadastrePositionResponse(applied_sequence=applied, following=self._following())
