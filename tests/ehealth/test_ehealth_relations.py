"""Therapeutic relations over gRPC: the check matrix, organisations, revocation, lists, DMG moves.

A provider registers, revokes and lists its own relations with its own session (the eID read); the hub
checks relations and moves DMG relations; the administrator reads everyone's."""

from __future__ import annotations

import datetime as dt
import itertools

import grpc
import pytest
from ehealth_support import (
    GP,
    GP2,
    MEDICAL_HOUSE,
    PATIENT,
    PATIENT2,
    SPECIALIST,
    TODAY,
    Env,
    from_pdate,
    pdate,
    rpc_error,
)

from mycarenet_core.gen.mycarenet.ehealth.v1 import therapeutic_relation_pb2 as tr

D = dt.date
PROOFS = [tr.RELATION_PROOF_EID_READ, tr.RELATION_PROOF_ISI_PLUS_READ, tr.RELATION_PROOF_PATIENT_DECLARATION]


async def register(
    env: Env, provider: str, proof: int, start: D | None, end: D | None = None, patient: str = PATIENT
) -> tr.TherapeuticRelation:
    reply = await env.client.relations.RegisterRelation(
        tr.RegisterRelationRequest(
            provider_inami=provider,
            patient_niss=patient,
            proof=proof,  # type: ignore[arg-type]
            start_date=pdate(start),
            end_date=pdate(end),
        ),
        metadata=await env.own(provider),
        timeout=10,
    )
    relation: tr.TherapeuticRelation = reply.relation
    return relation


async def check(env: Env, provider: str, day: D | None, patient: str = PATIENT) -> tr.CheckRelationResponse:
    reply: tr.CheckRelationResponse = await env.hub.relations.CheckRelation(
        tr.CheckRelationRequest(provider_inami=provider, patient_niss=patient, date=pdate(day)), timeout=10
    )
    return reply


async def test_check_matrix_proofs_dates_revocation(env: Env) -> None:
    """Every registrable proof × a date before / inside / after the period × revoked or not."""
    start, end = D(2025, 1, 1), D(2025, 6, 30)
    providers = []
    for i, proof in enumerate(PROOFS):
        for revoked in (False, True):
            inami = f"1{20000 + i * 2 + revoked:05d}"
            inami = inami + f"{97 - int(inami) % 97:02d}003"
            await env.provider(inami)
            relation = await register(env, inami, proof, start, end)
            if revoked:
                await env.client.relations.RevokeRelation(
                    tr.RevokeRelationRequest(
                        relation_id=relation.relation_id, end_date=pdate(D(2025, 3, 31))
                    ),
                    metadata=await env.own(inami),
                    timeout=10,
                )
            providers.append((inami, proof, revoked))
    for (inami, proof, revoked), (day, inside) in itertools.product(
        providers,
        [(D(2024, 12, 31), False), (start, True), (D(2025, 3, 31), True), (D(2025, 4, 1), None), (end, None),
         (D(2025, 7, 1), False)],
    ):  # fmt: skip
        expected = inside if inside is not None else not revoked
        reply = await check(env, inami, day)
        assert reply.exists is expected, (inami, proof, revoked, day)
        if expected:
            assert reply.relation.proof == proof
            assert reply.relation.provider_inami == inami
        else:
            assert not reply.HasField("relation")
    # Another patient and another provider never pass.
    assert not (await check(env, providers[0][0], start, patient=PATIENT2)).exists
    await env.provider(GP2)
    assert not (await check(env, GP2, start)).exists


async def test_register_defaults_duplicates_and_strongest(env: Env) -> None:
    await env.provider(GP)
    first = await register(env, GP, tr.RELATION_PROOF_PATIENT_DECLARATION, None)
    assert from_pdate(first.period.start) == TODAY
    assert not first.period.HasField("end")
    same = await register(env, GP, tr.RELATION_PROOF_PATIENT_DECLARATION, TODAY + dt.timedelta(days=3))
    assert same.relation_id == first.relation_id  # covered: not duplicated
    eid = await register(env, GP, tr.RELATION_PROOF_EID_READ, TODAY)
    assert eid.relation_id != first.relation_id
    reply = await check(env, GP, None)
    assert reply.relation.relation_id == eid.relation_id  # the strongest proof


