"""The administrator's path and the provider's own data, through the `mycarenet` CLI against a real cluster
(issue 12), as a vendor sets up a test case:

* `mycarenet admin provider add` writes a new GP once, in eHealth's cadastre, with a credential key; it
  returns when the seven insurers (which follow the cadastre) know the GP, who then logs in and enrols at
  all seven with no other call, and notifies at its patient's insurer;
* `mycarenet admin patient add` makes a member at insurer 300; `mycarenet tr register` with the GP's own
  session lets it consult, `tr revoke` takes that away again;
* `mycarenet mandate give` lets a person (whose key `admin credential add` registered) log in under the
  mandate and consult, never beyond it (no notify), and `mandate revoke` ends that session's rights;
* `mycarenet credential revoke` ends the GP's own credential: its session and any new login fail.

Runs under mutual TLS (the cluster's admin certificate; on the shared cluster, with a GP, a patient and a
person of its own) and on an `--insecure` mesh of its own (every tool declares the identity it stands for).
"""

from __future__ import annotations

import datetime as dt
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mycarenet_core.identifiers import INSURER_CODES, Profession, make_inami, make_niss, parse_inami
from tests.cluster.cluster_support import (
    SHARED_TODAY,
    Cluster,
    cli,
    cli_refused,
    free_base_port,
    run_cli,
    wait_for,
)

TODAY = SHARED_TODAY
YESTERDAY = (dt.date.fromisoformat(TODAY) - dt.timedelta(days=1)).isoformat()
GP = make_inami(Profession.PHYSICIAN, 90_001, "003")  # not in the seeded population
GP_NISS = make_niss(dt.date(1979, 3, 14), 61)
PATIENT = make_niss(dt.date(1990, 5, 17), 123)
SECRETARY = make_niss(dt.date(1985, 7, 30), 34)  # a person, no INAMI: acts only under a mandate


@pytest.fixture
def insecure_cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "data", free_base_port(), extra_args=["--insecure"])
    try:
        yield c
    finally:
        c.down()


def test_the_admin_path_under_mutual_tls(
    shared_cluster: tuple[Cluster, dict[str, Any]], tmp_path: Path
) -> None:
    cluster, desc = shared_cluster  # the GP, the patient and the person are this test's own
    assert desc["today"] == TODAY
    a_vendor_sets_up_a_test_case_with_the_admin_path(cluster, desc, tmp_path)


def test_the_admin_path_on_an_insecure_mesh(insecure_cluster: Cluster, tmp_path: Path) -> None:
    a_vendor_sets_up_a_test_case_with_the_admin_path(insecure_cluster, insecure_cluster.up(TODAY), tmp_path)


