"""eFact on the in-process mesh (``tests/hub/mesh.py``, SQLite, insurers 100 and 200): how long the technical
acknowledgement of a batch takes (every insurer concerned has stored its lines) and how long until every
line's answer is in the requester's mailbox (each insurer registers each line's contact in its own
transaction, then writes its answer to the outbox, relayed to the hub).

    .venv/bin/python benchmarks/efact_batch.py --lines 500

Measured on the 2-core box, shared with three other sessions' work (load average about 1.5), issue 14:
a 500-line batch (half to each insurer, distinct contact dates) was acknowledged in 125-128 ms and fully
answered in the mailbox 8.6 s after the post (about 59 lines/s for the two insurers together); a 10-line batch
in 14-17 ms and 0.19 s (two runs).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import tempfile
import time
from pathlib import Path

from mycarenet_core.dates import to_proto
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import mailbox_service_pb2 as mbx
from mycarenet_core.gen.mycarenet.invoicing.v1 import invoicing_service_pb2 as inv
from mycarenet_core.gen.mycarenet.invoicing.v1 import invoicing_service_pb2_grpc as inv_grpc
from tests.hub.mesh import TODAY, Mesh, bearer, running_mesh


async def answered(mesh: Mesh, token: str) -> int:
    count, page = 0, ""
    while True:
        found = await mesh.mailbox.GetMessages(
            mbx.GetMessagesRequest(
                kinds=[dmg_pb2.MESSAGE_KIND_INVOICE_ANSWER], page_token=page, page_size=500
            ),
            metadata=bearer(token),
            timeout=30,
        )
        count, page = count + len(found.messages), found.next_page_token
        if not page:
            return count


async def run(sizes: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with running_mesh(Path(tmp), insurers=("100", "200")) as mesh:
            gp = mesh.people["gp_a"]
            token = await mesh.login(gp)
            patients = [mesh.members[k].niss for k in ("p100", "p200")]
            stub = inv_grpc.InvoicingServiceStub(mesh.channel(mesh.hub_port))
            shift = 0
            for n, size in enumerate(sizes):
                lines = [
                    inv.InvoiceLine(
                        line_number=i + 1,
                        patient_niss=patients[i % 2],
                        provider_inami=gp.inami,
                        contact_date=to_proto(TODAY - dt.timedelta(days=shift + i // 2)),
                        nomenclature_code="101010",
                        amount=common_pb2.Money(currency_code="EUR", amount="30.00"),
                    )
                    for i in range(size)
                ]
                shift += size // 2 + 1
                before = await answered(mesh, token)
                started = time.perf_counter()
                await stub.PostInvoiceBatch(
                    inv.PostInvoiceBatchRequest(requester_reference=f"bench-{n}", lines=lines),
                    metadata=bearer(token),
                    timeout=60,
                )
                acked = time.perf_counter()
                while await answered(mesh, token) < before + size:  # noqa: ASYNC110 (polling the mailbox)
                    await asyncio.sleep(0.05)
                done = time.perf_counter()
                print(
                    f"{size} lines: acknowledged in {1000 * (acked - started):.0f} ms, every answer in the"
                    f" mailbox after {done - started:.2f} s"
                    f" ({size / (done - acked):.0f} lines/s after the tAck)"
                )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, action="append", help="batch size (repeat); default 10 then 500")
    args = parser.parse_args()
    asyncio.run(run(args.lines or [10, 500]))


if __name__ == "__main__":
    main()
