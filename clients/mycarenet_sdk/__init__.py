"""Python SDK for the mycarenet-mesh (and, by design, for the real MyCareNet DMG services' meaning).

    import mycarenet_sdk

    async with mycarenet_sdk.connect(hub="127.0.0.1:7400", ehealth="127.0.0.1:7401") as client:
        await client.login("18273400304", private_key_pem)
        answer = await client.consult("85073003328")

Every failure raises :class:`MyCareNetError` with the gRPC status code, the reason, the MyCareNet codes
and the field violations.
"""

from mycarenet_sdk.client import Client, MyCareNetError, Session, connect
from mycarenet_sdk.sync import SyncClient, connect_sync

__all__ = ["Client", "MyCareNetError", "Session", "SyncClient", "connect", "connect_sync"]
