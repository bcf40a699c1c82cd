"""``python -m mycarenet_cluster.secrets``: the certificate folders the compose file and the Kubernetes
Secrets mount, each naming its actor (and its in-cluster DNS names)."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from mycarenet_cluster import secrets


def test_one_folder_per_identity_with_the_mounted_layout(tmp_path: Path) -> None:
    folders = secrets.write(tmp_path, namespace="mycarenet")
    assert set(folders) == {*secrets.ACTORS, "client", "backoffice", "admin"}
    assert len(secrets.ACTORS) == 9
    for name, folder in folders.items():
        assert sorted(p.name for p in folder.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]
        assert (folder / "tls.key").stat().st_mode & 0o077 == 0
        cert = x509.load_pem_x509_certificate((folder / "tls.crt").read_bytes())
        cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
        assert cn == name
        dns = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName
        )
        assert name in dns
        if name in secrets.ACTORS:
            assert f"{name}.mycarenet.svc.cluster.local" in dns
    again = secrets.write(tmp_path, namespace="mycarenet")  # idempotent: the CA is kept
    assert (again["hub"] / "ca.crt").read_bytes() == (folders["hub"] / "ca.crt").read_bytes()
    # This deployment's own pseudonymisation key (the compose file mounts it; the tracing component's Secret)
    key = tmp_path / "telemetry.key"
    assert key.stat().st_mode & 0o077 == 0
    assert len(bytes.fromhex(key.read_text())) >= 32
