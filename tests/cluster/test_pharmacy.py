"""The pharmacy's side of issue 16 against a real cluster (one cluster for the module, SQLite: the database
back end has no part here, the integration tests run it on both), started "as if today were" 12 November 2026:
the consultation day of seed 003 §11.1 (12 November 2011) shifted by 15 years. A cluster cannot start in 2011:
its population brings three years of DMG history, and the insurers have no DMG tariff before 2010. The
shift keeps every day of the examples' arithmetic (2011 and 2026 are both common years, as 2012 and 2027 are
up to the end of January):

* a pharmacist's consult in a pharmacy's session (the pharmacy's key plus its pharmacist's, seed 003
  §8.2.2.1): the six worked examples of §11.1 end to end through the hub, the last one after the sandbox
  clock moved to 25 December; and a newborn of the population asked for by mutuality + member number (§4.3);
* an invoice line accepted and one rejected for a forged agreement number (ValidateTarification with the
  insurer back office's certificate, §5.1, §5.4);
* a stored commitment reused while the hub is down (killed through the sandbox's chaos service), the SDK's
  decision tree of §9.2, and online again once the supervisor started the hub again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mycarenet_cluster.probe import channel_credentials
from mycarenet_sdk import Client, MyCareNetError, admin_from_cluster
from mycarenet_sdk.admin import Insurability
from mycarenet_sdk.commitments import Basis, StoredCommitment, stored_from

from mycarenet_core.channels import open_channel
from mycarenet_core.dates import to_proto
from mycarenet_core.gen.mycarenet.insurability.v1 import insurability_pb2 as ins
from mycarenet_core.gen.mycarenet.oa.v1 import oa_insurability_service_pb2 as oa_ins
from mycarenet_core.gen.mycarenet.oa.v1 import oa_insurability_service_pb2_grpc as oa_ins_grpc
from mycarenet_core.identifiers import Profession, make_inami, make_niss
from tests.cluster.cluster_support import Cluster, cli, free_base_port
from tests.cluster.test_sandbox_chaos import provider_client
from tests.oa_node import test_rules_insurability as worked

SHIFT = 15  # years: see the module's docstring
TODAY = dt.date(2011 + SHIFT, 11, 12)
EXAMPLES = worked.EXAMPLES
INSURER = "300"


def d(text: str) -> dt.date:
    """A date of the worked examples (dd/mm/yyyy), shifted by :data:`SHIFT` years."""
    day = worked.d(text)
    return day.replace(year=day.year + SHIFT)


# Seconds the killed hub would stay down: the test heals the fault itself once the reuse is checked, and the
# fault still active then shows the hub was down when the reuse was tried, however loaded the box.
HUB_DOWN = 300.0


@pytest.fixture(scope="module")
def pharmacy_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, dict[str, Any]]]:
    cluster = Cluster(tmp_path_factory.mktemp("pharmacy") / "data", free_base_port(), population=60)
    try:
        yield cluster, cluster.up(TODAY.isoformat())
    finally:
        cluster.down()


@pytest.fixture(scope="module")
def patients(pharmacy_cluster: tuple[Cluster, dict[str, Any]]) -> dict[str, str]:
    """One patient of insurer 300 per worked example of §11.1, with its insurability periods (110/110)."""
    _, desc = pharmacy_cluster

    async def add() -> dict[str, str]:
        out = {}
        async with admin_from_cluster(desc) as admin:
            for n, (example, _consulted, _dispensing, spans, _coverage, _until) in enumerate(EXAMPLES):
                niss = make_niss(dt.date(1971, 1 + n, 11), 601 + 2 * n)
                periods = []
                for span in spans:
                    start, end = (d(text) for text in span.split("-"))
                    periods.append(Insurability(start, end))
                await admin.add_patient(
                    niss,
                    insurer=INSURER,
                    first_name="Example",
                    last_name=example,
                    affiliated_from=dt.date(2000, 1, 1),
                    insurability=periods,
                )
                out[example] = niss
        return out

    return asyncio.run(add())


async def pharmacy_session(desc: dict[str, Any]) -> Client:
    """A client logged in as the demo pharmacy, opened by its responsible pharmacist (keys of the cluster)."""
    keys, demo = Path(desc["keys"]), desc["demo"]
    client = provider_client(desc)
    await client.__aenter__()
    await client.login(
        demo["pharmacy"],
        keys / f"{demo['pharmacy']}.pem",
        kind="organisation",
        pharmacist=(demo["pharmacist"], keys / f"{demo['pharmacist']}.pem"),
    )
    return client


async def routed(client: Client, niss: str, day: dt.date, within: float = 60.0) -> Any:
    """ConsultRights once the hub routes the patient (it learns new members from the insurer's feed)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await client.consult_rights(niss, dispensing_date=day)
        except MyCareNetError as error:
            if error.reason != "PATIENT_UNKNOWN" or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def test_a_pharmacists_consult_and_the_worked_examples(
    pharmacy_cluster: tuple[Cluster, dict[str, Any]], patients: dict[str, str]
) -> None:
    _, desc = pharmacy_cluster
    demo = desc["demo"]
    client = await pharmacy_session(desc)
    try:
        for example, consulted, dispensing, _spans, coverage, until in EXAMPLES:
            if d(consulted) != TODAY:
                continue  # example 6 is consulted on 25 December: test_example_6_after_the_clock_moved
            answer = await routed(client, patients[example], d(dispensing))
            assert answer.commitment.provider_inami == demo["pharmacy"]
            assert answer.commitment.pharmacist_inami == demo["pharmacist"]
            stored = stored_from(patients[example], answer.commitment)
            assert (stored.coverage_start, stored.coverage_end) == (d(coverage[0]), d(coverage[1])), example
            assert stored.reusable_until == (d(until) if until else None), example
        # A newborn of the population whose NISS the pharmacy does not know yet: by member number (§4.3).
        mutuality, number = demo["newborn"].split("/")
        baby = await client.consult_rights(member=(mutuality, number), dispensing_date=TODAY)
        assert baby.member_data.insurer_code == mutuality
        assert baby.commitment.coverage.start == to_proto(TODAY)
    finally:
        await client.__aexit__(None, None, None)


def test_the_cli_logs_in_as_a_pharmacy_and_asks_for_a_newborn(
    pharmacy_cluster: tuple[Cluster, dict[str, Any]], tmp_path: Path
) -> None:
    cluster, desc = pharmacy_cluster
    demo, session = desc["demo"], tmp_path / "session.json"
    cli(cluster.data, session, "login", demo["pharmacy"], "--pharmacist", demo["pharmacist"])
    answer = cli(cluster.data, session, "pharmacy", "rights", "--member", demo["newborn"])
    assert answer["commitment"]["pharmacist_inami"] == demo["pharmacist"]
    assert answer["commitment"]["provider_inami"] == demo["pharmacy"]
    # The administrator's path: a new pharmacy with the demo pharmacist, its key, its session.
    pharmacy, admin = make_inami(Profession.ORGANISATION, 77_001, "300"), tmp_path / "admin.json"
    cli(cluster.data, admin, "admin", "organisation", "add", pharmacy, "--name", "Pharmacie Neuve", "--kind",
        "pharmacy", "--member", demo["pharmacist"])  # fmt: skip
    cli(cluster.data, admin, "admin", "credential", "add", pharmacy, "--kind", "organisation")
    cli(cluster.data, session, "login", pharmacy, "--pharmacist", demo["pharmacist"])
    answer = cli(cluster.data, session, "pharmacy", "rights", demo["patient"])
    assert answer["commitment"]["provider_inami"] == pharmacy


async def test_an_invoice_line_accepted_and_one_with_a_forged_agreement_number(
    pharmacy_cluster: tuple[Cluster, dict[str, Any]], patients: dict[str, str]
) -> None:
    _, desc = pharmacy_cluster
    client = await pharmacy_session(desc)
    try:
        rights = await routed(client, patients["1"], TODAY)
    finally:
        await client.__aexit__(None, None, None)
    genuine = rights.commitment
    forged = ins.PaymentCommitment()
    forged.CopyFrom(genuine)
    forged.status.CopyFrom(ins.InsurabilityStatus(ct1="111", ct2="111", preferential_rate=True))
    forged.agreement_number = f"{INSURER}-{'A' * 20}"

    def line(line_id: str, commitment: ins.PaymentCommitment) -> oa_ins.TarificationLine:
        return oa_ins.TarificationLine(
            line_id=line_id,
            niss=patients["1"],
            provider_inami=genuine.provider_inami,
            dispensing_date=to_proto(TODAY),
            status=commitment.status,
            basis=oa_ins.CONSULTATION_BASIS_CONSULTED_AT_DISPENSING,
            commitment=commitment,
        )

    address = next(
        p["address"] for p in desc["processes"] if p["role"] == "oa" and str(p["oa_code"]) == INSURER
    )
    channel = open_channel(address, credentials=channel_credentials(desc["tls"], "backoffice"))
    try:
        answer = await oa_ins_grpc.OaInsurabilityServiceStub(channel).ValidateTarification(
            oa_ins.ValidateTarificationRequest(lines=[line("accepted", genuine), line("forged", forged)]),
            timeout=30,
        )
    finally:
        await channel.close(None)
    assert [(r.line_id, r.verdict, r.reason) for r in answer.results] == [
        ("accepted", oa_ins.TARIFICATION_VERDICT_PAID_BASIC_PRINCIPLE, ""),
        ("forged", oa_ins.TARIFICATION_VERDICT_REJECTED, "AGREEMENT_NOT_GENUINE"),
    ]


async def test_a_stored_commitment_is_reused_while_the_hub_is_down(
    pharmacy_cluster: tuple[Cluster, dict[str, Any]], patients: dict[str, str]
) -> None:
    _, desc = pharmacy_cluster
    niss = patients["1"]  # insured to 31 December
    earlier = TODAY - dt.timedelta(days=10)  # a commitment obtained for a dispensing ten days ago
    stored: list[StoredCommitment] = []
    client = await pharmacy_session(desc)
    try:
        decision, online = await client.rights_at_dispensing(niss, dispensing_date=earlier, stored=stored)
        assert decision.basis is Basis.ONLINE
        assert online is not None
        assert [(c.coverage_start, c.coverage_end) for c in stored] == [
            (earlier, earlier + dt.timedelta(days=30))
        ]
        async with admin_from_cluster(desc) as admin:
            fault = await admin.process_fault("hub", "kill", HUB_DOWN)
            try:
                # Today's dispensing while the hub is down: the stored commitment covers it.
                reused, answer = await client.rights_at_dispensing(niss, dispensing_date=TODAY, stored=stored)
                held = [f.id for f in await admin.list_faults()]
            finally:
                healed = await admin.clear_faults()  # the supervisor starts the hub again
        assert held == [fault.id], "the hub came back before the reuse was tried"
        assert healed == [fault.id]
        assert answer is None
        assert reused.basis is Basis.REUSED
        assert reused.commitment == stored[0]
        # Online again once the hub serves, a second commitment stored.
        deadline = time.monotonic() + 90
        while True:
            again, answer = await client.rights_at_dispensing(niss, dispensing_date=TODAY, stored=stored)
            if again.basis is Basis.ONLINE or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        assert again.basis is Basis.ONLINE
        assert len(stored) == 2
    finally:
        await client.__aexit__(None, None, None)


async def test_example_6_after_the_clock_moved(
    pharmacy_cluster: tuple[Cluster, dict[str, Any]], patients: dict[str, str]
) -> None:
    """Last in the module: the sandbox clock moves to 25 December 2011 (it never goes back)."""
    _, desc = pharmacy_cluster
    [(example, consulted, dispensing, _spans, coverage, until)] = [e for e in EXAMPLES if d(e[1]) != TODAY]
    async with admin_from_cluster(desc) as admin:
        state = await admin.set_clock(d(consulted))
    assert state.today == d(consulted)
    client = await pharmacy_session(desc)  # a new session: those opened before the move have expired
    try:
        answer = await routed(client, patients[example], d(dispensing))
    finally:
        await client.__aexit__(None, None, None)
    stored = stored_from(patients[example], answer.commitment)
    assert (stored.coverage_start, stored.coverage_end) == (d(coverage[0]), d(coverage[1]))
    assert until is not None
    assert stored.reusable_until == d(until)
    assert stored.consulted == d(consulted)
