"""Reference data of an insurer node: the providers it knows, organisations, the tariff."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mycarenet_core.errors import FieldViolation, McnCode
from mycarenet_core.gen.mycarenet.oa.v1 import reference_data_service_pb2 as rd_pb2
from mycarenet_core.identifiers import Role
from oa_node import controls as c
from oa_node import convert
from oa_node import models as m
from oa_node.audit import AuditEntry, Auditor
from oa_node.membership import periods_from
from oa_node.repositories import CadastreRepository, OrganisationData, ReferenceRepository

_ORGANISATION_ROLES = frozenset({Role.MEDICAL_HOUSE, Role.GROUP_PRACTICE})


def _declared_role(declared: int, actual: Role, field: str, out: c.Violations) -> None:
    if declared and convert.role_from_proto(declared) is not actual:
        out.append(
            FieldViolation(field, McnCode.IDENTIFICATION_INCONSISTENT, "role does not match the INAMI number")
        )


class ReferenceOperations:
    """The ReferenceDataService behaviour of one insurer node."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        auditor: Auditor,
        following: Callable[[], bool] = lambda: False,
    ) -> None:
        self._sessions = sessions
        self._auditor = auditor
        self._following = following

    async def upsert_providers(
        self, request: rd_pb2.UpsertProvidersRequest, peer: str = ""
    ) -> rd_pb2.UpsertProvidersResponse:
        out: c.Violations = []
        rows: list[m.KnownProvider] = []
        for index, known in enumerate(request.providers):
            field = f"providers[{index}]"
            found = c.inami(known.provider.inami, f"{field}.provider.inami", out)
            supervisor = c.inami(known.supervisor_inami, f"{field}.supervisor_inami", out, required=False)
            if found is None:
                continue
            _declared_role(known.provider.role, found.role, f"{field}.provider.role", out)
            if found.role in _ORGANISATION_ROLES:
                out.append(
                    FieldViolation(
                        f"{field}.provider.inami",
                        McnCode.VALUE_NOT_ALLOWED,
                        "organisations go to UpsertOrganisations",
                    )
                )
            rows.append(
                m.KnownProvider(
                    inami=found.value,
                    role=int(convert.role_to_proto(found.role)),
                    first_name=known.provider.first_name,
                    last_name=known.provider.last_name,
                    supervisor_inami=supervisor.value if supervisor else None,
                )
            )

        async def work(session: AsyncSession) -> rd_pb2.UpsertProvidersResponse:
            c.reject(out)
            return rd_pb2.UpsertProvidersResponse(
                stored=await ReferenceRepository(session).upsert_providers(rows)
            )

        return await self._auditor.run(AuditEntry("UpsertProviders", {"peer": peer}), work)

    async def upsert_organisations(
        self, request: rd_pb2.UpsertOrganisationsRequest, peer: str = ""
    ) -> rd_pb2.UpsertOrganisationsResponse:
        out: c.Violations = []
        data: list[OrganisationData] = []
        for index, known in enumerate(request.organisations):
            field = f"organisations[{index}]"
            found = c.inami(known.organisation.inami, f"{field}.organisation.inami", out)
            members: list[tuple[str, dt.date, dt.date | None]] = []
            for j, member in enumerate(known.members):
                who = c.inami(member.member_inami, f"{field}.members[{j}].member_inami", out)
                period = periods_from([member.period], f"{field}.members[{j}].period", out)
                if who is not None and period:
                    members.append((who.value, period[0][0], period[0][1]))
            if found is None:
                continue
            _declared_role(known.organisation.role, found.role, f"{field}.organisation.role", out)
            if found.role not in _ORGANISATION_ROLES:
                out.append(
                    FieldViolation(
                        f"{field}.organisation.inami",
                        McnCode.VALUE_NOT_ALLOWED,
                        "not a medical house or group practice",
                    )
                )
            data.append(
                OrganisationData(
                    inami=found.value,
                    role=int(convert.role_to_proto(found.role)),
                    name=known.organisation.last_name,
                    members=tuple(members),
                )
            )

        async def work(session: AsyncSession) -> rd_pb2.UpsertOrganisationsResponse:
            c.reject(out)
            stored = await ReferenceRepository(session).upsert_organisations(data)
            return rd_pb2.UpsertOrganisationsResponse(stored=stored)

        return await self._auditor.run(AuditEntry("UpsertOrganisations", {"peer": peer}), work)

    async def list_tariffs(self, request: rd_pb2.ListTariffsRequest) -> rd_pb2.ListTariffsResponse:
        async with self._sessions() as session:
            lines = await ReferenceRepository(session).tariffs(request.year)
        return rd_pb2.ListTariffsResponse(
            tariffs=[
                rd_pb2.Tariff(year=t.year, category=t.category, amount=convert.money(t.amount)) for t in lines
            ]
        )

    async def cadastre_position(
        self, _request: rd_pb2.GetCadastrePositionRequest
    ) -> rd_pb2.GetCadastrePositionResponse:
        """The last cadastre change applied (from the database) and whether the watch is open."""
        async with self._sessions() as session:
            applied = await CadastreRepository(session).applied()
        return rd_pb2.GetCadastrePositionResponse(applied_sequence=applied, following=self._following())
