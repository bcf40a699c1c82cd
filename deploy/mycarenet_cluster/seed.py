"""Load a :class:`~mycarenet_cluster.population.Population` into a running mesh, through its own gRPC
services only, with the identities the trust model gives a seeder (``mycarenet_core/trust.toml``):

* the ``admin`` certificate (the sandbox administrator, standing in for the authentic sources) writes
  eHealth's cadastre (providers with their credentials, organisations) and the therapeutic relations,
  through the SDK's :class:`~mycarenet_sdk.admin.AdminClient`; the insurers are never told about a provider:
  they follow eHealth's cadastre, and the seeder waits until every one reports that it has applied the last
  write (``GetCadastrePosition``);
* then, at each insurer, ``admin`` loads the members; the history is replayed event by event so that
  holdings and payments are what the rules make of them: the enrolments and DMG notifications as they were
  made through the hub (replayed by ``admin``, which the trust table lets write the sandbox's history: no
  tool holds the hub's key), the contacts and paper attestations as the insurer's invoicing registered
  them (its ``backoffice``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from mycarenet_sdk.admin import AdminClient

from mycarenet_cluster.population import CONTACT_CODES, Member, Population, bulk_members
from mycarenet_core.channels import open_channel
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.insurability.v1 import insurability_pb2
from mycarenet_core.gen.mycarenet.oa.v1 import (
    context_pb2,
    intake_service_pb2,
    intake_service_pb2_grpc,
    membership_service_pb2,
    membership_service_pb2_grpc,
    oa_dmg_service_pb2,
    oa_dmg_service_pb2_grpc,
)
from mycarenet_core.identifiers import parse_inami

log = logging.getLogger(__name__)
BATCH = 5000
CADASTRE_WAIT_SECONDS = 120.0  # the insurers apply the cadastre as a live feed: seconds at most
ROLES: dict[str, common_pb2.ProviderRole.ValueType] = {
    "GENERAL_PRACTITIONER": common_pb2.PROVIDER_ROLE_GENERAL_PRACTITIONER,
    "GP_IN_TRAINING": common_pb2.PROVIDER_ROLE_GP_IN_TRAINING,
    "SPECIALIST": common_pb2.PROVIDER_ROLE_SPECIALIST,
    "DENTIST": common_pb2.PROVIDER_ROLE_DENTIST,
    "PHARMACIST": common_pb2.PROVIDER_ROLE_PHARMACIST,
    "PHYSIOTHERAPIST": common_pb2.PROVIDER_ROLE_PHYSIOTHERAPIST,
    "MEDICAL_HOUSE": common_pb2.PROVIDER_ROLE_MEDICAL_HOUSE,
    "GROUP_PRACTICE": common_pb2.PROVIDER_ROLE_GROUP_PRACTICE,
}
SEX: dict[str, common_pb2.Sex.ValueType] = {
    "M": common_pb2.SEX_MALE,
    "F": common_pb2.SEX_FEMALE,
    "U": common_pb2.SEX_UNKNOWN,
}
SINCE = dt.date(2000, 1, 1)  # every provider and organisation of the population practises since then


def _d(value: dt.date | None) -> common_pb2.Date | None:
    return None if value is None else common_pb2.Date(year=value.year, month=value.month, day=value.day)


def _role(inami: str) -> common_pb2.ProviderRole.ValueType:
    return ROLES.get(parse_inami(inami).role.name, common_pb2.PROVIDER_ROLE_UNSPECIFIED)


def write_keys(population: Population, folder: Path) -> dict[str, str]:
    """One Ed25519 key per provider and per pharmacy (whose session one of its pharmacists opens, seed 003
    §8.2.2.1): PEM files the CLI logs in with; returns INAMI → public PEM."""
    folder.mkdir(parents=True, exist_ok=True)
    public: dict[str, str] = {}
    pharmacies = [o.inami for o in population.organisations if o.kind == "pharmacy"]
    for inami in [p.inami for p in population.providers] + pharmacies:
        path = folder / f"{inami}.pem"
        if path.is_file():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            assert isinstance(key, Ed25519PrivateKey)
        else:
            key = Ed25519PrivateKey.generate()
            path.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            path.chmod(0o600)
        public[inami] = (
            key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )
    return public


async def seed_ehealth(
    admin: AdminClient, population: Population, public_keys: dict[str, str], today: dt.date
) -> int:
    """The cadastre (providers with their credentials, organisations) and the therapeutic relations, as
    the administrator; returns the sequence of the last cadastre change written."""
    last = 0
    for p in population.providers:
        added = await admin.add_provider(
            p.inami,
            first_name=p.first_name,
            last_name=p.last_name,
            niss=p.niss,
            supervisor_inami=p.supervisor,
            valid_from=SINCE,
            public_key=public_keys[p.inami],
        )
        last = max(last, added.change_sequence)
    for org in population.organisations:
        reply = await admin.add_organisation(
            org.inami, name=org.name, kind=org.kind, members=org.members, valid_from=SINCE
        )
        last = max(last, int(reply.change_sequence))
        if org.inami in public_keys:
            await admin.register_credential(org.inami, kind="organisation", public_key=public_keys[org.inami])
    start = today - dt.timedelta(days=3 * 365)
    sem = asyncio.Semaphore(32)

    async def relate(niss: str, inami: str) -> None:
        async with sem:
            await admin.register_relation(inami, niss, start=start, proof="eid")

    pairs = [(m.niss, m.usual_gp) for m in population.members if m.usual_gp]
    demo = population.demo
    pairs += [(demo["patient"], demo[k]) for k in ("gp_b", "specialist", "dentist", "trainee")]
    await asyncio.gather(*(relate(n, i) for n, i in pairs))
    return last


async def await_cadastre(admin: AdminClient, sequence: int) -> dict[str, object]:
    """Wait until every insurer has applied cadastre change ``sequence`` (it then knows every provider and
    organisation of the population): a clear error naming the insurers behind after
    :data:`CADASTRE_WAIT_SECONDS`."""
    sequence = max(sequence, await admin.cadastre_head())
    positions = await admin.wait_for_cadastre(sequence, seconds=CADASTRE_WAIT_SECONDS)
    return {
        "cadastre_sequence": sequence,
        "cadastre": {code: p.applied_sequence for code, p in sorted(positions.items())},
    }


async def seed_oa(
    code: str,
    admin_channel: grpc.aio.Channel,
    history_channel: grpc.aio.Channel,
    population: Population,
    today: dt.date,
) -> None:
    """Members (the administrator's) and enrolments (made through the hub, 4 years ago) of one insurer."""
    members = membership_service_pb2_grpc.MembershipServiceStub(admin_channel)
    mine = [m for m in population.members if any(a.insurer == code for a in m.affiliations)]
    for i in range(0, len(mine), BATCH):
        batch = [_member_proto(m, code, today) for m in mine[i : i + BATCH]]
        await members.UpsertMembers(membership_service_pb2.UpsertMembersRequest(members=batch), timeout=300)
    dmg = oa_dmg_service_pb2_grpc.OaDmgServiceStub(history_channel)
    for p in population.providers:
        if not p.enrolled:
            continue
        context = context_pb2.RequestContext(
            requester_inami=p.inami,
            requester_role=_role(p.inami),
            executor_id=p.inami,
            executor_kind="SUBJECT_KIND_PROVIDER",
            requester_reference=f"seed-enrol-{p.inami}",
            processing_date=_d(dt.date(today.year - 4, 1, 1)),
        )
        try:
            await dmg.EnrolDmg(
                oa_dmg_service_pb2.EnrolDmgRequest(
                    context=context,
                    bank_account=common_pb2.BankAccount(
                        iban=p.iban, bic="GEBABEBB", holder_name=f"{p.first_name} {p.last_name}"
                    ),
                    start_date=_d(dt.date(today.year - 4, 1, 1)),
                ),
                timeout=30,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise


async def replay_history(
    code: str, history_channel: grpc.aio.Channel, backoffice_channel: grpc.aio.Channel, population: Population
) -> dict[str, int]:
    """Replay this insurer's DMG events in order; a rule's refusal is part of history, not a failure.

    Notifications as they were made through the hub, contacts and paper attestations as the insurer's
    invoicing registered them (its back office)."""
    dmg = oa_dmg_service_pb2_grpc.OaDmgServiceStub(history_channel)
    intake = intake_service_pb2_grpc.InvoicingIntakeServiceStub(backoffice_channel)
    outcome: dict[str, int] = defaultdict(int)
    for n, event in enumerate(e for e in population.history if e.insurer == code):
        ref = f"seed-{code}-{n}"
        try:
            if event.kind == "notify":
                await dmg.NotifyDmg(
                    oa_dmg_service_pb2.NotifyDmgRequest(
                        context=context_pb2.RequestContext(
                            requester_inami=event.provider,
                            requester_role=common_pb2.PROVIDER_ROLE_GENERAL_PRACTITIONER,
                            executor_id=event.provider,
                            executor_kind="SUBJECT_KIND_PROVIDER",
                            requester_reference=ref,
                            processing_date=_d(event.submitted),
                        ),
                        patient=common_pb2.PatientSelector(niss=event.niss),
                        contact_date=_d(event.date),
                        nomenclature_code=CONTACT_CODES[n % len(CONTACT_CODES)],
                    ),
                    timeout=30,
                )
            elif event.kind == "contact":
                await intake.RegisterContact(
                    intake_service_pb2.RegisterContactRequest(
                        intake_reference=ref,
                        patient_niss=event.niss,
                        provider_inami=event.provider,
                        contact_date=_d(event.date),
                        nomenclature_code=CONTACT_CODES[n % len(CONTACT_CODES)],
                        submission_date=_d(event.submitted),
                    ),
                    timeout=30,
                )
            else:
                await intake.RegisterPaperAttestation(
                    intake_service_pb2.RegisterPaperAttestationRequest(
                        intake_reference=ref,
                        patient_niss=event.niss,
                        provider_inami=event.provider,
                        attestation_date=_d(event.date),
                        submission_date=_d(event.submitted),
                    ),
                    timeout=30,
                )
            outcome[f"{event.kind}_ok"] += 1
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL):
                raise
            outcome[f"{event.kind}_refused"] += 1
    return dict(outcome)


async def seed(
    population: Population,
    *,
    ehealth: str,
    oas: dict[str, str],
    keys_folder: Path,
    today: dt.date,
    admin_credentials: grpc.ChannelCredentials | None = None,
    backoffice_credentials: grpc.ChannelCredentials | None = None,
    only: Sequence[str] = (),
) -> dict[str, object]:
    """Seed the whole mesh; returns counts for the cluster description.

    ``admin_credentials`` and ``backoffice_credentials`` are the mutual-TLS identities of the administrator
    (who also replays the past DMG requests of the history, as the trust table lets it: no tool ever holds
    the hub's key) and of the insurers' back office. Without them (an ``--insecure`` development mesh) every
    channel declares the identity it stands for."""
    public_keys = write_keys(population, keys_folder)
    async with AdminClient(ehealth=ehealth, insurers=oas, credentials=admin_credentials) as admin:
        sequence = await seed_ehealth(admin, population, public_keys, today)
        cadastre = await await_cadastre(admin, sequence)

    async def one(code: str, target: str) -> tuple[str, dict[str, int]]:
        async with (
            open_channel(target, credentials=admin_credentials, identity="admin") as admin_channel,
            open_channel(target, credentials=backoffice_credentials, identity="backoffice") as backoffice,
        ):
            await seed_oa(code, admin_channel, admin_channel, population, today)
            return code, await replay_history(code, admin_channel, backoffice, population)

    results = await asyncio.gather(*(one(c, t) for c, t in oas.items() if not only or c in only))
    info: dict[str, object] = {
        "members": len(population.members),
        # The --population asked for: the members but the demo patient and the newborns (what the bench
        # regenerates the same population from).
        "population": len(population.members) - 1 - len(population.newborns),
        "providers": len(population.providers),
        **cadastre,
        "history": dict(results),
    }
    if population.bulk:
        started = time.monotonic()
        await seed_bulk(population, oas=oas, today=today, credentials=admin_credentials)
        info["bulk_members"] = population.bulk
        info["bulk_seconds"] = round(time.monotonic() - started, 1)
    return info


def _member_proto(m: Member, code: str, today: dt.date) -> membership_service_pb2.Member:
    """The member as insurer ``code`` knows it (its periods there; a medical-house contract since 5 years;
    the insurability and care statuses at the member's insurer of today)."""
    periods = [a for a in m.affiliations if a.insurer == code]
    current = periods[-1] is m.affiliations[-1]  # statuses are kept by the member's insurer of today
    house = common_pb2.Period(start=_d(dt.date(today.year - 5, 1, 1))) if m.medical_house else None
    return membership_service_pb2.Member(
        patient=common_pb2.Patient(
            niss=m.niss,
            first_name=m.first_name,
            last_name=m.last_name,
            birth_date=_d(m.birth_date),
            sex=SEX[m.sex],
            member=common_pb2.MemberNumber(
                mutuality_code=code, registration_number=periods[-1].registration_number
            ),
        ),
        affiliations=[common_pb2.Period(start=_d(a.start), end=_d(a.end)) for a in periods],
        chronic_condition=m.chronic,
        medical_house_inami=m.medical_house,
        medical_house_period=house,
        insurability=[
            insurability_pb2.InsurabilityPeriod(
                period=common_pb2.Period(start=_d(i.start), end=_d(i.end)),
                status=insurability_pb2.InsurabilityStatus(
                    ct1=i.ct1, ct2=i.ct2, preferential_rate=i.preferential, maximum_billing=i.maximum_billing
                ),
            )
            for i in (m.insurability if current else [])
        ],
        care_statuses=[
            insurability_pb2.CareStatusPeriod(
                kind=insurability_pb2.CareStatusKind.Value(f"CARE_STATUS_KIND_{c.kind}"),
                period=common_pb2.Period(start=_d(c.start), end=_d(c.end)),
            )
            for c in (m.care if current else [])
        ],
    )


async def seed_bulk(
    population: Population,
    *,
    oas: dict[str, str],
    today: dt.date,
    credentials: grpc.ChannelCredentials | None,
) -> None:
    """Stream the bulk members to their insurers (as the administrator, ``credentials``), every insurer
    loading in parallel, one batch at a time each (an insurer's database takes one writer at a time
    anyway), with a bounded queue per insurer."""
    gps = [p.inami for p in population.providers if p.role == "gp"]
    channels = {
        code: open_channel(target, credentials=credentials, identity="admin") for code, target in oas.items()
    }
    queues: dict[str, asyncio.Queue[list[membership_service_pb2.Member] | None]] = {
        code: asyncio.Queue(maxsize=2) for code in oas
    }

    failures: list[BaseException] = []

    async def load(code: str) -> None:
        stub = membership_service_pb2_grpc.MembershipServiceStub(channels[code])
        while (batch := await queues[code].get()) is not None:
            if failures:
                continue  # drain: the producer stops at the next chunk
            try:
                request = membership_service_pb2.UpsertMembersRequest(members=batch)
                await stub.UpsertMembers(request, timeout=600)
            except grpc.aio.AioRpcError as error:
                failures.append(error)

    loaders = [asyncio.ensure_future(load(code)) for code in oas]
    try:
        for chunk in bulk_members(population.bulk, today, gps):
            if failures:
                break
            by_code: dict[str, list[membership_service_pb2.Member]] = defaultdict(list)
            for m in chunk:
                code = m.affiliations[-1].insurer
                by_code[code].append(_member_proto(m, code, today))
            for code, batch in by_code.items():
                await queues[code].put(batch)
        for queue in queues.values():
            await queue.put(None)
        await asyncio.gather(*loaders)
        if failures:
            raise failures[0]
    finally:
        for task in loaders:
            task.cancel()
        for ch in channels.values():
            await ch.close(None)
