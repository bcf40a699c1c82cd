"""The pharmacy's side of the payment commitment with the SDK on the in-process mesh (seed 003 §5.3, §9.2):
online, the commitment is stored; with the hub down, the latest stored commitment covering the dispensing
date is reused, and outside its coverage the pharmacist is told what to fall back to."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from mycarenet_sdk.admin import Insurability
from mycarenet_sdk.client import MyCareNetError
from mycarenet_sdk.commitments import Basis, StoredCommitment, stored_from
from mycarenet_sdk.testing import InProcessMesh

from mycarenet_core.identifiers import Profession, make_inami
from tests.oa_node.test_rules_insurability import EXAMPLES, d

TODAY = dt.date(2026, 11, 20)


async def test_reuse_with_the_hub_down(tmp_path: Path) -> None:
    async with InProcessMesh(tmp_path, insurers=("300",), today=TODAY) as mesh:
        pharmacist = await mesh.add_provider(
            make_inami(Profession.PHARMACIST, 40_001, "001"), first_name="Paul", last_name="Apotheker"
        )
        pharmacy = await mesh.add_pharmacy([pharmacist])
        patient = await mesh.add_patient(insurer="300")
        client = await mesh.login_pharmacy(pharmacy, pharmacist)
        stored: list[StoredCommitment] = []

        # Online: the rights, and a commitment to 30 days (110/110 to the end of next year by default).
        decision, answer = await client.rights_at_dispensing(
            patient.niss, dispensing_date=TODAY - dt.timedelta(days=5), stored=stored
        )
        assert decision.basis is Basis.ONLINE
        assert answer is not None
        assert answer.member_data.insurer_code == "300"
        assert [(c.coverage_start, c.coverage_end) for c in stored] == [
            (TODAY - dt.timedelta(days=5), TODAY + dt.timedelta(days=25))
        ]
        assert stored[0].consulted == TODAY
        assert stored[0].agreement_number == answer.commitment.agreement_number
        member = await client.member_data(patient.niss)
        assert member.insurability[0].status.ct1 == "110"

        # A refusal is not an emergency: it is raised, nothing is reused (the commitment is the pharmacists').
        gp = await mesh.login(await mesh.add_provider(first_name="Eva", last_name="Claes"))
        with pytest.raises(MyCareNetError) as refused:
            await gp.rights_at_dispensing(patient.niss, dispensing_date=TODAY, stored=stored)
        assert refused.value.status.name == "PERMISSION_DENIED"
        assert len(stored) == 1

        # The hub goes down: the stored commitment is reused within its coverage, never beyond it.
        assert mesh.hub_app is not None
        await mesh.hub_app.stop(0)
        within, _ = await client.rights_at_dispensing(
            patient.niss, dispensing_date=TODAY + dt.timedelta(days=25), stored=stored
        )
        assert within.basis is Basis.REUSED
        assert within.commitment == stored[0]
        beyond, online = await client.rights_at_dispensing(
            patient.niss, dispensing_date=TODAY + dt.timedelta(days=26), stored=stored, has_sis_card=True
        )
        assert online is None
        assert beyond.basis is Basis.SIS_CARD
        nothing, _ = await client.rights_at_dispensing(
            patient.niss, dispensing_date=TODAY + dt.timedelta(days=26), stored=stored
        )
        assert nothing.basis is Basis.FORM_704
        assert len(stored) == 1


async def test_the_worked_examples_of_seed_003_end_to_end(tmp_path: Path) -> None:
    """Seed 003 §11.1 through the hub: the mesh on 12 November 2011, then on 25 December 2011 (example 6)."""
    async with InProcessMesh(tmp_path, insurers=("300",), today=dt.date(2011, 11, 12)) as mesh:
        pharmacist = await mesh.add_provider(make_inami(Profession.PHARMACIST, 40_002, "001"))
        pharmacy = await mesh.add_pharmacy([pharmacist])
        patients = {}
        for example, _consulted, _dispensing, spans, _coverage, _until in EXAMPLES:
            periods = []
            for span in spans:
                start, end = (d(text) for text in span.split("-"))
                periods.append(Insurability(start, end))
            patients[example] = await mesh.add_patient(
                insurer="300", affiliated_from=dt.date(2000, 1, 1), insurability=periods
            )
        for example, consulted, dispensing, _spans, coverage, until in EXAMPLES:
            if mesh.today != d(consulted):
                mesh.clock.advance(d(consulted) - mesh.today)
            async with await mesh.login_pharmacy(pharmacy, pharmacist) as client:
                answer = await client.consult_rights(patients[example].niss, dispensing_date=d(dispensing))
            stored = stored_from(patients[example].niss, answer.commitment)
            assert (stored.coverage_start, stored.coverage_end) == (d(coverage[0]), d(coverage[1])), example
            assert stored.reusable_until == (d(until) if until else None), example
            assert stored.consulted == d(consulted)
