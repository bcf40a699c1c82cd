"""With mutual TLS, only an OA's own certificate ("oa-<code>") may deliver that OA's messages, and no other
kind of certificate (provider software, a back office, the administrator) delivers at all; the public
services answer only provider software; and the hub's configuration parser."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from mycarenet_cluster import pki

from hub.__main__ import parse_targets
from hub.app import HubApp
from mycarenet_core.channels import client_credentials, server_credentials
from mycarenet_core.clock import FixedClock
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2, mailbox_service_pb2_grpc
from mycarenet_core.gen.mycarenet.dmg.v1 import mailbox_service_pb2 as mbx
from mycarenet_core.gen.mycarenet.hub.v1 import mailbox_intake_service_pb2 as intake
from mycarenet_core.gen.mycarenet.hub.v1 import mailbox_intake_service_pb2_grpc
from mycarenet_core.trust import PEER_METADATA
from tests.hub.helpers import rejected
from tests.hub.mesh import FAST, NOW, free_port


def message(message_id: str) -> dmg_pb2.MailboxMessage:
    return dmg_pb2.MailboxMessage(
        message_id=message_id, kind=dmg_pb2.MESSAGE_KIND_EXTENSION, recipient_inami="10000101004"
    )


async def test_only_the_oas_own_certificate_delivers_its_messages(tmp_path: Path) -> None:
    hub_id = pki.ensure_identity(tmp_path / "pki", "hub")
    hub = await HubApp.create(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
        clock=FixedClock(NOW),
        ehealth_target=f"127.0.0.1:{free_port()}",  # not needed for intake
        oa_targets={},
        server_credentials=server_credentials(hub_id.ca, hub_id.cert, hub_id.key),
        tuning=FAST,
    )
    port = await hub.start("127.0.0.1:0")
    try:
        for name, insurer, refusal in (
            ("oa-100", "100", ""),
            ("oa-100", "200", "NOT_THIS_INSURER"),
            ("oa-300", "100", "NOT_THIS_INSURER"),
            ("client", "100", "CERTIFICATE_NOT_ALLOWED"),
            ("backoffice", "100", "CERTIFICATE_NOT_ALLOWED"),
            ("admin", "100", "CERTIFICATE_NOT_ALLOWED"),
        ):
            me = pki.ensure_identity(tmp_path / "pki", name)
            channel = grpc.aio.secure_channel(f"localhost:{port}", client_credentials(me.ca, me.cert, me.key))
            async with channel:
                stub = mailbox_intake_service_pb2_grpc.MailboxIntakeServiceStub(channel)
                request = intake.DeliverMessagesRequest(
                    insurer_code=insurer, messages=[message(f"{name}-{insurer}")]
                )
                if not refusal:
                    answer = await stub.DeliverMessages(request, timeout=5)
                    assert list(answer.stored_ids) == [f"{name}-{insurer}"]
                else:
                    error = await rejected(stub.DeliverMessages(request, timeout=5))
                    assert (error.status.name, error.reason) == ("PERMISSION_DENIED", refusal), name
                # Under TLS the certificate says who calls: declaring another kind changes nothing.
                forged = await rejected(
                    stub.DeliverMessages(
                        intake.DeliverMessagesRequest(insurer_code="200", messages=[message("forged")]),
                        metadata=((PEER_METADATA, "oa-200"),),
                        timeout=5,
                    )
                )
                assert forged.status.name == "PERMISSION_DENIED"
                mailbox = mailbox_service_pb2_grpc.MailboxServiceStub(channel)
                error = await rejected(mailbox.GetMessages(mbx.GetMessagesRequest(), timeout=5))
                expected = "MISSING_TOKEN" if name == "client" else "CERTIFICATE_NOT_ALLOWED"
                assert error.reason == expected, name
    finally:
        await hub.stop(0)


def test_oa_targets_are_parsed_and_checked() -> None:
    assert parse_targets("100=a:1, 200=b:2") == {"100": "a:1", "200": "b:2"}
    for bad in ("", "100", "123=a:1", "100="):
        with pytest.raises(ValueError, match=r"OA target|at least one"):
            parse_targets(bad)
