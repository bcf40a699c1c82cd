"""The cadastre over gRPC: providers, organisations with members, pagination, validation."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from ehealth_support import (
    DENTIST,
    GP,
    GP2,
    GROUP_PRACTICE,
    MEDICAL_HOUSE,
    PATIENT2,
    SPECIALIST,
    TODAY,
    TRAINEE,
    Env,
    period,
    rpc_error,
)

from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import cadastre_pb2 as cp

D = dt.date


async def test_provider_upsert_get_and_roles(env: Env) -> None:
    created = await env.provider(GP)
    assert created.created
    assert created.provider.role == common_pb2.PROVIDER_ROLE_GENERAL_PRACTITIONER
    assert "PUBLIC KEY" in created.provider.public_key_pem
    again = await env.provider(GP, end=D(2030, 1, 1), with_key=False)
    assert not again.created
    assert again.provider.validity.end.year == 2030
    assert again.provider.public_key_pem == created.provider.public_key_pem  # key kept
    trainee = await env.provider(TRAINEE, supervisor=GP)
    assert trainee.provider.role == common_pb2.PROVIDER_ROLE_GP_IN_TRAINING
    assert trainee.provider.supervisor_inami == GP
    await env.organisation(MEDICAL_HOUSE, [(GP, D(2024, 1, 1), None), (GP2, D(2020, 1, 1), D(2021, 1, 1))])
    got = await env.cadastre.GetProvider(cp.GetProviderRequest(inami=GP), timeout=10)
    assert got.provider.niss == PATIENT2
    assert list(got.organisation_inamis) == [MEDICAL_HOUSE]
    missing = await rpc_error(env.cadastre.GetProvider(cp.GetProviderRequest(inami=SPECIALIST), timeout=10))
    assert (missing.status, missing.reason, missing.code) == (
        grpc.StatusCode.NOT_FOUND,
        "PROVIDER_UNKNOWN",
        141,
    )


async def test_provider_lists_are_paginated_and_filtered(env: Env) -> None:
    for inami in (GP, GP2, SPECIALIST, DENTIST):
        await env.provider(inami, with_key=False)
    seen, token = [], ""
    while True:
        page = await env.cadastre.ListProviders(
            cp.ListProvidersRequest(page_size=3, page_token=token), timeout=10
        )
        seen += [p.inami for p in page.providers]
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted([GP, GP2, SPECIALIST, DENTIST])
    gps = await env.cadastre.ListProviders(
        cp.ListProvidersRequest(role=common_pb2.PROVIDER_ROLE_GENERAL_PRACTITIONER), timeout=10
    )
    assert [p.inami for p in gps.providers] == sorted([GP, GP2])


async def test_organisations(env: Env) -> None:
    created = await env.organisation(MEDICAL_HOUSE, [(GP, D(2024, 1, 1), None)])
    assert created.created
    assert created.organisation.kind == cp.ORGANISATION_KIND_MEDICAL_HOUSE
    replaced = await env.organisation(MEDICAL_HOUSE, [(GP2, D(2024, 1, 1), D(2024, 12, 31))], name="MM Noord")
    assert not replaced.created
    assert [(m.inami, m.period.end.year) for m in replaced.organisation.members] == [(GP2, 2024)]
    await env.organisation(GROUP_PRACTICE, [])
    got = await env.cadastre.GetOrganisation(cp.GetOrganisationRequest(inami=MEDICAL_HOUSE), timeout=10)
    assert got.organisation.name == "MM Noord"
    houses = await env.cadastre.ListOrganisations(
        cp.ListOrganisationsRequest(kind=cp.ORGANISATION_KIND_MEDICAL_HOUSE), timeout=10
    )
    assert [o.inami for o in houses.organisations] == [MEDICAL_HOUSE]
    page = await env.cadastre.ListOrganisations(cp.ListOrganisationsRequest(page_size=1), timeout=10)
    rest = await env.cadastre.ListOrganisations(
        cp.ListOrganisationsRequest(page_size=1, page_token=page.next_page_token), timeout=10
    )
    assert [o.inami for o in [*page.organisations, *rest.organisations]] == sorted(
        [MEDICAL_HOUSE, GROUP_PRACTICE]
    )
    assert rest.next_page_token == ""
    mismatch = await rpc_error(
        env.cadastre.UpsertOrganisation(
            cp.UpsertOrganisationRequest(
                organisation=cp.Organisation(
                    inami=MEDICAL_HOUSE,
                    kind=cp.ORGANISATION_KIND_GROUP_PRACTICE,
                    name="x",
                    validity=period(TODAY),
                )
            ),
            timeout=10,
        )
    )
    assert [(v.field, v.code) for v in mismatch.violations] == [("organisation.kind", 158)]


def provider(**fields: object) -> cp.CadastreProvider:
    values: dict[str, object] = {
        "inami": GP,
        "niss": PATIENT2,
        "first_name": "A",
        "last_name": "B",
        "validity": period(D(2020, 1, 1)),
    }
    values.update(fields)
    return cp.CadastreProvider(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "violations"),
    [
        (provider(inami=""), [("provider.inami", 100)]),
        (provider(inami="1234567890"), [("provider.inami", 111)]),
        (provider(inami=GP[:6] + "00" + GP[8:]), [("provider.inami", 112)]),
        (provider(inami=MEDICAL_HOUSE), [("provider.inami", 130)]),
        (provider(niss="80051712399"), [("provider.niss", 112)]),
        (provider(niss="80133112345"), [("provider.niss", 111)]),
        (provider(last_name=" "), [("provider.last_name", 100)]),
        (provider(validity=common_pb2.Period()), [("provider.validity.start", 100)]),
        (provider(validity=period(D(2020, 1, 1), D(2019, 1, 1))), [("provider.validity.end", 113)]),
        (provider(inami=TRAINEE), [("provider.supervisor_inami", 100)]),
        (provider(inami=TRAINEE, supervisor_inami=SPECIALIST), [("provider.supervisor_inami", 130)]),
        (provider(supervisor_inami=GP2), [("provider.supervisor_inami", 130)]),
        (provider(public_key_pem="not a key"), [("provider.public_key_pem", 130)]),
    ],
)
async def test_provider_validation_codes_and_nothing_written(
    env: Env, value: cp.CadastreProvider, violations: list[tuple[str, int]]
) -> None:
    error = await rpc_error(env.cadastre.UpsertProvider(cp.UpsertProviderRequest(provider=value), timeout=10))
    assert error.status == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.code) for v in error.violations] == violations
    listed = await env.cadastre.ListProviders(cp.ListProvidersRequest(), timeout=10)
    assert list(listed.providers) == []
