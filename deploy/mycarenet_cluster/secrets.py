"""``python -m mycarenet_cluster.secrets OUT [--namespace NS]``: the mesh certificates for containers.

Writes one folder per identity — ``ehealth``, ``hub``, ``oa-100`` … ``oa-900``, ``client`` (provider
software), ``backoffice`` (the insurers' back office) and ``admin`` (the sandbox administrator: eHealth's
cadastre, credentials, relations and mandates for others; keep it with the operators) — each with
``ca.crt``, ``tls.crt`` and ``tls.key``, the layout the compose file mounts at ``/etc/mycarenet/tls`` and
that ``kubectl create secret generic mycarenet-tls-<name> --from-file=OUT/<name>`` turns into the Secrets
the Kubernetes manifests mount. The CA itself stays in ``OUT/pki`` (keep its key out of every cluster).
``OUT/telemetry.key`` is this deployment's own pseudonymisation key (the patients in its traces; 0600):
the compose file mounts it, and ``kubectl create secret generic mycarenet-telemetry-key
--from-file=telemetry.key=OUT/telemetry.key`` makes the Secret the tracing component mounts.
Certificates name the actor (``hub``), and with ``--namespace`` its in-cluster DNS names too.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from mycarenet_cluster import pki
from mycarenet_core.identifiers import INSURER_CODES

ACTORS = ("ehealth", "hub", *(f"oa-{code}" for code in INSURER_CODES))
CALLERS = ("client", "backoffice", "admin")  # parties outside the mesh (see mycarenet_core/trust.toml)
IDENTITIES = (*ACTORS, *CALLERS)


def write(out: Path, namespace: str | None = None) -> dict[str, Path]:
    """Create (or keep) the CA and every identity; copy them into ``out/<name>/``; return the folders."""
    folders: dict[str, Path] = {}
    for name in IDENTITIES:
        hosts: tuple[str, ...] = ("localhost", "127.0.0.1")
        if namespace and name in ACTORS:
            hosts += (
                f"{name}.{namespace}",
                f"{name}.{namespace}.svc",
                f"{name}.{namespace}.svc.cluster.local",
            )
        ident = pki.ensure_identity(out / "pki", name, hosts)
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for source, target, mode in ((ident.ca, "ca.crt", 0o644), (ident.cert, "tls.crt", 0o644)):
            shutil.copyfile(source, folder / target)
            (folder / target).chmod(mode)
        shutil.copyfile(ident.key, folder / "tls.key")
        (folder / "tls.key").chmod(0o600)
        folders[name] = folder
    pki.ensure_patient_key(out)
    return folders


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mycarenet_cluster.secrets", description=__doc__)
    parser.add_argument("out", type=Path, help="output folder (e.g. deploy/compose/secrets)")
    parser.add_argument("--namespace", help="Kubernetes namespace: add <name>.<namespace>.svc... names")
    args = parser.parse_args(argv)
    for name, folder in write(args.out, args.namespace).items():
        print(f"{name}: {folder}")


if __name__ == "__main__":
    main()