def a_vendor_sets_up_a_test_case_with_the_admin_path(
    cluster: Cluster, desc: dict[str, Any], tmp_path: Path
) -> None:
    assert parse_inami(GP).role.name == "GENERAL_PRACTITIONER"
    data = cluster.data
    insecure = "--insecure" in cluster.extra_args
    if insecure:
        assert desc["tls"] is None
    else:
        # The administrator's certificate sits beside the provider software's and the back office's.
        for caller in ("client", "backoffice", "admin"):
            assert Path(desc["tls"][f"{caller}_cert"]).is_file()
            assert Path(desc["tls"][f"{caller}_key"]).is_file()
    # The seeder wrote the population once in eHealth and waited for every insurer to follow.
    seed = desc["seed"]
    assert set(seed["cadastre"]) == set(INSURER_CODES), seed
    assert all(applied >= seed["cadastre_sequence"] > 0 for applied in seed["cadastre"].values()), seed
    admin, gp, secretary = tmp_path / "admin.json", tmp_path / "gp.json", tmp_path / "secretary.json"

    # 1. The administrator adds the GP (key written to <data>/keys/GP.pem); the insurers know it on return.
    added = cli(
        data, admin, "admin", "provider", "add", GP, "--first", "Eva", "--last", "Claes", "--niss", GP_NISS
    )
    assert added["created"] is True
    assert added["provider"]["inami"] == GP
    assert added["provider"]["role"] == "PROVIDER_ROLE_GENERAL_PRACTITIONER"
    assert len(added["fingerprint"]) == 64
    key = Path(added["key_file"])
    assert key == data / "keys" / f"{GP}.pem"
    assert added["key_created"] is True
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert set(added["insurers"]) == set(INSURER_CODES)
    assert all(applied >= added["change_sequence"] > 0 for applied in added["insurers"].values())
    positions = cli(data, admin, "admin", "cadastre")
    assert positions["head_sequence"] >= added["change_sequence"]
    assert all(p["following"] for p in positions["insurers"].values()), positions

    # 2. The GP logs in with that key and enrols at all seven insurers: no other call was needed.
    cli(data, gp, "login", GP)
    me = cli(data, gp, "whoami")
    assert (me["provider"]["inami"], me["provider"]["last_name"]) == (GP, "Claes")
    enrolled = cli(
        data, gp, "enrol", "--iban", "BE68539007547034", "--bic", "GEBABEBB", "--holder", "Eva Claes"
    )
    outcomes = {o["insurer_code"]: o["status"] for o in enrolled["outcomes"]}
    assert outcomes == dict.fromkeys(INSURER_CODES, "ENROLMENT_STATUS_ENROLLED"), enrolled

    # 3. A patient at insurer 300; the GP registers its relation (the eID read) and consults.
    member = cli(
        data,
        admin,
        "admin",
        "patient",
        "add",
        PATIENT,
        "--insurer",
        "300",
        "--first",
        "Jan",
        "--last",
        "Peeters",
    )
    assert member["patient"]["member"] == {"mutuality_code": "300", "registration_number": f"M{PATIENT}"}
    relation = cli(data, gp, "tr", "register", PATIENT)
    assert (relation["provider_inami"], relation["patient_niss"]) == (GP, PATIENT)
    assert relation["proof"] == "RELATION_PROOF_EID_READ"
    assert [r["relation_id"] for r in cli(data, gp, "tr", "list")] == [relation["relation_id"]]
    # (the hub learns the new member from insurer 300's affiliation feed: a moment)
    assert wait_for(lambda: run_cli(data, gp, "consult", PATIENT).returncode == 0), cli(
        data, gp, "consult", PATIENT
    )
    seen = cli(data, gp, "consult", PATIENT)
    assert seen["insurer_code"] == "300"
    assert not seen.get("holding", {}).get("holder", {}).get("inami")

    # Without the relation the GP may not see the patient (cancelled: ended the day before it began).
    cli(data, gp, "tr", "revoke", relation["relation_id"], "--end", YESTERDAY)
    assert "NO_THERAPEUTIC_RELATION" in cli_refused(data, gp, "consult", PATIENT)
    cli(data, gp, "tr", "register", PATIENT)
    cli(data, gp, "consult", PATIENT)
    notified = cli(data, gp, "notify", PATIENT, "--contact-date", TODAY)
    assert notified["holder"]["inami"] == GP
    assert notified["insurer_code"] == "300"

    # 4. A mandate to a person: the administrator binds the person's key (the eID), the GP gives the mandate.
    registered = cli(data, admin, "admin", "credential", "add", SECRETARY, "--kind", "person")
    assert Path(registered["key_file"]) == data / "keys" / f"{SECRETARY}.pem"
    given = cli(data, gp, "mandate", "give", SECRETARY, "--service", "DMG_CONSULT")
    mandate = given["mandate"]
    assert (mandate["principal_inami"], mandate["mandatee_id"]) == (GP, SECRETARY)
    assert mandate["services"] == ["MANDATED_SERVICE_DMG_CONSULT"]
    assert [m["mandate_id"] for m in cli(data, gp, "mandate", "list")] == [mandate["mandate_id"]]
    cli(data, secretary, "login", SECRETARY, "--kind", "person", "--principal", GP)
    under_mandate = cli(data, secretary, "consult", PATIENT)
    assert under_mandate["holding"]["holder"]["inami"] == GP
    # Never beyond the mandate, and never the principal's own business.
    assert "MANDATE_NOT_COVERING" in cli_refused(data, secretary, "notify", PATIENT, "--contact-date", TODAY)
    assert "MANDATE_NOT_ALLOWED" in cli_refused(data, secretary, "tr", "register", PATIENT)
    # Revoked (cancelled from its first day): the session opened with it stops working on its next call.
    cli(data, gp, "mandate", "revoke", mandate["mandate_id"], "--end", YESTERDAY)
    cli_refused(data, secretary, "consult", PATIENT)

    # 5. The GP revokes its own credential: its session ends, the key logs in no more.
    revoked = cli(data, gp, "credential", "revoke")
    assert revoked["revoked"] is True
    cli_refused(data, gp, "consult", PATIENT)
    cli_refused(data, gp, "login", GP)
