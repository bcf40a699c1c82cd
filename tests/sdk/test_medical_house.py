"""A medical house holds the DMG of its contracted patients (seed 000 §2.3.2; issue 14, correction 3): its own
session (an organisation's) enrols, consults and notifies through the hub, and becomes the holder; a GP of
the same patient still gets 162."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from mycarenet_sdk.client import MyCareNetError
from mycarenet_sdk.keys import load_private_key
from mycarenet_sdk.testing import InProcessMesh

from mycarenet_core.identifiers import Profession, make_inami

TODAY = dt.date(2026, 11, 20)


async def test_a_medical_house_enrols_consults_and_notifies_its_contracted_patient(tmp_path: Path) -> None:
    async with InProcessMesh(tmp_path, insurers=("300",), today=TODAY) as mesh:
        gp = await mesh.add_provider(first_name="Eva", last_name="Claes", enrolled=True)
        house = make_inami(Profession.ORGANISATION, 60_001, "100")
        name = "Maison médicale du Parc"
        await mesh.admin.add_organisation(house, name=name, members=[gp.inami], wait=True)
        key_file = tmp_path / "keys" / f"{house}.pem"
        await mesh.admin.register_credential(house, kind="organisation", key_file=key_file)
        patient = await mesh.add_patient(
            insurer="300", medical_house_inami=house, medical_house_from=dt.date(2024, 1, 1)
        )
        await mesh.admin.register_relation(house, patient.niss)
        await mesh.settle()

        async with mesh.client() as client:
            await client.login(house, load_private_key(key_file), kind="organisation")
            await client.enrol(iban="BE68539007547034", bic="GEBABEBB", holder_name=name)
            before = await client.consult(patient.niss, date=TODAY)
            assert not before.holding.holder.inami
            done = await client.notify(patient.niss, contact_date=TODAY, nomenclature_code="101076")
            assert done.holder.inami == house
            after = await client.consult(patient.niss, date=TODAY)
            assert after.holding.holder.inami == house

        # A GP of the house, on the same contracted patient, is still refused (162).
        await mesh.admin.register_relation(gp.inami, patient.niss)
        await mesh.settle()
        async with await mesh.login(gp) as gp_client:
            with pytest.raises(MyCareNetError) as refused:
                await gp_client.notify(patient.niss, contact_date=TODAY, nomenclature_code="101076")
        assert refused.value.code == 162