async def test_medical_house_relation_counts_for_its_members_on_the_date(env: Env) -> None:
    await env.provider(GP)
    await env.provider(GP2)
    await env.organisation(MEDICAL_HOUSE, [(GP, D(2024, 1, 1), D(2025, 6, 30))])
    await env.relations.TransferDmgRelation(
        tr.TransferDmgRelationRequest(
            patient_niss=PATIENT, new_holder_inami=MEDICAL_HOUSE, start_date=pdate(D(2024, 6, 1)),
            source_reference="100:mh-1",
        ),
        timeout=10,
    )  # fmt: skip
    member = await check(env, GP, D(2025, 1, 10))
    assert member.exists
    assert member.relation.provider_inami == MEDICAL_HOUSE
    assert member.relation.proof == tr.RELATION_PROOF_DMG
    assert not (await check(env, GP, D(2025, 7, 1))).exists  # membership ended
    assert not (await check(env, GP, D(2024, 5, 31))).exists  # before the DMG
    assert not (await check(env, GP2, D(2025, 1, 10))).exists  # not a member
    # The member's own relation is preferred over the organisation's with the same strength order.
    own = await register(env, GP, tr.RELATION_PROOF_EID_READ, D(2025, 1, 1))
    assert (await check(env, GP, D(2025, 1, 10))).relation.relation_id != own.relation_id  # DMG is stronger


async def test_revoke_never_lengthens_and_unknown_relation(env: Env) -> None:
    await env.provider(GP)
    rel = await register(env, GP, tr.RELATION_PROOF_EID_READ, D(2025, 1, 1), D(2025, 2, 28))
    gp = await env.own(GP)
    later = await env.client.relations.RevokeRelation(
        tr.RevokeRelationRequest(relation_id=rel.relation_id, end_date=pdate(D(2025, 12, 31))),
        metadata=gp,
        timeout=10,
    )
    assert from_pdate(later.relation.period.end) == D(2025, 2, 28)
    today = await env.client.relations.RevokeRelation(
        tr.RevokeRelationRequest(relation_id=rel.relation_id), metadata=gp, timeout=10
    )
    assert from_pdate(today.relation.period.end) == D(2025, 2, 28)
    open_rel = await register(env, GP, tr.RELATION_PROOF_ISI_PLUS_READ, D(2025, 1, 1))
    now = await env.client.relations.RevokeRelation(
        tr.RevokeRelationRequest(relation_id=open_rel.relation_id), metadata=gp, timeout=10
    )
    assert from_pdate(now.relation.period.end) == TODAY
    too_early = await rpc_error(
        env.client.relations.RevokeRelation(
            tr.RevokeRelationRequest(relation_id=open_rel.relation_id, end_date=pdate(D(2024, 12, 30))),
            metadata=gp,
            timeout=10,
        )
    )
    assert (too_early.status, too_early.code) == (grpc.StatusCode.INVALID_ARGUMENT, 113)
    unknown = await rpc_error(
        env.client.relations.RevokeRelation(
            tr.RevokeRelationRequest(relation_id="x"), metadata=gp, timeout=10
        )
    )
    assert (unknown.status, unknown.reason) == (grpc.StatusCode.NOT_FOUND, "RELATION_UNKNOWN")


async def test_list_is_filtered_and_paginated(env: Env) -> None:
    await env.provider(GP)
    await env.provider(GP2)
    made = [
        await register(env, GP, tr.RELATION_PROOF_EID_READ, D(2025, 1, m), D(2025, 1, m + 1))
        for m in (1, 2, 3)
    ]
    await register(env, GP, tr.RELATION_PROOF_EID_READ, D(2025, 1, 1), D(2025, 1, 1), patient=PATIENT2)
    await register(env, GP2, tr.RELATION_PROOF_EID_READ, D(2025, 1, 1))
    gp = await env.own(GP)
    seen, token = [], ""
    while True:
        page = await env.client.relations.ListRelations(
            tr.ListRelationsRequest(patient_niss=PATIENT, page_size=2, page_token=token),  # its own
            metadata=gp,
            timeout=10,
        )
        seen += [r.relation_id for r in page.relations]
        token = page.next_page_token
        if not token:
            break
    assert seen == [r.relation_id for r in made]
    by_patient = await env.relations.ListRelations(tr.ListRelationsRequest(patient_niss=PATIENT), timeout=10)
    assert len(by_patient.relations) == 4
    valid = await env.client.relations.ListRelations(
        tr.ListRelationsRequest(provider_inami=GP, valid_on=pdate(D(2025, 1, 2))), metadata=gp, timeout=10
    )
    assert {r.patient_niss for r in valid.relations} == {PATIENT}
    none = await rpc_error(env.relations.ListRelations(tr.ListRelationsRequest(), timeout=10))
    assert none.code == 100
    bad_token = await rpc_error(
        env.client.relations.ListRelations(tr.ListRelationsRequest(page_token="%%%"), metadata=gp, timeout=10)
    )
    assert [(v.field, v.code) for v in bad_token.violations] == [("page_token", 111)]


