"""Credential keys: the Ed25519 key a provider (or a mandated person) logs in with.

eHealth binds a public key to a person (the sandbox administrator registers it, as the eID does in the real
platform); the private key stays with the person, in a PEM file that ``mycarenet login`` signs challenges
with.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def load_private_key(key: Ed25519PrivateKey | bytes | str | Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from an object, PEM bytes/text, or a PEM file path."""
    if isinstance(key, Ed25519PrivateKey):
        return key
    if isinstance(key, Path) or (isinstance(key, str) and not key.lstrip().startswith("-----")):
        key = Path(key).read_bytes()
    data = key.encode() if isinstance(key, str) else key
    loaded = serialization.load_pem_private_key(data, password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError("the key is not an Ed25519 private key")
    return loaded


def private_pem(key: Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM of a private key (unencrypted: a sandbox key)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """SubjectPublicKeyInfo PEM of the public half."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def fingerprint(key: Ed25519PrivateKey | Ed25519PublicKey | str) -> str:
    """The credential's fingerprint as eHealth reports it: SHA-256 of the DER SubjectPublicKeyInfo, hex.

    ``key`` is a key object or a public key PEM."""
    if isinstance(key, str):
        loaded = serialization.load_pem_public_key(key.encode())
        if not isinstance(loaded, Ed25519PublicKey):
            raise ValueError("the key is not an Ed25519 public key")
        key = loaded
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def ensure_key_file(path: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The private key in ``path``; a new one is generated and written there (mode 0600) when the file does
    not exist. Returns the key and whether it was created."""
    if path.is_file():
        return load_private_key(path), False
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private_pem(key))
    tmp.replace(path)
    return key, True
