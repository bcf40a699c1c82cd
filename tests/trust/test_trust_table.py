"""The trust table is complete (every RPC of every service, nothing else), well-formed, and README agrees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mycarenet_core.trust import TABLE, Certificate, Peer, SessionNeed, all_methods, load_table

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
