"""The trust table is complete (every RPC of every service, nothing else), well-formed, and README agrees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ehealth.audit import ALWAYS
from hub.insurability import InsurabilityServicer
from hub.invoicing import InvoicingServicer
from hub.services import DmgServicer, MailboxIntakeServicer, MailboxServicer
from mycarenet_core.trust import (
    TABLE,
    Auditing,
    Certificate,
    Peer,
    SessionNeed,
    Throttling,
    all_methods,
    load_table,
)

ROOT = Path(__file__).resolve().parents[2]


def test_every_rpc_of_every_service_is_in_the_table_and_nothing_else() -> None:
    assert set(TABLE.policies) == all_methods()


def test_every_rpc_grants_someone_and_provider_software_never_without_proof() -> None:
    for policy in TABLE.policies.values():
        assert policy.grants, policy.method
        client = policy.grants.get(Certificate.CLIENT)
        if client is not None and client.session is SessionNeed.NONE:
            # Only the login steps, the public keys and logout (the token is its own proof).
            assert policy.service == "mycarenet.ehealth.v1.AuthService", policy.method


def test_the_administrative_writes_need_the_admin_certificate() -> None:
    for method in (
        "/mycarenet.ehealth.v1.AuthService/RegisterCredential",
        "/mycarenet.ehealth.v1.AuthService/RotateSigningKey",
        "/mycarenet.ehealth.v1.CadastreService/UpsertProvider",
        "/mycarenet.ehealth.v1.CadastreService/UpsertOrganisation",
        "/mycarenet.ehealth.v1.CadastreService/ListProviders",
    ):
        assert set(TABLE.policies[method].grants) == {Certificate.ADMIN}, method


def test_a_malformed_table_is_refused(tmp_path: Path) -> None:
    text = (ROOT / "mycarenet_core" / "trust.toml").read_text()
    bad = tmp_path / "trust.toml"
    bad.write_text(
        text + '\n[[rpc]]\nmethod = "/x.Y/Z"\ngrants = [{ certificate = "admin", session = "none", '
        'roles = ["DENTIST"] }]\n'
    )
    with pytest.raises(ValueError, match="roles and service need a session"):
        load_table(bad)
    bad.write_text(
        text + '\n[[rpc]]\nmethod = "/x.Y/Z"\ngrants = [{ certificate = "nobody", session = "none" }]\n'
    )
    with pytest.raises(ValueError, match="nobody"):
        load_table(bad)


HUB_SERVICERS = (DmgServicer, MailboxServicer, InsurabilityServicer, InvoicingServicer, MailboxIntakeServicer)


def test_every_hub_rpc_declares_its_throttle_and_audit() -> None:
    methods = [f"/{s.SERVICE.full_name}/{m.name}" for s in HUB_SERVICERS for m in s.SERVICE.methods]
    assert len(methods) == 12
    undeclared = [m for m in methods if TABLE.policies[m].throttle is None or TABLE.policies[m].audit is None]
    assert undeclared == []
    # the units the hub's code used before they were declared here (issue 13): tokens per call or per insurer
    per = {m.rsplit("/", 1)[1]: TABLE.policies[m].throttle for m in methods}
    assert {name for name, unit in per.items() if unit is Throttling.INSURER} == {
        "PostPatientList",
        "PostInvoiceBatch",
    }
    assert {name for name, unit in per.items() if unit is Throttling.CALL} == {
        "ConsultDmg",
        "NotifyDmg",
        "GetMemberData",
        "ConsultRights",
        "SendAttest",
    }
    assert all(TABLE.policies[m].audit is Auditing.CALL for m in methods)


def test_ehealths_audit_is_what_the_table_declares() -> None:
    """eHealth audits every call of the methods declared ``call`` and the failures of the others."""
    ehealth = {m: p for m, p in TABLE.policies.items() if m.startswith("/mycarenet.ehealth.")}
    assert {m for m, p in ehealth.items() if p.audit is Auditing.CALL} == ALWAYS
    assert {p.audit for m, p in ehealth.items() if m not in ALWAYS} == {Auditing.FAILURES}
    assert {p.throttle for p in ehealth.values()} == {Throttling.NONE}


@pytest.mark.parametrize(
    ("keys", "error"),
    [
        ('throttle = "patient"\naudit = "call"', "'patient' is no Throttling"),
        ('throttle = "call"\naudit = "sometimes"', "'sometimes' is no Auditing"),
        ('throttle = "call"', "no audit \\(every RPC declares"),
        ('audit = "none"', "no throttle \\(every RPC declares"),
        ("", "no throttle \\(every RPC declares"),
        ('throttle = "none"\naudit = "call"\ncost = "insurers"', "unknown keys"),
    ],
)
def test_a_table_with_an_unknown_or_half_policy_is_refused(tmp_path: Path, keys: str, error: str) -> None:
    text = (ROOT / "mycarenet_core" / "trust.toml").read_text()
    bad = tmp_path / "trust.toml"
    grant = 'grants = [{ certificate = "client", session = "provider" }]'
    bad.write_text(f'{text}\n[[rpc]]\nmethod = "/x.Y/Z"\n{grant}\n{keys}\n')
    with pytest.raises(ValueError, match=error):
        load_table(bad)


def test_every_rpc_of_every_service_declares_its_throttle_and_audit() -> None:
    """The loader refuses a method without them (above); README shows no undeclared column."""
    assert all(p.throttle is not None and p.audit is not None for p in TABLE.policies.values())
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("<!-- trust-table:begin") : readme.index("<!-- trust-table:end")]
    rows = [line for line in section.splitlines() if line.startswith("| ") and line.count(" | ") >= 4]
    assert len(rows) == len(TABLE.policies) + 1  # and the header
    assert [r for r in rows if r.endswith(" | — | — |")] == []


def test_a_throttle_needs_a_session_to_count_for(tmp_path: Path) -> None:
    text = (ROOT / "mycarenet_core" / "trust.toml").read_text()
    table = tmp_path / "trust.toml"
    rpc = '\n[[rpc]]\nmethod = "/x.Y/Z"\ngrants = [{ certificate = "hub", session = "none" }]\n'
    table.write_text(text + rpc + 'throttle = "none"\naudit = "none"\n')
    assert load_table(table).policies["/x.Y/Z"].throttle is Throttling.NONE
    table.write_text(text + rpc + 'throttle = "call"\naudit = "none"\n')
    with pytest.raises(ValueError, match="grants need a session"):
        load_table(table)


@pytest.mark.parametrize(
    ("name", "certificate", "insurer"),
    [
        ("client", Certificate.CLIENT, ""),
        ("oa-300", Certificate.OA, "300"),
        ("admin", Certificate.ADMIN, ""),
        ("oa-3000", None, ""),
        ("root", None, ""),
    ],
)
def test_peer_names(name: str, certificate: Certificate | None, insurer: str) -> None:
    peer = Peer.from_name(name)
    assert (peer.certificate, peer.insurer_code) == (certificate, insurer)


def test_readme_table_is_generated_from_the_same_file() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "trust_table.py"), "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
