"""Who may consult insurability (issue 16): every kind of caller of the trust table on GetMemberData and
ConsultRights, through the in-process mesh (eHealth, the hub, an insurer), allowed or refused; and the
tarification office (seed 003 §8.2.2.7), which consults only for a line of its pharmacy's invoice the insurer
rejected (recorded by ValidateTarification, once however often it is validated).

The in-process mesh of the SDK is used (not tests/hub/mesh.py) because its insurers follow eHealth's
cadastre, organisations (a pharmacy, a medical house) included, as the real ones do."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

from mycarenet_sdk.client import Client, MyCareNetError
from mycarenet_sdk.testing import InProcessMesh

from mycarenet_core.channels import open_channel
from mycarenet_core.dates import to_proto
from mycarenet_core.gen.mycarenet.insurability.v1 import insurability_pb2 as ins
from mycarenet_core.gen.mycarenet.oa.v1 import oa_insurability_service_pb2 as oa_ins
from mycarenet_core.gen.mycarenet.oa.v1 import oa_insurability_service_pb2_grpc as oa_ins_grpc
from mycarenet_core.identifiers import Profession, make_inami, make_niss

TODAY = dt.date(2026, 11, 20)
PHARMACY = make_inami(Profession.ORGANISATION, 52_001, "300")
HOUSE = make_inami(Profession.ORGANISATION, 52_002, "100")
OFFICE = "0412345614"  # the tarification office's enterprise number (BCE)
OK = "OK"

# Caller kind → (GetMemberData, ConsultRights), for a patient without a rejected invoice line.
EXPECTED: dict[str, tuple[str, str]] = {
    "GP": (OK, "PERMISSION_DENIED PROVIDER_NOT_ENTITLED"),
    "GP in training": (OK, "PERMISSION_DENIED PROVIDER_NOT_ENTITLED"),
    "non-accredited GP": (OK, "PERMISSION_DENIED PROVIDER_NOT_ENTITLED"),
    "specialist": (OK, "PERMISSION_DENIED PROVIDER_NOT_ENTITLED"),
    "dentist": (OK, "PERMISSION_DENIED PROVIDER_NOT_ENTITLED"),
    "physiotherapist": (OK, "PERMISSION_DENIED PROVIDER_NOT_ENTITLED"),
    # A pharmacist consults only in a pharmacy's session (seed 003 §8.2.2.1, §11.3.1).
    "pharmacist alone": ("PERMISSION_DENIED PROVIDER_NOT_ENTITLED",) * 2,
    "pharmacy session": (OK, OK),
    "medical house": (OK, "PERMISSION_DENIED PROVIDER_NOT_ENTITLED"),
    "mandated for INSURABILITY": (OK, OK),
    "mandated for DMG_CONSULT": ("PERMISSION_DENIED MANDATE_NOT_COVERING",) * 2,
    "tarification office": ("PERMISSION_DENIED NO_REJECTED_INVOICE",) * 2,
}


def _enterprise_ok(number: str) -> bool:
    return 97 - int(number[:8]) % 97 == int(number[8:])


async def _outcome(call: Callable[[], Awaitable[object]]) -> str:
    try:
        await call()
    except MyCareNetError as error:
        return f"{error.status.name} {error.reason}"
    return OK


async def _both(client: Client, niss: str) -> tuple[str, str]:
    """The outcomes of GetMemberData and ConsultRights for ``niss`` today."""
    return (
        await _outcome(lambda: client.member_data(niss, date=TODAY)),
        await _outcome(lambda: client.consult_rights(niss, dispensing_date=TODAY)),
    )


async def test_every_caller_kind_on_both_insurability_services(tmp_path: Path) -> None:
    assert _enterprise_ok(OFFICE)
    async with InProcessMesh(tmp_path, insurers=("300",), today=TODAY) as mesh:
        keys = tmp_path / "keys"
        gp = await mesh.add_provider(make_inami(Profession.PHYSICIAN, 52_010, "003"), last_name="Generalist")
        providers = {
            "GP": gp,
            "GP in training": await mesh.add_provider(
                make_inami(Profession.PHYSICIAN, 52_011, "005"), supervisor_inami=gp.inami
            ),
            "non-accredited GP": await mesh.add_provider(make_inami(Profession.PHYSICIAN, 52_012, "001")),
            "specialist": await mesh.add_provider(make_inami(Profession.PHYSICIAN, 52_013, "580")),
            "dentist": await mesh.add_provider(make_inami(Profession.DENTIST, 52_014, "001")),
            "physiotherapist": await mesh.add_provider(make_inami(Profession.PHYSIOTHERAPIST, 52_015, "001")),
            "pharmacist alone": await mesh.add_provider(make_inami(Profession.PHARMACIST, 52_016, "001")),
        }
        pharmacist = providers["pharmacist alone"]
        await mesh.admin.add_organisation(
            PHARMACY, name="Pharmacie", kind="pharmacy", members=[pharmacist.inami]
        )
        await mesh.admin.add_organisation(HOUSE, name="Maison médicale", members=[gp.inami], wait=True)
        for org in (PHARMACY, HOUSE):
            await mesh.admin.register_credential(org, kind="organisation", key_file=keys / f"{org}.pem")
        # Mandatees: a person for INSURABILITY (the pharmacy's), a person for DMG_CONSULT (the GP's), and a
        # tarification office (a company) for TARIFICATION_OFFICE (the pharmacy's).
        since = TODAY - dt.timedelta(days=30)
        clerk, secretary = make_niss(dt.date(1990, 3, 3), 41), make_niss(dt.date(1991, 4, 4), 43)
        mandatees = {
            "mandated for INSURABILITY": (clerk, "person", PHARMACY, "INSURABILITY"),
            "mandated for DMG_CONSULT": (secretary, "person", gp.inami, "DMG_CONSULT"),
            "tarification office": (OFFICE, "company", PHARMACY, "TARIFICATION_OFFICE"),
        }
        for subject, kind, principal, service in mandatees.values():
            await mesh.admin.register_credential(subject, kind=kind, key_file=keys / f"{subject}.pem")
            await mesh.admin.give_mandate(principal, subject, [service], start=since, mandatee_kind=kind)
        patient = await mesh.add_patient(insurer="300")
        await mesh.settle()

        def key(subject: str) -> Path:
            return keys / f"{subject}.pem"

        async def login(label: str, client: Client) -> None:
            if label in providers:
                await client.login(providers[label].inami, key(providers[label].inami))
            elif label == "pharmacy session":
                await client.login(
                    PHARMACY,
                    key(PHARMACY),
                    kind="organisation",
                    pharmacist=(pharmacist.inami, key(pharmacist.inami)),
                )
            elif label == "medical house":
                await client.login(HOUSE, key(HOUSE), kind="organisation")
            else:
                subject, kind, principal, _ = mandatees[label]
                await client.login(subject, key(subject), kind=kind, principal_inami=principal)

        got: dict[str, tuple[str, str]] = {}
        for label in EXPECTED:
            async with mesh.client() as client:
                await login(label, client)
                got[label] = await _both(client, patient.niss)
        assert got == EXPECTED

        # The pharmacy's invoice line for the patient, with a forged agreement number, is rejected; the
        # rejection is recorded once however often the line is validated.
        async with mesh.client() as client:
            await login("pharmacy session", client)
            rights = await client.consult_rights(patient.niss, dispensing_date=TODAY)
        forged = ins.PaymentCommitment()
        forged.CopyFrom(rights.commitment)
        forged.agreement_number = "300-AAAAAAAAAAAAAAAAAAAA"
        line = oa_ins.TarificationLine(
            line_id="invoice-1/line-7",
            niss=patient.niss,
            provider_inami=PHARMACY,
            dispensing_date=to_proto(TODAY),
            status=ins.InsurabilityStatus(ct1="111", ct2="111", preferential_rate=True),
            basis=oa_ins.CONSULTATION_BASIS_CONSULTED_AT_DISPENSING,
            commitment=forged,
        )
        channel = open_channel(mesh.insurer_addresses["300"], identity="backoffice")
        try:
            backoffice = oa_ins_grpc.OaInsurabilityServiceStub(channel)
            for _ in range(2):  # a retry records nothing twice
                answer = await backoffice.ValidateTarification(
                    oa_ins.ValidateTarificationRequest(lines=[line]), timeout=10
                )
                assert [(r.verdict, r.reason) for r in answer.results] == [
                    (oa_ins.TARIFICATION_VERDICT_REJECTED, "AGREEMENT_NOT_GENUINE")
                ]
        finally:
            await channel.close(None)
        with sqlite3.connect(tmp_path / "oa-300.db") as db:
            rows = db.execute(
                "SELECT provider_inami, niss, dispensing_date, line_id, reason FROM oa_rejected_tarification"
            ).fetchall()
        assert rows == [
            (PHARMACY, patient.niss, TODAY.isoformat(), "invoice-1/line-7", "AGREEMENT_NOT_GENUINE")
        ]

        # Now the office may consult that patient for that dispensing date, and only that.
        other = await mesh.add_patient(insurer="300")
        async with mesh.client() as office:
            await login("tarification office", office)
            member = await office.member_data(patient.niss, date=TODAY)
            assert member.insurability[0].status.ct1 == "110"
            corrected = await office.consult_rights(patient.niss, dispensing_date=TODAY)
            assert corrected.commitment.provider_inami == PHARMACY
            refused = [
                await _outcome(
                    lambda: office.consult_rights(patient.niss, dispensing_date=TODAY - dt.timedelta(days=1))
                ),
                await _outcome(lambda: office.member_data(other.niss, date=TODAY)),
            ]
        assert refused == ["PERMISSION_DENIED NO_REJECTED_INVOICE"] * 2