async def transfer(
    env: Env, new: str, previous: str, start: D, reference: str
) -> tr.TransferDmgRelationResponse:
    reply: tr.TransferDmgRelationResponse = await env.relations.TransferDmgRelation(
        tr.TransferDmgRelationRequest(
            patient_niss=PATIENT,
            new_holder_inami=new,
            previous_holder_inami=previous,
            start_date=pdate(start),
            source_reference=reference,
        ),
        timeout=10,
    )
    return reply


async def test_dmg_relation_moves_and_is_idempotent(env: Env) -> None:
    first = await transfer(env, GP, "", D(2013, 8, 22), "100:ref-a")
    assert not first.replayed
    assert not first.HasField("ended_relation")
    assert first.new_relation.proof == tr.RELATION_PROOF_DMG
    assert from_pdate(first.new_relation.period.start) == D(2013, 8, 22)

    moved = await transfer(env, GP2, GP, D(2014, 3, 4), "100:ref-b")
    assert moved.new_relation.provider_inami == GP2
    assert from_pdate(moved.new_relation.period.start) == D(2014, 3, 4)
    assert moved.ended_relation.relation_id == first.new_relation.relation_id
    assert from_pdate(moved.ended_relation.period.end) == D(2014, 3, 3)
    assert (await check(env, GP, D(2014, 3, 3))).exists
    assert not (await check(env, GP, D(2014, 3, 4))).exists
    assert (await check(env, GP2, D(2014, 3, 4))).exists
    assert not (await check(env, GP2, D(2014, 3, 3))).exists

    replay = await transfer(env, GP2, GP, D(2014, 3, 4), "100:ref-b")
    assert replay.replayed
    assert replay.new_relation.relation_id == moved.new_relation.relation_id
    assert replay.ended_relation.relation_id == moved.ended_relation.relation_id
    listed = await env.relations.ListRelations(tr.ListRelationsRequest(patient_niss=PATIENT), timeout=10)
    assert len(listed.relations) == 2  # the replay created nothing

    # An unrelated holder with an open DMG relation is closed too: one DMG holder per day.
    back = await transfer(env, GP, "", D(2015, 1, 10), "300:ref-c")
    assert back.ended_relation.provider_inami == GP2
    assert from_pdate(back.ended_relation.period.end) == D(2015, 1, 9)
    assert (await check(env, GP, D(2015, 1, 10))).relation.proof == tr.RELATION_PROOF_DMG


async def test_registering_a_dmg_relation_is_refused(env: Env) -> None:
    await env.provider(GP)
    error = await rpc_error(register(env, GP, tr.RELATION_PROOF_DMG, TODAY))
    assert error.status == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.code) for v in error.violations] == [("proof", 130)]


@pytest.mark.parametrize(
    ("provider", "patient", "proof", "violations"),
    [
        ("", PATIENT, tr.RELATION_PROOF_EID_READ, [("provider_inami", 100)]),
        ("123", PATIENT, tr.RELATION_PROOF_EID_READ, [("provider_inami", 111)]),
        (GP[:6] + "00" + GP[8:], PATIENT, tr.RELATION_PROOF_EID_READ, [("provider_inami", 112)]),
        (GP, PATIENT[:9] + "00", tr.RELATION_PROOF_EID_READ, [("patient_niss", 112)]),
        (GP, "", 0, [("patient_niss", 100), ("proof", 100)]),
    ],
)
async def test_register_validation_codes_and_nothing_written(
    env: Env, provider: str, patient: str, proof: int, violations: list[tuple[str, int]]
) -> None:
    await env.provider(GP)
    error = await rpc_error(
        env.client.relations.RegisterRelation(
            tr.RegisterRelationRequest(provider_inami=provider, patient_niss=patient, proof=proof),  # type: ignore[arg-type]
            metadata=await env.own(GP),
            timeout=10,
        )
    )
    assert error.status == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.code) for v in error.violations] == violations
    listed = await env.relations.ListRelations(tr.ListRelationsRequest(patient_niss=PATIENT), timeout=10)
    assert list(listed.relations) == []


async def test_unknown_provider_and_bad_transfer(env: Env) -> None:
    # Only the administrator can even try: a provider unknown to the cadastre cannot log in.
    unknown = await rpc_error(
        env.relations.RegisterRelation(
            tr.RegisterRelationRequest(
                provider_inami=SPECIALIST, patient_niss=PATIENT, proof=tr.RELATION_PROOF_EID_READ
            ),
            timeout=10,
        )
    )
    assert (unknown.status, unknown.reason, unknown.code) == (
        grpc.StatusCode.NOT_FOUND,
        "PROVIDER_UNKNOWN",
        141,
    )
    error = await rpc_error(
        env.relations.TransferDmgRelation(tr.TransferDmgRelationRequest(new_holder_inami=GP), timeout=10)
    )
    assert {(v.field, v.code) for v in error.violations} == {
        ("patient_niss", 100),
        ("start_date", 100),
        ("source_reference", 100),
    }
