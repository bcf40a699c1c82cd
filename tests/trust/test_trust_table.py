"""The trust table is complete (every RPC of every service, nothing else), well-formed, and README agrees."""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from ehealth.audit import AuditLog
from hub.insurability import InsurabilityServicer
from hub.invoicing import InvoicingServicer
from hub.services import DmgServicer, MailboxIntakeServicer, MailboxServicer
from mycarenet_core.clock import FixedClock
from mycarenet_core.trust import (
    TABLE,
    Auditing,
    CallRecord,
    Certificate,
    Peer,
    SessionNeed,
    Throttling,
    TrustTable,
    all_methods,
    load_table,
)

ROOT = Path(__file__).resolve().parents[2]
REGISTER_RELATION = "TherapeuticRelationService/RegisterRelation"


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


def test_ehealth_audits_every_login_and_write_and_throttles_nothing() -> None:
    """What eHealth's code did before the table said it (ehealth/audit.py now reads it): every call of the
    login and of each write, the failures of the others (a failed call has its row there, whatever its
    method declares: none is declared none)."""
    ehealth = {p.name: p for p in TABLE.for_service("mycarenet.ehealth.v1.")}
    assert {name for name, p in ehealth.items() if p.audit is Auditing.CALL} == {
        "CreateSession",
        "Logout",
        "RegisterCredential",
        "RevokeCredential",
        "RotateSigningKey",
        "UpsertProvider",
        "UpsertOrganisation",
        "RegisterRelation",
        "RevokeRelation",
        "TransferDmgRelation",
        "CreateMandate",
        "RevokeMandate",
    }
    assert {p.audit for p in ehealth.values() if p.audit is not Auditing.CALL} == {Auditing.FAILURES}
    assert {p.throttle for p in ehealth.values()} == {Throttling.NONE}


def test_the_sandbox_and_the_insurer_nodes_throttle_nothing_and_their_audit_is_their_codes() -> None:
    """Declared as the code did before the table said it: the sandbox's services audit nothing; an insurer
    node audits every call of its RPCs but its reads for the back office, the hub and eHealth's feeds."""
    sandbox = TABLE.for_service("mycarenet.sandbox.v1.")
    assert {(p.throttle, p.audit) for p in sandbox} == {(Throttling.NONE, Auditing.NONE)}
    node = TABLE.for_service("mycarenet.oa.v1.")
    assert {p.throttle for p in node} == {Throttling.NONE}
    assert {p.name for p in node if p.audit is not Auditing.CALL} == {
        "GetMember",
        "ListAffiliationChanges",
        "WatchAffiliationChanges",
        "GetCadastrePosition",
        "ListTariffs",
        "ListHolderChanges",
        "WatchHolderChanges",
    }
    assert {p.audit for p in node if p.audit is not Auditing.CALL} == {Auditing.NONE}


class Rows:
    """An audit writer that keeps the rows it is given."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any], *, awaited: bool = False) -> None:
        self.rows.append(row)


def kept(table: TrustTable, outcome: str, *, admitted: bool = True) -> set[str]:
    """The eHealth methods whose call ending with ``outcome`` has its row, under ``table`` (``admitted``: the
    trust model let it in; otherwise it refused it)."""
    log = AuditLog(
        SimpleNamespace(engine=create_async_engine("sqlite+aiosqlite://")),
        FixedClock(dt.datetime(2025, 3, 3, 9, tzinfo=dt.UTC)),
        table=table,
    )
    log.writer = Rows()  # type: ignore[assignment]
    methods = [p.method for p in table.for_service("mycarenet.ehealth.v1.")]
    for method in methods:
        log.observe(
            CallRecord(
                method,
                Peer.from_name("admin"),
                None,
                outcome,
                "" if outcome == "OK" else "X",
                admitted=admitted,
            )
        )
    return {"/mycarenet.ehealth.v1." + row["method"] for row in log.writer.rows}  # type: ignore[attr-defined]


def declaring(table: TrustTable, changes: dict[str, Auditing]) -> TrustTable:
    """``table`` with the eHealth methods ``changes`` names declaring the audit it gives."""
    policies = dict(table.policies)
    for name, audit in changes.items():
        method = f"/mycarenet.ehealth.v1.{name}"
        policies[method] = dataclasses.replace(policies[method], audit=audit)
    return dataclasses.replace(table, policies=policies)


def test_a_successful_call_has_its_row_when_its_method_is_declared_call_and_a_failed_one_always() -> None:
    ehealth = {p.method: p.audit for p in TABLE.for_service("mycarenet.ehealth.v1.")}
    assert f"/mycarenet.ehealth.v1.{REGISTER_RELATION}" in kept(TABLE, "OK")
    assert kept(TABLE, "OK") == {m for m, audit in ehealth.items() if audit is Auditing.CALL}
    assert kept(TABLE, "PERMISSION_DENIED") == set(ehealth)
    # the table is the source: declare a write's audit as failures and a read's as call
    changed = declaring(
        TABLE,
        {REGISTER_RELATION: Auditing.FAILURES, "TherapeuticRelationService/ListRelations": Auditing.CALL},
    )
    assert kept(changed, "OK") ^ kept(TABLE, "OK") == {
        f"/mycarenet.ehealth.v1.{REGISTER_RELATION}",
        "/mycarenet.ehealth.v1.TherapeuticRelationService/ListRelations",
    }
    assert kept(changed, "PERMISSION_DENIED") == set(ehealth)


def test_a_method_declared_unaudited_has_rows_only_for_the_calls_the_trust_model_refuses() -> None:
    method = f"/mycarenet.ehealth.v1.{REGISTER_RELATION}"
    silent = declaring(TABLE, {REGISTER_RELATION: Auditing.NONE})
    assert method in kept(TABLE, "INVALID_ARGUMENT")
    assert method not in kept(silent, "INVALID_ARGUMENT")  # admitted, failed in its handler: no row
    assert method not in kept(silent, "OK")
    assert method in kept(silent, "PERMISSION_DENIED", admitted=False)  # refused by the trust model: its row


def test_a_table_that_throttles_an_ehealth_method_is_refused() -> None:
    policies = dict(TABLE.policies)
    method = f"/mycarenet.ehealth.v1.{REGISTER_RELATION}"
    policies[method] = dataclasses.replace(policies[method], throttle=Throttling.CALL)
    with pytest.raises(ValueError, match="eHealth throttles nothing"):
        kept(dataclasses.replace(TABLE, policies=policies), "OK")


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
