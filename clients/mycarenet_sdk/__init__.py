"""Python SDK for the mycarenet-mesh (and, by design, for the real MyCareNet DMG services' meaning).

    import mycarenet_sdk

    async with mycarenet_sdk.connect(hub="127.0.0.1:7400", ehealth="127.0.0.1:7401") as client:
        await client.login("18273400304", private_key_pem)
        answer = await client.consult("85073003328")

Provider software uses :func:`connect` (the ``client`` certificate and the provider's own session); the
sandbox administrator uses :func:`connect_admin` (the ``admin`` certificate: cadastre, credentials, members,
relations and mandates for anyone). Every failure raises :class:`MyCareNetError` with the gRPC status code,
the reason, the MyCareNet codes and the field violations.
"""

from mycarenet_sdk.admin import (
    AdminClient,
    CadastrePosition,
    ProviderAdded,
    admin_from_cluster,
    connect_admin,
    wait_for_cadastre,
)
from mycarenet_sdk.client import Client, InvoiceLine, MyCareNetError, Session, connect
from mycarenet_sdk.keys import ensure_key_file, fingerprint, load_private_key, public_pem
from mycarenet_sdk.sync import SyncAdminClient, SyncClient, connect_admin_sync, connect_sync

__all__ = [
    "AdminClient",
    "CadastrePosition",
    "Client",
    "InvoiceLine",
    "MyCareNetError",
    "ProviderAdded",
    "Session",
    "SyncAdminClient",
    "SyncClient",
    "admin_from_cluster",
    "connect",
    "connect_admin",
    "connect_admin_sync",
    "connect_sync",
    "ensure_key_file",
    "fingerprint",
    "load_private_key",
    "public_pem",
    "wait_for_cadastre",
]
