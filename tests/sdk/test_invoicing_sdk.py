"""The SDK's eFact and eAttest, as a vendor's test uses them on the in-process mesh (issue 14): a GP plays S1
on its own, notify then its eFact for next year's first contact, and finds the prolongation and the answer
to its line in its mailbox; the same with eAttest."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from mycarenet_sdk import Client, InvoiceLine
from mycarenet_sdk.testing import InProcessMesh

from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2

NOV_20 = dt.date(2026, 11, 20)


async def until(
    client: Client, kind: dmg_pb2.MessageKind.ValueType, count: int
) -> list[dmg_pb2.MailboxMessage]:
    for _ in range(150):
        found = await client.all_messages(kinds=[kind])
        if len(found) >= count:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"fewer than {count} messages of kind {kind}")


async def test_s1_by_efact_then_by_eattest(tmp_path: Path) -> None:
    async with InProcessMesh(tmp_path, insurers=("100", "300"), today=NOV_20) as mesh:
        bruno = await mesh.add_provider(first_name="Bruno", last_name="Peeters", enrolled=True)
        marie = await mesh.add_patient(insurer="300", first_name="Marie", last_name="Lambert")
        jan = await mesh.add_patient(insurer="100", first_name="Jan", last_name="Peeters")
        async with mesh.client() as gp:
            await gp.login(bruno.inami, bruno.key)
            for patient in (marie, jan):
                await gp.register_relation(patient.niss)
                await gp.notify(patient.niss, contact_date=NOV_20, nomenclature_code="101076")
        mesh.clock.advance(dt.timedelta(days=60))  # 19 January 2027
        async with mesh.client() as gp:
            await gp.login(bruno.inami, bruno.key)
            tack = await gp.post_invoices(
                [InvoiceLine(marie.niss, dt.date(2027, 1, 12), "101076", "30.00")], reference="F-2027-1"
            )
            assert list(tack.insurer_codes) == ["300"]
            [answer] = await until(gp, dmg_pb2.MESSAGE_KIND_INVOICE_ANSWER, 1)
            assert answer.invoice_answer.result == dmg_pb2.INVOICE_LINE_RESULT_ACCEPTED
            [extension] = await until(gp, dmg_pb2.MESSAGE_KIND_EXTENSION, 1)
            assert extension.extension.patient.niss == marie.niss
            attested = await gp.send_attest(
                jan.niss, contact_date=dt.date(2027, 1, 13), nomenclature_code="101076", amount="30.00"
            )
            assert attested.insurer_code == "100"
            extensions = await until(gp, dmg_pb2.MESSAGE_KIND_EXTENSION, 2)
            assert {m.extension.patient.niss for m in extensions} == {marie.niss, jan.niss}
