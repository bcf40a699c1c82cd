"""The authorization matrix of SPEC §3, row by row, through the real eHealth, hub and OA nodes; mandates,
therapeutic relations, requester mismatch, unknown patients and member-number routing."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlmodel import select

from hub.models import AuditRecord
from mycarenet_core.dates import to_proto
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_service_pb2 as pub
from mycarenet_core.gen.mycarenet.dmg.v1 import mailbox_service_pb2 as mbx
from mycarenet_core.gen.mycarenet.ehealth.v1 import auth_pb2, mandate_pb2
from mycarenet_core.identifiers import make_niss
from tests.hub.helpers import consult_request, notify_request, rejected
from tests.hub.mesh import TODAY, Mesh, Person, bearer, running_mesh


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    async with running_mesh(tmp_path_factory.mktemp("authz"), insurers=("100", "200")) as running:
        yield running


pytestmark = pytest.mark.asyncio(loop_scope="module")


async def token_of(mesh: Mesh, name: str) -> tuple[tuple[str, str], ...]:
    return bearer(await mesh.login(mesh.people[name]))


@pytest.mark.parametrize(
    ("who", "allowed"),
    [
        ("gp_a", True),
        ("trainee", True),
        ("specialist", True),
        ("dentist", True),
        ("pharmacist", False),
        ("gp_nonaccredited", True),  # every physician may consult (seed 000 §2.1.1, issue 14 correction 1)
    ],
)
async def test_consult_matrix(mesh: Mesh, who: str, allowed: bool) -> None:
    request = consult_request(mesh.members["p100"].niss, reference=f"consult-{who}")
    if allowed:
        answer = await mesh.dmg.ConsultDmg(request, metadata=await token_of(mesh, who), timeout=5)
        assert answer.insurer_code == "100"
        assert answer.requester_reference == f"consult-{who}"
        return
    error = await rejected(mesh.dmg.ConsultDmg(request, metadata=await token_of(mesh, who), timeout=5))
    assert (error.status.name, error.reason, error.code) == (
        "PERMISSION_DENIED",
        "PROVIDER_NOT_ENTITLED",
        140,
    )
    assert error.metadata["requester_reference"] == f"consult-{who}"


async def test_notify_matrix(mesh: Mesh) -> None:
    p200 = mesh.members["p200"].niss
    # a specialist or a dentist may not notify
    for who in ("specialist", "dentist"):
        error = await rejected(
            mesh.dmg.NotifyDmg(
                notify_request(p200, f"n-{who}"), metadata=await token_of(mesh, who), timeout=5
            )
        )
        assert (error.status.name, error.code) == ("PERMISSION_DENIED", 140)
    # a GP in training must name a supervisor ...
    error = await rejected(
        mesh.dmg.NotifyDmg(
            notify_request(p200, "n-t0", code="101076"), metadata=await token_of(mesh, "trainee"), timeout=5
        )
    )
    assert (error.code, error.violations[0].field) == (100, "supervisor_inami")
    # ... and then the supervisor becomes the holder
    answer = await mesh.dmg.NotifyDmg(
        notify_request(p200, "n-t1", code="101076", supervisor_inami=mesh.people["gp_a"].inami),
        metadata=await token_of(mesh, "trainee"),
        timeout=5,
    )
    assert answer.holder.inami == mesh.people["gp_a"].inami
    # an accredited GP who is not enrolled gets the OA's 163, unchanged
    mesh_gp_c = mesh.people["gp_c"]
    await mesh.relate(mesh_gp_c, mesh.members["p100"])
    error = await rejected(
        mesh.dmg.NotifyDmg(
            notify_request(mesh.members["p100"].niss, "n-c"), metadata=await token_of(mesh, "gp_c"), timeout=5
        )
    )
    assert 163 in error.codes
    # an enrolled GP notifies; a replay passes through; the DMG relation moves at eHealth
    p100 = mesh.members["p100"].niss
    gp_b = await token_of(mesh, "gp_b")
    answer = await mesh.dmg.NotifyDmg(notify_request(p100, "n-b"), metadata=gp_b, timeout=5)
    assert (answer.holder.inami, answer.insurer_code) == (mesh.people["gp_b"].inami, "100")
    assert not answer.replayed
    again = await mesh.dmg.NotifyDmg(notify_request(p100, "n-b"), metadata=gp_b, timeout=5)
    assert again.replayed
    from mycarenet_core.gen.mycarenet.ehealth.v1 import therapeutic_relation_pb2 as tr
    from mycarenet_core.gen.mycarenet.ehealth.v1 import therapeutic_relation_pb2_grpc

    # The move reaches eHealth through the insurer's holder-change feed, moments later.
    relations = therapeutic_relation_pb2_grpc.TherapeuticRelationServiceStub(mesh.ehealth_admin)
    deadline = time.monotonic() + 10
    while True:
        listed = await relations.ListRelations(
            tr.ListRelationsRequest(patient_niss=p100, valid_on=to_proto(TODAY)), timeout=5
        )
        dmg = {(r.provider_inami, r.proof) for r in listed.relations if r.proof == tr.RELATION_PROOF_DMG}
        if dmg or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert dmg == {(mesh.people["gp_b"].inami, tr.RELATION_PROOF_DMG)}


@pytest.mark.parametrize(("who", "allowed"), [("gp_a", True), ("trainee", False), ("specialist", False)])
async def test_patient_list_matrix(mesh: Mesh, who: str, allowed: bool) -> None:
    request = mbx.PostPatientListRequest(requester_reference=f"l-{who}", reference_date=to_proto(TODAY))
    if allowed:
        answer = await mesh.mailbox.PostPatientList(request, metadata=await token_of(mesh, who), timeout=5)
        assert answer.technical_ack.reference
        return
    error = await rejected(
        mesh.mailbox.PostPatientList(request, metadata=await token_of(mesh, who), timeout=5)
    )
    assert (error.status.name, error.code) == ("PERMISSION_DENIED", 140)


async def test_enrol_matrix_and_already_enrolled(mesh: Mesh) -> None:
    request = pub.EnrolDmgRequest(
        requester_reference="e-1",
        bank_account=common_pb2.BankAccount(iban="BE68539007547034", bic="GEBABEBB", holder_name="C"),
    )
    error = await rejected(mesh.dmg.EnrolDmg(request, metadata=await token_of(mesh, "dentist"), timeout=5))
    assert error.code == 140
    gp_c = await token_of(mesh, "gp_c")
    first = await mesh.dmg.EnrolDmg(request, metadata=gp_c, timeout=5)
    assert {(o.insurer_code, o.status) for o in first.outcomes} == {
        ("100", pub.ENROLMENT_STATUS_ENROLLED),
        ("200", pub.ENROLMENT_STATUS_ENROLLED),
    }
    again = await mesh.dmg.EnrolDmg(request, metadata=gp_c, timeout=5)
    assert {(o.insurer_code, o.status, o.error_code) for o in again.outcomes} == {
        ("100", pub.ENROLMENT_STATUS_ALREADY_ENROLLED, 168),
        ("200", pub.ENROLMENT_STATUS_ALREADY_ENROLLED, 168),
    }
    assert all(o.enrolled_since.year == TODAY.year for o in again.outcomes)
    # the insurers not served by this mesh fail alone, the others answer
    some = pub.EnrolDmgRequest(
        requester_reference="e-2", insurer_codes=["200", "300"], bank_account=request.bank_account
    )
    mixed = await mesh.dmg.EnrolDmg(some, metadata=gp_c, timeout=5)
    assert [(o.insurer_code, o.status) for o in mixed.outcomes] == [
        ("200", pub.ENROLMENT_STATUS_ALREADY_ENROLLED),
        ("300", pub.ENROLMENT_STATUS_FAILED),
    ]


async def test_no_therapeutic_relation_is_refused_before_the_oa(mesh: Mesh) -> None:
    stranger = make_niss(dt.date(1960, 1, 1), 501)
    spec = mesh.members["p200"]
    from tests.hub.mesh import MemberSpec

    await mesh.upsert_members(
        "200", [MemberSpec("stranger", stranger, {"200": [(dt.date(2000, 1, 1), None)]}, "S1")]
    )
    error = await rejected(
        mesh.dmg.ConsultDmg(consult_request(stranger), metadata=await token_of(mesh, "gp_a"), timeout=5)
    )
    assert (error.status.name, error.reason, error.code) == (
        "PERMISSION_DENIED",
        "NO_THERAPEUTIC_RELATION",
        140,
    )
    assert spec.niss != stranger


async def test_requester_inami_must_match_the_session(mesh: Mesh) -> None:
    request = consult_request(mesh.members["p100"].niss, requester_inami=mesh.people["gp_b"].inami)
    error = await rejected(mesh.dmg.ConsultDmg(request, metadata=await token_of(mesh, "gp_a"), timeout=5))
    assert (error.status.name, error.code, error.violations[0].field) == (
        "INVALID_ARGUMENT",
        156,
        "requester_inami",
    )
    request = consult_request(mesh.members["p100"].niss, requester_inami=mesh.people["gp_a"].inami)
    await mesh.dmg.ConsultDmg(request, metadata=await token_of(mesh, "gp_a"), timeout=5)


async def test_unknown_patient_is_120_at_once_and_member_number_routes(mesh: Mesh) -> None:
    gp = await token_of(mesh, "gp_a")
    unknown = make_niss(dt.date(1950, 2, 2), 777)
    error = await rejected(mesh.dmg.ConsultDmg(consult_request(unknown), metadata=gp, timeout=5))
    assert (error.status.name, error.reason, error.code) == ("NOT_FOUND", "PATIENT_UNKNOWN", 120)
    assert error.violations[0].field == "patient.niss"
    by_member = pub.ConsultDmgRequest(
        requester_reference="m-1",
        patient=common_pb2.PatientSelector(
            member=common_pb2.MemberNumber(mutuality_code="200", registration_number="R2000001")
        ),
        request_date=to_proto(TODAY),
    )
    answer = await mesh.dmg.ConsultDmg(by_member, metadata=gp, timeout=5)
    assert (answer.insurer_code, answer.patient.niss) == ("200", mesh.members["p200"].niss)
    by_member.patient.member.registration_number = "NOPE1"
    error = await rejected(mesh.dmg.ConsultDmg(by_member, metadata=gp, timeout=5))
    assert error.code == 122


async def test_a_mandated_secretary_acts_for_the_principal_and_is_audited(mesh: Mesh) -> None:
    gp_a = mesh.people["gp_a"]
    secretary = Person("secretary", "", make_niss(dt.date(1985, 5, 5), 601))
    await mesh.register_person(secretary)
    mandate_id = await mesh.mandate(
        gp_a, secretary.niss, [mandate_pb2.MANDATED_SERVICE_DMG_CONSULT, mandate_pb2.MANDATED_SERVICE_MAILBOX]
    )
    token = await mesh.login(
        secretary, kind=auth_pb2.SUBJECT_KIND_PERSON, subject_id=secretary.niss, principal=gp_a.inami
    )
    answer = await mesh.dmg.ConsultDmg(
        consult_request(mesh.members["p100"].niss, reference="by-secretary"),
        metadata=bearer(token),
        timeout=5,
    )
    assert answer.insurer_code == "100"
    error = await rejected(
        mesh.dmg.NotifyDmg(
            notify_request(mesh.members["p100"].niss, "sec-n"), metadata=bearer(token), timeout=5
        )
    )
    assert (error.reason, error.code) == ("MANDATE_NOT_COVERING", 140)
    assert mesh.hub is not None
    await mesh.hub.core.audit.flush()
    async with mesh.hub.core.sessions() as session:
        rows = (
            (
                await session.execute(
                    select(AuditRecord).where(AuditRecord.requester_reference == "by-secretary")
                )
            )
            .scalars()
            .all()
        )
    assert [(r.requester_inami, r.executor_id, r.mandate_id, r.outcome, r.insurer_code) for r in rows] == [
        (gp_a.inami, secretary.niss, mandate_id, "OK", "100")
    ]
