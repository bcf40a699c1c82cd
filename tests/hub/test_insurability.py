"""MemberData and the pharmacist's rights consultation with payment commitment, through the hub to the insurer
(seed 003 §5, §6; seed 001 annex 2): who may ask, the periods and statuses answered, the commitment and its
agreement number checked by the trusted third party, and the refusals."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import grpc
import pytest

from mycarenet_core.dates import to_proto
from mycarenet_core.errors import parse_rpc_error
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.insurability.v1 import insurability_pb2 as ins
from mycarenet_core.gen.mycarenet.insurability.v1 import insurability_service_pb2 as pub
from mycarenet_core.gen.mycarenet.insurability.v1 import insurability_service_pb2_grpc as pub_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import membership_service_pb2 as ms
from mycarenet_core.gen.mycarenet.oa.v1 import membership_service_pb2_grpc as ms_grpc
from mycarenet_core.gen.mycarenet.oa.v1 import oa_insurability_service_pb2 as oa_ins
from mycarenet_core.gen.mycarenet.oa.v1 import oa_insurability_service_pb2_grpc as oa_ins_grpc
from tests.hub.mesh import PHARMACY, TODAY, Mesh, bearer, running_mesh

D = dt.date
PREFERENTIAL = ins.InsurabilityStatus(ct1="111", ct2="111", preferential_rate=True)
GENERAL = ins.InsurabilityStatus(ct1="110", ct2="110")


def period(start: dt.date, end: dt.date | None) -> common_pb2.Period:
    return common_pb2.Period(start=to_proto(start), end=to_proto(end))


async def _give_statuses(mesh: Mesh) -> str:
    """p100 gets two adjacent 110/110 periods (joined), then a preferential one, a palliative status and a
    hospital stay; returns its NISS."""
    spec = mesh.members["p100"]
    stub = ms_grpc.MembershipServiceStub(mesh.channel(mesh.oa_ports["100"], "admin"))
    await stub.UpsertMembers(
        ms.UpsertMembersRequest(
            members=[
                ms.Member(
                    patient=common_pb2.Patient(
                        niss=spec.niss,
                        member=common_pb2.MemberNumber(
                            mutuality_code="100", registration_number=spec.registration
                        ),
                    ),
                    affiliations=[period(D(2000, 1, 1), None)],
                    insurability=[
                        ins.InsurabilityPeriod(period=period(D(2025, 1, 1), D(2025, 3, 20)), status=GENERAL),
                        ins.InsurabilityPeriod(period=period(D(2025, 3, 21), D(2025, 3, 31)), status=GENERAL),
                        ins.InsurabilityPeriod(
                            period=period(D(2025, 4, 1), D(2025, 12, 31)), status=PREFERENTIAL
                        ),
                    ],
                    care_statuses=[
                        ins.CareStatusPeriod(
                            kind=ins.CARE_STATUS_KIND_PALLIATIVE, period=period(D(2025, 2, 1), None)
                        ),
                        ins.CareStatusPeriod(
                            kind=ins.CARE_STATUS_KIND_HOSPITALISED,
                            period=period(D(2025, 1, 5), D(2025, 1, 9)),
                        ),
                    ],
                )
            ]
        ),
        timeout=10,
    )
    return spec.niss


def _refusal(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, list[tuple[str, int]]]:
    parsed = parse_rpc_error(error)
    return parsed.status, sorted((v.field, v.code) for v in parsed.violations)


async def test_member_data_and_the_payment_commitment_through_the_hub(tmp_path: Path) -> None:
    async with running_mesh(tmp_path, insurers=("100", "200")) as mesh:
        niss = await _give_statuses(mesh)
        hub = pub_grpc.InsurabilityServiceStub(mesh.channel(mesh.hub_port))
        pharmacist = bearer(await mesh.login_pharmacy())
        # The back office reads back what it wrote.
        admin = ms_grpc.MembershipServiceStub(mesh.channel(mesh.oa_ports["100"], "admin"))
        kept = (
            await admin.GetMember(
                ms.GetMemberRequest(patient=common_pb2.PatientSelector(niss=niss)), timeout=10
            )
        ).member
        assert [(p.period.end.month, p.period.end.day, p.status.ct1) for p in kept.insurability] == [
            (3, 20, "110"),
            (3, 31, "110"),
            (12, 31, "111"),
        ]
        assert [s.kind for s in kept.care_statuses] == [
            ins.CARE_STATUS_KIND_HOSPITALISED,
            ins.CARE_STATUS_KIND_PALLIATIVE,
        ]

        # The pharmacist's rights at today's dispensing: two adjacent 110/110 periods joined, the
        # preferential period not (another status): coverage to 31 March, not the + 30 days cap (3 April).
        rights = await hub.ConsultRights(
            pub.ConsultRightsRequest(
                requester_reference="rx-1",
                patient=common_pb2.PatientSelector(niss=niss),
                dispensing_date=to_proto(TODAY),
            ),
            metadata=pharmacist,
            timeout=10,
        )
        assert rights.requester_reference == "rx-1"
        commitment = rights.commitment
        assert (commitment.coverage.start, commitment.coverage.end) == (
            to_proto(TODAY),
            to_proto(D(2025, 3, 31)),
        )
        assert commitment.status == GENERAL
        assert commitment.provider_inami == PHARMACY  # the pharmacy, requester of record (seed 003 §5.1)
        assert commitment.pharmacist_inami == mesh.people["pharmacist"].inami
        assert commitment.consulted_on == to_proto(TODAY)
        assert commitment.agreement_number.startswith("100-")
        data = rights.member_data
        assert data.insurer_code == "100"
        assert [(p.period.start.day, p.period.end.day, p.status.ct1) for p in data.insurability] == [
            (1, 20, "110"),
            (21, 31, "110"),
        ]  # the period holding the date, and its neighbours (none before it)
        assert [s.kind for s in data.care_statuses] == [ins.CARE_STATUS_KIND_PALLIATIVE]  # not the old stay

        # The trusted third party checks the number against the invoice's fields, never sees the key.
        verify = oa_ins_grpc.OaInsurabilityServiceStub(mesh.channel(mesh.oa_ports["100"], "admin"))
        fields = oa_ins.VerifyAgreementRequest(
            agreement_number=commitment.agreement_number,
            niss=niss,
            provider_inami=commitment.provider_inami,
            dispensing_date=commitment.dispensing_date,
            coverage=commitment.coverage,
            status=commitment.status,
        )
        assert (await verify.VerifyAgreement(fields, timeout=10)).genuine
        forged = oa_ins.VerifyAgreementRequest()
        forged.CopyFrom(fields)
        forged.coverage.end.CopyFrom(common_pb2.Date(year=2025, month=4, day=3))
        assert not (await verify.VerifyAgreement(forged, timeout=10)).genuine
        other = oa_ins_grpc.OaInsurabilityServiceStub(mesh.channel(mesh.oa_ports["200"], "admin"))
        assert not (await other.VerifyAgreement(fields, timeout=10)).genuine  # another insurer's key
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await oa_ins_grpc.OaInsurabilityServiceStub(
                mesh.channel(mesh.oa_ports["100"], "hub")
            ).VerifyAgreement(fields, timeout=10)
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED

        # A dispensing in the preferential period: committed on that status, to the end of the cap.
        later = await hub.ConsultRights(
            pub.ConsultRightsRequest(
                patient=common_pb2.PatientSelector(
                    member=common_pb2.MemberNumber(
                        mutuality_code="100", registration_number=mesh.members["p100"].registration
                    )
                ),
                dispensing_date=to_proto(D(2025, 1, 2)),
            ),
            metadata=pharmacist,
            timeout=10,
        )
        assert later.commitment.coverage.end == to_proto(D(2025, 2, 1))  # + 30 days, by member number
        assert [s.kind for s in later.member_data.care_statuses] == []

        # MemberData for a dentist; the default status of a member with no insurability recorded (p200).
        dentist = bearer(await mesh.login(mesh.people["dentist"]))
        p200 = await hub.GetMemberData(
            pub.GetMemberDataRequest(patient=common_pb2.PatientSelector(niss=mesh.members["p200"].niss)),
            metadata=dentist,
            timeout=10,
        )
        assert p200.member_data.insurer_code == "200"
        assert [(p.period.start, p.period.end, p.status) for p in p200.member_data.insurability] == [
            (to_proto(D(2000, 1, 1)), to_proto(D(2026, 12, 31)), GENERAL)
        ]
        hospital = await hub.GetMemberData(
            pub.GetMemberDataRequest(
                patient=common_pb2.PatientSelector(niss=niss), date=to_proto(D(2025, 1, 7))
            ),
            metadata=dentist,
            timeout=10,
        )
        assert [s.kind for s in hospital.member_data.care_statuses] == [ins.CARE_STATUS_KIND_HOSPITALISED]


async def test_refusals_change_nothing_and_name_the_field(tmp_path: Path) -> None:
    async with running_mesh(tmp_path, insurers=("100",)) as mesh:
        niss = await _give_statuses(mesh)
        hub = pub_grpc.InsurabilityServiceStub(mesh.channel(mesh.hub_port))
        pharmacist = bearer(await mesh.login_pharmacy())
        gp = bearer(await mesh.login(mesh.people["gp_a"]))
        patient = common_pb2.PatientSelector(niss=niss)

        # The commitment is the pharmacists' (trust table): a GP may read MemberData, not ask for one.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await hub.ConsultRights(
                pub.ConsultRightsRequest(patient=patient, dispensing_date=to_proto(TODAY)),
                metadata=gp,
                timeout=10,
            )
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        # A pharmacist consults only in a pharmacy's session (seed 003 §8.2.2.1, §11.3.1), never alone.
        alone = bearer(await mesh.login(mesh.people["pharmacist"]))
        for call in (
            hub.ConsultRights(
                pub.ConsultRightsRequest(patient=patient, dispensing_date=to_proto(TODAY)), metadata=alone
            ),
            hub.GetMemberData(pub.GetMemberDataRequest(patient=patient), metadata=alone),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as own_session:
                await call
            assert own_session.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert (
            await hub.GetMemberData(pub.GetMemberDataRequest(patient=patient), metadata=gp, timeout=10)
        ).member_data
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await hub.GetMemberData(pub.GetMemberDataRequest(patient=patient), timeout=10)
        assert anonymous.value.code() is grpc.StatusCode.UNAUTHENTICATED

        cases = [
            (
                pub.ConsultRightsRequest(
                    patient=patient, dispensing_date=to_proto(TODAY + dt.timedelta(days=1))
                ),
                [("dispensing_date", 146)],
            ),
            (
                pub.ConsultRightsRequest(patient=patient, dispensing_date=to_proto(D(2022, 1, 1))),
                [("dispensing_date", 145)],
            ),
            (pub.ConsultRightsRequest(patient=patient), [("dispensing_date", 100)]),
            (
                pub.ConsultRightsRequest(
                    patient=common_pb2.PatientSelector(niss="85073003329"), dispensing_date=to_proto(TODAY)
                ),
                [("patient.niss", 112)],
            ),
            (
                pub.ConsultRightsRequest(
                    requester_reference="r" * 5000, patient=patient, dispensing_date=to_proto(TODAY)
                ),
                [("requester_reference", 111)],
            ),
        ]
        for request, violations in cases:
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await hub.ConsultRights(request, metadata=pharmacist, timeout=10)
            assert _refusal(bad.value) == (grpc.StatusCode.INVALID_ARGUMENT, violations), request

        # No right on the dispensing date: the member data, and no commitment (seed 003 §5.2).
        gap = ms_grpc.MembershipServiceStub(mesh.channel(mesh.oa_ports["100"], "admin"))
        await gap.UpsertMembers(
            ms.UpsertMembersRequest(
                members=[
                    ms.Member(
                        patient=common_pb2.Patient(
                            niss=niss,
                            member=common_pb2.MemberNumber(
                                mutuality_code="100", registration_number=mesh.members["p100"].registration
                            ),
                        ),
                        affiliations=[period(D(2000, 1, 1), None)],
                        insurability=[
                            ins.InsurabilityPeriod(
                                period=period(D(2024, 1, 1), D(2024, 12, 31)), status=GENERAL
                            )
                        ],
                    )
                ]
            ),
            timeout=10,
        )
        none = await hub.ConsultRights(
            pub.ConsultRightsRequest(patient=patient, dispensing_date=to_proto(TODAY)),
            metadata=pharmacist,
            timeout=10,
        )
        assert not none.HasField("commitment")
        assert [p.period.end for p in none.member_data.insurability] == [to_proto(D(2024, 12, 31))]

        # A bad upsert of statuses is refused whole, naming each field.
        with pytest.raises(grpc.aio.AioRpcError) as bad_upsert:
            await gap.UpsertMembers(
                ms.UpsertMembersRequest(
                    members=[
                        ms.Member(
                            patient=common_pb2.Patient(
                                niss=niss,
                                member=common_pb2.MemberNumber(
                                    mutuality_code="100",
                                    registration_number=mesh.members["p100"].registration,
                                ),
                            ),
                            affiliations=[period(D(2000, 1, 1), None)],
                            insurability=[
                                ins.InsurabilityPeriod(
                                    period=period(D(2025, 1, 1), D(2025, 6, 30)), status=GENERAL
                                ),
                                ins.InsurabilityPeriod(
                                    period=period(D(2025, 6, 1), D(2025, 12, 31)),
                                    status=ins.InsurabilityStatus(ct1="1x0", ct2="110"),
                                ),
                            ],
                            care_statuses=[ins.CareStatusPeriod(period=period(D(2025, 1, 1), None))],
                        )
                    ]
                ),
                timeout=10,
            )
        assert _refusal(bad_upsert.value) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            [
                ("members[0].care_statuses[0].kind", 130),
                ("members[0].insurability", 113),
                ("members[0].insurability[1].status.ct1", 111),
            ],
        )
        still = await hub.ConsultRights(
            pub.ConsultRightsRequest(patient=patient, dispensing_date=to_proto(TODAY)),
            metadata=pharmacist,
            timeout=10,
        )
        assert not still.HasField("commitment")  # the refused upsert changed nothing


async def test_the_insurer_validates_a_pharmacys_invoice_lines(tmp_path: Path) -> None:
    async with running_mesh(tmp_path, insurers=("100",)) as mesh:
        niss = await _give_statuses(mesh)
        hub = pub_grpc.InsurabilityServiceStub(mesh.channel(mesh.hub_port))
        rights = await hub.ConsultRights(
            pub.ConsultRightsRequest(
                patient=common_pb2.PatientSelector(niss=niss), dispensing_date=to_proto(TODAY)
            ),
            metadata=bearer(await mesh.login_pharmacy()),
            timeout=10,
        )
        commitment = rights.commitment
        # The insurer corrects its data afterwards: the patient had the preferential rate all year.
        members = ms_grpc.MembershipServiceStub(mesh.channel(mesh.oa_ports["100"], "admin"))
        spec = mesh.members["p100"]
        await members.UpsertMembers(
            ms.UpsertMembersRequest(
                members=[
                    ms.Member(
                        patient=common_pb2.Patient(
                            niss=niss,
                            member=common_pb2.MemberNumber(
                                mutuality_code="100", registration_number=spec.registration
                            ),
                        ),
                        affiliations=[period(D(2000, 1, 1), None)],
                        insurability=[
                            ins.InsurabilityPeriod(
                                period=period(D(2025, 1, 1), D(2025, 12, 31)), status=PREFERENTIAL
                            )
                        ],
                    )
                ]
            ),
            timeout=10,
        )
        forged = ins.PaymentCommitment()
        forged.CopyFrom(commitment)
        forged.agreement_number = commitment.agreement_number[:-2] + "AA"

        def line(line_id: str, **changes: object) -> oa_ins.TarificationLine:
            fields: dict[str, object] = {
                "line_id": line_id,
                "niss": niss,
                "provider_inami": PHARMACY,
                "dispensing_date": to_proto(TODAY),
                "status": GENERAL,
                "basis": oa_ins.CONSULTATION_BASIS_CONSULTED_AT_DISPENSING,
                "commitment": commitment,
            }
            fields.update(changes)
            return oa_ins.TarificationLine(**fields)  # type: ignore[arg-type]

        lines = [
            line("on the commitment"),
            line("forged", commitment=forged),
            line("the insurer's data", status=PREFERENTIAL, commitment=None),
            line(
                "reused later",
                basis=oa_ins.CONSULTATION_BASIS_REUSED,
                dispensing_date=to_proto(TODAY + dt.timedelta(days=40)),
            ),
            line("unknown patient", niss="85073003328"),
        ]
        backoffice = oa_ins_grpc.OaInsurabilityServiceStub(mesh.channel(mesh.oa_ports["100"], "backoffice"))
        answer = await backoffice.ValidateTarification(
            oa_ins.ValidateTarificationRequest(lines=lines), timeout=10
        )
        assert [(r.line_id, r.verdict, r.reason) for r in answer.results] == [
            ("on the commitment", oa_ins.TARIFICATION_VERDICT_PAID_COMMITMENT, ""),
            ("forged", oa_ins.TARIFICATION_VERDICT_REJECTED, "AGREEMENT_NOT_GENUINE"),
            ("the insurer's data", oa_ins.TARIFICATION_VERDICT_PAID_BASIC_PRINCIPLE, ""),
            ("reused later", oa_ins.TARIFICATION_VERDICT_REJECTED, "OUTSIDE_COVERAGE"),
            ("unknown patient", oa_ins.TARIFICATION_VERDICT_REJECTED, "PATIENT_UNKNOWN"),
        ]
        hub_side = oa_ins_grpc.OaInsurabilityServiceStub(mesh.channel(mesh.oa_ports["100"], "hub"))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await hub_side.ValidateTarification(oa_ins.ValidateTarificationRequest(lines=lines), timeout=10)
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await backoffice.ValidateTarification(
                oa_ins.ValidateTarificationRequest(lines=[line("x" * 65, niss="123")]), timeout=10
            )
        assert _refusal(bad.value) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            [("lines[0].line_id", 111), ("lines[0].niss", 111)],
        )
        with pytest.raises(grpc.aio.AioRpcError) as empty:
            await backoffice.ValidateTarification(oa_ins.ValidateTarificationRequest(), timeout=10)
        assert _refusal(empty.value) == (grpc.StatusCode.INVALID_ARGUMENT, [("lines", 100)])
