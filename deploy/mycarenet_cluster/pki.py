"""The cluster's private PKI: one CA and one certificate per process, plus one per kind of caller outside
the mesh (``client``, ``backoffice``, ``admin``), on first start.

Every process presents its certificate and verifies its peer's against the CA (mutual TLS). The common
name says who a caller is ("hub", "ehealth", "oa-100" ..., "client", "backoffice", "admin"): every server
admits it only to what ``mycarenet_core/trust.toml`` grants that kind. Next to them, the cluster's own
pseudonymisation key for the patients in its traces (:func:`ensure_patient_key`).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=825)


@dataclass(frozen=True)
class CertPaths:
    """Where one identity's files are."""

    ca: Path
    cert: Path
    key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mycarenet-mesh local cluster"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def ensure_ca(folder: Path) -> tuple[Path, Path]:
    """The CA certificate and key in ``folder``, created when missing."""
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "ca.pem", folder / "ca-key.pem"
    if cert_path.is_file() and key_path.is_file():
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("mycarenet-mesh local CA"))
        .issuer_name(_name("mycarenet-mesh local CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def ensure_identity(
    folder: Path, common_name: str, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")
) -> CertPaths:
    """A certificate for ``common_name`` signed by the CA in ``folder``, created when missing."""
    ca_cert_path, ca_key_path = ensure_ca(folder)
    cert_path, key_path = folder / f"{common_name}.pem", folder / f"{common_name}-key.pem"
    if cert_path.is_file() and key_path.is_file():
        return CertPaths(ca_cert_path, cert_path, key_path)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    alt_names: list[x509.GeneralName] = [x509.DNSName(common_name)]
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CertPaths(ca_cert_path, cert_path, key_path)


KEY_FILENAME = "telemetry.key"  # the pseudonymisation key (never a default)


def ensure_patient_key(folder: Path) -> Path:
    """The cluster's own pseudonymisation key (the patients' pseudonyms in its traces), made once like its
    certificates: 32 random bytes as hexadecimal in ``folder/telemetry.key``, readable by its owner only
    (0600). Every process is given its path (``MCN_TELEMETRY_KEY_FILE``); another cluster, another key."""
    from mycarenet_core.telemetry import new_patient_key

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / KEY_FILENAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        path.chmod(0o600)
        return path
    with os.fdopen(fd, "w") as out:
        out.write(new_patient_key() + "\n")
    return path
