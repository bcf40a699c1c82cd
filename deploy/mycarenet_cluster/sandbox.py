"""The sandbox's own gRPC server, run by the cluster supervisor beside the processes of the mesh.

It serves the administrator's controls of the running mesh (the test clock, chaos) like every process of
the mesh serves its services: one :class:`~mycarenet_core.server.MeshServer` (health, reflection, error
mapping), the trust table enforced (``mycarenet_core/trust.toml``: administrator certificate only), mutual
TLS with the cluster's PKI (its own certificate, ``sandbox``). Its address is ``sandbox.address`` in
``<data>/cluster.json``; its port is the cluster's base port + 2.

Usage (the supervisor)::

    server = build_server([Service(add_fn, servicer, "mycarenet.sandbox.v1.XService"), ...], cfg)
    await server.start(address(cfg))
    ...
    await server.stop()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mycarenet_cluster import pki
from mycarenet_core.channels import server_credentials
from mycarenet_core.server import MeshServer, Service
from mycarenet_core.trust import TrustInterceptor

if TYPE_CHECKING:
    from mycarenet_cluster.supervisor import ClusterConfig

PORT_OFFSET = 2  # hub = base, eHealth = base + 1, the sandbox = base + 2
NAME = "sandbox"


def address(cfg: ClusterConfig) -> str:
    """Where the sandbox server listens."""
    return f"{cfg.host}:{cfg.base_port + PORT_OFFSET}"


def build_server(services: Sequence[Service], cfg: ClusterConfig) -> MeshServer:
    """The sandbox server with ``services`` mounted (not started); plaintext on an insecure cluster."""
    credentials = None
    if not cfg.insecure:
        ident = pki.ensure_identity(cfg.data / "pki", NAME)
        credentials = server_credentials(ident.ca, ident.cert, ident.key)
    return MeshServer(
        NAME, services, credentials=credentials, trust=TrustInterceptor(secure=credentials is not None)
    )


__all__ = ["NAME", "PORT_OFFSET", "address", "build_server"]
