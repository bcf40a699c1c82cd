"""What the cluster's command line needs to look at a running cluster, and nothing heavier: its description
file, whether a pid lives, the callers' mTLS credentials and a process's grpc health.

Kept apart from the supervisor (which imports the seeder, the SDK and telemetry) so that ``mycarenet-cluster
status`` and ``down`` start fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mycarenet_core.channels import client_credentials, open_channel

DESCRIPTION = "cluster.json"

# The certificates the cluster makes for callers outside the mesh (see mycarenet_core/trust.toml):
#   client      provider software (hub and eHealth; with a provider's own session token)
#   backoffice  the insurers' back office (invoicing intake, members): `mycarenet oa ...`
#   admin       the sandbox administrator (eHealth's cadastre, credentials, relations and mandates for
#               others, key rotation; members and reference data at the insurers; the test clock and chaos):
#               the seeder and `mycarenet admin ...`
CALLERS = ("client", "backoffice", "admin")


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this pid exists (a zombie counts until its parent reaps it)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running(pid: int | None) -> bool:
    """Whether ``pid`` lives and is not a zombie (a process that ended and waits for its parent to reap
    it, e.g. a cluster that a test started and has not waited for yet)."""
    if not pid_alive(pid):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc here: as far as can be told, it lives
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def channel_credentials(tls: dict[str, str] | None, caller: str = "client") -> grpc.ChannelCredentials | None:
    """Mutual-TLS credentials of ``caller`` (client, backoffice or admin) from the cluster's ``tls``
    description; None on an insecure cluster (then the caller declares itself: ``open_channel(...,
    identity=caller)``)."""
    if tls is None:
        return None
    if caller not in CALLERS:
        raise ValueError(f"unknown caller certificate {caller!r} (one of {', '.join(CALLERS)})")
    return client_credentials(Path(tls["ca"]), Path(tls[f"{caller}_cert"]), Path(tls[f"{caller}_key"]))


async def health(address: str, credentials: grpc.ChannelCredentials | None, deadline: float = 2.0) -> str:
    """The overall health of a process ("SERVING", "NOT_SERVING", or "UNREACHABLE")."""
    async with open_channel(address, credentials=credentials) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=deadline
            )
        except grpc.aio.AioRpcError:
            return "UNREACHABLE"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


__all__ = ["CALLERS", "DESCRIPTION", "channel_credentials", "health", "pid_alive", "running"]
