"""A pharmacy's session (seed 003 §8.2.2.1, §8.2.2.3): the pharmacy's organisation credential activated by one
of its pharmacists, whose own key signs a second challenge (the eID of the seed). The session's requester of
record is the pharmacy; the commitment is linked to it and names the pharmacist (seed 003 §5.1); the hub's
and the insurer's audit record the pharmacist as the executor. A pharmacy without a pharmacist, with a
pharmacist of another pharmacy, or with a GP, is refused; and nothing but a pharmacy names a user."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from mycarenet_sdk.client import MyCareNetError
from mycarenet_sdk.keys import load_private_key
from mycarenet_sdk.testing import InProcessMesh

from mycarenet_core.dates import to_proto
from mycarenet_core.identifiers import Profession, make_inami, make_niss

TODAY = dt.date(2026, 11, 20)
PHARMACY = make_inami(Profession.ORGANISATION, 50_001, "300")
OTHER_PHARMACY = make_inami(Profession.ORGANISATION, 50_002, "300")


async def test_a_pharmacy_session_opened_by_its_pharmacist(tmp_path: Path) -> None:
    async with InProcessMesh(tmp_path, insurers=("300",), today=TODAY) as mesh:
        titular = await mesh.add_provider(
            make_inami(Profession.PHARMACIST, 41_001, "001"), last_name="Titulaire"
        )
        colleague = await mesh.add_provider(
            make_inami(Profession.PHARMACIST, 41_002, "002"), last_name="Adjoint"
        )
        stranger = await mesh.add_provider(
            make_inami(Profession.PHARMACIST, 41_003, "001"), last_name="Ailleurs"
        )
        gp = await mesh.add_provider(first_name="Eva", last_name="Claes")
        keys = tmp_path / "keys"
        await mesh.admin.add_organisation(
            PHARMACY,
            name="Pharmacie du Parc",
            kind="pharmacy",
            members=[titular.inami, colleague.inami, gp.inami],
        )
        await mesh.admin.add_organisation(
            OTHER_PHARMACY, name="Pharmacie de la Gare", kind="pharmacy", members=[stranger.inami], wait=True
        )
        await mesh.admin.register_credential(PHARMACY, kind="organisation", key_file=keys / f"{PHARMACY}.pem")
        patient = await mesh.add_patient(insurer="300")
        await mesh.settle()
        pharmacy_key = load_private_key(keys / f"{PHARMACY}.pem")

        def key(inami: str) -> Ed25519PrivateKey:
            return load_private_key(keys / f"{inami}.pem")

        async with mesh.client() as client:
            await client.login(
                PHARMACY,
                pharmacy_key,
                kind="organisation",
                pharmacist=(colleague.inami, key(colleague.inami)),
            )
            rights = await client.consult_rights(patient.niss, dispensing_date=TODAY)
            assert rights.commitment.provider_inami == PHARMACY
            assert rights.commitment.pharmacist_inami == colleague.inami
            member = await client.member_data(patient.niss)
            assert member.insurer_code == "300"
            # A newborn whose NISS the pharmacy does not know yet: by mutuality + member number (§4.3).
            born = await mesh.add_patient(
                make_niss(TODAY - dt.timedelta(days=9), 901),
                insurer="300",
                birth_date=TODAY - dt.timedelta(days=9),
                affiliated_from=TODAY - dt.timedelta(days=9),
            )
            baby = await client.consult_rights(
                member=("300", born.registration_number), dispensing_date=TODAY
            )
            assert baby.member_data.patient.niss == born.niss
            assert baby.commitment.coverage.start == to_proto(TODAY)
            assert baby.commitment.pharmacist_inami == colleague.inami

        with sqlite3.connect(tmp_path / "hub.db") as db:
            rows = db.execute(
                "SELECT rpc, requester_inami, executor_id, executor_kind, outcome FROM audit "
                "WHERE rpc IN ('ConsultRights', 'GetMemberData') ORDER BY id"
            ).fetchall()
        assert rows == [
            ("ConsultRights", PHARMACY, colleague.inami, "SUBJECT_KIND_PROVIDER", "OK"),
            ("GetMemberData", PHARMACY, colleague.inami, "SUBJECT_KIND_PROVIDER", "OK"),
            ("ConsultRights", PHARMACY, colleague.inami, "SUBJECT_KIND_PROVIDER", "OK"),
        ]
        with sqlite3.connect(tmp_path / "oa-300.db") as db:
            executors = db.execute(
                "SELECT requester_inami, executor_id FROM oa_audit WHERE rpc = 'ConsultRights'"
            ).fetchall()
        assert executors == [(PHARMACY, colleague.inami), (PHARMACY, colleague.inami)]

        refusals: list[tuple[str, str]] = []
        for user in (None, (stranger.inami, key(stranger.inami)), (gp.inami, key(gp.inami))):
            async with mesh.client() as client:
                with pytest.raises(MyCareNetError) as refused:
                    await client.login(PHARMACY, pharmacy_key, kind="organisation", pharmacist=user)
                refusals.append((refused.value.status.name, refused.value.reason))
        # A pharmacist with someone else's key: the eID proof fails.
        async with mesh.client() as client:
            with pytest.raises(MyCareNetError) as forged:
                await client.login(
                    PHARMACY,
                    pharmacy_key,
                    kind="organisation",
                    pharmacist=(titular.inami, key(colleague.inami)),
                )
            refusals.append((forged.value.status.name, forged.value.reason))
        # Only a pharmacy's session names a user.
        async with mesh.client() as client:
            with pytest.raises(MyCareNetError) as not_pharmacy:
                await client.login(gp.inami, key(gp.inami), pharmacist=(titular.inami, key(titular.inami)))
            refusals.append((not_pharmacy.value.status.name, not_pharmacy.value.reason))
        assert refusals == [
            ("INVALID_ARGUMENT", "PHARMACIST_REQUIRED"),
            ("PERMISSION_DENIED", "NOT_A_PHARMACIST_OF_THE_PHARMACY"),
            ("PERMISSION_DENIED", "NOT_A_PHARMACIST_OF_THE_PHARMACY"),
            ("UNAUTHENTICATED", "USER_BAD_SIGNATURE"),
            ("INVALID_ARGUMENT", "USER_NOT_ALLOWED"),
        ]
