"""Mandates over gRPC: overlap rules, revocation, lists and validation. The principal gives, revokes and
lists its mandates with its own session (provider software); the administrator's path is used where the
principal cannot log in."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from ehealth_support import GP, GP2, SECRETARY, TODAY, Env, from_pdate, pdate, period, rpc_error

from mycarenet_core.gen.mycarenet.ehealth.v1 import mandate_pb2 as mp

D = dt.date
CONSULT, NOTIFY, MAILBOX = (
    mp.MANDATED_SERVICE_DMG_CONSULT,
    mp.MANDATED_SERVICE_DMG_NOTIFY,
    mp.MANDATED_SERVICE_MAILBOX,
)
COMPANY = "0403170701"  # a valid enterprise number (check digits 01)


def mandate(
    services: list[int],
    start: D,
    end: D | None = None,
    *,
    mandatee: str = SECRETARY,
    kind: str = "SUBJECT_KIND_PERSON",
) -> mp.CreateMandateRequest:
    return mp.CreateMandateRequest(
        mandate=mp.Mandate(
            principal_inami=GP,
            mandatee_kind=kind,
            mandatee_id=mandatee,
            services=services,  # type: ignore[arg-type]
            period=period(start, end),
        )
    )


async def create(env: Env, request: mp.CreateMandateRequest) -> mp.CreateMandateResponse:
    """Created by the principal (GP) with its own session."""
    reply: mp.CreateMandateResponse = await env.client.mandates.CreateMandate(
        request, metadata=await env.own(GP), timeout=10
    )
    return reply


async def test_a_new_mandate_closes_the_overlapping_previous_one(env: Env) -> None:
    await env.provider(GP)
    first = await create(env, mandate([CONSULT, MAILBOX], D(2025, 1, 1)))
    assert list(first.closed) == []
    second = await create(
        env, mandate([CONSULT], D(2025, 3, 1), mandatee=COMPANY, kind="SUBJECT_KIND_COMPANY")
    )
    assert [m.mandate_id for m in second.closed] == [first.mandate.mandate_id]
    assert from_pdate(second.closed[0].period.end) == D(2025, 2, 28)
    # Another service does not overlap: both coexist.
    other = await create(env, mandate([NOTIFY], D(2025, 1, 1)))
    assert list(other.closed) == []
    # A mandate starting after the previous one's end simply coexists.
    bounded = await create(env, mandate([CONSULT], D(2024, 1, 1), D(2024, 12, 31)))
    assert list(bounded.closed) == []
    listed = await env.client.mandates.ListMandates(
        mp.ListMandatesRequest(valid_on=pdate(D(2025, 3, 1))), metadata=await env.own(GP), timeout=10
    )
    assert {m.mandate_id for m in listed.mandates} == {second.mandate.mandate_id, other.mandate.mandate_id}


async def test_a_mandate_that_would_overlap_a_later_one_is_refused(env: Env) -> None:
    await env.provider(GP)
    later = await create(env, mandate([CONSULT], D(2025, 6, 1)))
    error = await rpc_error(create(env, mandate([CONSULT, NOTIFY], D(2025, 1, 1))))
    assert (error.status, error.reason, error.code) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "MANDATE_OVERLAP",
        130,
    )
    # Nothing changed; once the later one is cancelled (ended the day before its start) it works.
    await env.client.mandates.RevokeMandate(
        mp.RevokeMandateRequest(mandate_id=later.mandate.mandate_id, end_date=pdate(D(2025, 5, 31))),
        metadata=await env.own(GP),
        timeout=10,
    )
    created = await create(env, mandate([CONSULT, NOTIFY], D(2025, 1, 1)))
    assert list(created.closed) == []  # the cancelled one no longer overlaps


async def test_revoke_and_list_pagination(env: Env) -> None:
    await env.provider(GP)
    made = [await create(env, mandate([service], D(2025, 1, 1))) for service in (CONSULT, NOTIFY, MAILBOX)]
    gp = await env.own(GP)
    revoked = await env.client.mandates.RevokeMandate(
        mp.RevokeMandateRequest(mandate_id=made[0].mandate.mandate_id), metadata=gp, timeout=10
    )
    assert from_pdate(revoked.mandate.period.end) == TODAY
    assert list(revoked.mandate.services) == [CONSULT]
    ids, token = [], ""
    while True:
        page = await env.client.mandates.ListMandates(
            mp.ListMandatesRequest(mandatee_id=SECRETARY, page_size=2, page_token=token),
            metadata=gp,
            timeout=10,
        )
        ids += [m.mandate_id for m in page.mandates]
        token = page.next_page_token
        if not token:
            break
    assert sorted(ids) == sorted(m.mandate.mandate_id for m in made)
    assert len(ids) == 3
    unknown = await rpc_error(
        env.client.mandates.RevokeMandate(mp.RevokeMandateRequest(mandate_id="nope"), metadata=gp, timeout=10)
    )
    assert unknown.status == grpc.StatusCode.NOT_FOUND


async def test_unknown_principal(env: Env) -> None:
    # Only the administrator can even try: a provider unknown to the cadastre cannot log in.
    error = await rpc_error(env.mandates.CreateMandate(mandate([CONSULT], D(2025, 1, 1)), timeout=10))
    assert (error.status, error.reason, error.code) == (grpc.StatusCode.NOT_FOUND, "PRINCIPAL_UNKNOWN", 141)


@pytest.mark.parametrize(
    ("request_", "violations"),
    [
        (mandate([], D(2025, 1, 1)), [("mandate.services", 100)]),
        (mandate([CONSULT], D(2025, 1, 1), kind=""), [("mandate.mandatee_kind", 100)]),
        (mandate([CONSULT], D(2025, 1, 1), kind="ROBOT"), [("mandate.mandatee_kind", 130)]),
        (mandate([CONSULT], D(2025, 1, 1), mandatee="123"), [("mandate.mandatee_id", 111)]),
        (mandate([CONSULT], D(2025, 1, 1), mandatee=GP, kind="SUBJECT_KIND_PROVIDER"),
         [("mandate.mandatee_id", 130)]),
        (mandate([CONSULT], D(2025, 1, 1), D(2024, 1, 1)), [("mandate.period.end", 113)]),
        (mandate([0], D(2025, 1, 1), mandatee="0403170702", kind="SUBJECT_KIND_COMPANY"),
         [("mandate.mandatee_id", 112), ("mandate.services[0]", 100)]),
    ],
)  # fmt: skip
async def test_validation_codes(
    env: Env, request_: mp.CreateMandateRequest, violations: list[tuple[str, int]]
) -> None:
    await env.provider(GP)
    error = await rpc_error(create(env, request_))
    assert error.status == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.code) for v in error.violations] == violations
    listed = await env.mandates.ListMandates(mp.ListMandatesRequest(principal_inami=GP), timeout=10)
    assert list(listed.mandates) == []  # the administrator sees everyone's: there is none


async def test_provider_mandatee_can_log_in_for_the_principal(env: Env) -> None:
    await env.provider(GP)
    await env.provider(GP2)
    await create(env, mandate([CONSULT], D(2025, 1, 1), mandatee=GP2, kind="SUBJECT_KIND_PROVIDER"))
    session = await env.login(GP2, principal=GP)
    assert list(session.mandate.services) == [CONSULT]
    assert session.mandate.principal_inami == GP
