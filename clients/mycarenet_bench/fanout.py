"""The patient list's fan-out: from ``PostPatientList`` to the ``PATIENT_LIST`` message in the mailbox,
asked of all seven OAs at once and of each OA alone, so that the fan-out compares to its slowest OA."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mycarenet_bench.mesh import Mesh
from mycarenet_bench.stats import new_histogram, summarize_histogram
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2, mailbox_service_pb2
from mycarenet_core.identifiers import INSURER_CODES


async def measure_fanout(mesh: Mesh, gp: str, *, repeat: int = 10, wait: float = 90.0) -> dict[str, Any]:
    """``repeat`` lists per scope ("all" and each OA alone), one at a time, by ``gp``."""
    await mesh.login(gp)
    metadata = [("authorization", f"Bearer {mesh.tokens[gp]}")]
    stub: Any = mesh.mailbox  # generated stubs are typed for the sync API
    arrived: dict[str, tuple[float, dmg_pb2.MailboxMessage]] = {}
    changed = asyncio.Event()
    scopes: list[tuple[str, list[str]]] = [("all", [])] + [(c, [c]) for c in INSURER_CODES]
    total = repeat * len(scopes) * wait
    watch = stub.WatchMessages(mailbox_service_pb2.WatchMessagesRequest(), metadata=metadata, timeout=total)

    async def follow() -> None:
        async for event in watch:
            message = event.message
            if message.kind == dmg_pb2.MESSAGE_KIND_PATIENT_LIST:
                arrived[message.requester_reference] = (time.monotonic(), message)
                changed.set()

    follower = asyncio.create_task(follow())
    today = mesh.handle.today
    date = common_pb2.Date(year=today.year, month=today.month, day=today.day)
    out: dict[str, Any] = {"gp": gp, "repeat": repeat, "scopes": {}}
    try:
        for name, codes in scopes:
            hist, ack_hist = new_histogram(), new_histogram()
            entries, missing = 0, 0
            for i in range(repeat):
                reference = f"bench-list-{name}-{i}-{time.time_ns()}"
                sent = time.monotonic()
                await stub.PostPatientList(
                    mailbox_service_pb2.PostPatientListRequest(
                        requester_reference=reference, reference_date=date, insurer_codes=codes
                    ),
                    metadata=metadata,
                    timeout=10,
                )
                ack_hist.record_value(max(1, round((time.monotonic() - sent) * 1e6)))
                give_up = sent + wait
                while reference not in arrived and time.monotonic() < give_up:
                    changed.clear()
                    try:
                        await asyncio.wait_for(changed.wait(), give_up - time.monotonic())
                    except TimeoutError:
                        break
                if reference not in arrived:
                    raise TimeoutError(f"no PATIENT_LIST for {reference} within {wait:g}s")
                at, message = arrived.pop(reference)
                hist.record_value(max(1, round((at - sent) * 1e6)))
                entries = len(message.patient_list.entries)
                missing += sum(
                    1
                    for o in message.patient_list.insurers
                    if o.status != dmg_pb2.INSURER_OUTCOME_STATUS_COMPLETE
                )
            out["scopes"][name] = {
                "insurers": codes or list(INSURER_CODES),
                "entries": entries,
                "missing_insurers": missing,
                "post_ack_ms": summarize_histogram(ack_hist),
                "to_message_ms": summarize_histogram(hist),
            }
        await _drain(stub, metadata)
    finally:
        watch.cancel()
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
    singles = {c: out["scopes"][c]["to_message_ms"] for c in INSURER_CODES}
    slowest = max(singles, key=lambda c: singles[c]["p50"])
    all7 = out["scopes"]["all"]["to_message_ms"]
    out["comparison"] = {
        "slowest_single_oa": slowest,
        "all_p50_ms": all7["p50"],
        "slowest_single_p50_ms": singles[slowest]["p50"],
        "all_over_slowest_p50": round(all7["p50"] / singles[slowest]["p50"], 2)
        if singles[slowest]["p50"]
        else None,
        "all_p99_ms": all7["p99"],
        "slowest_single_p99_ms": max(s["p99"] for s in singles.values()),
    }
    return out


async def _drain(stub: Any, metadata: list[tuple[str, str]]) -> None:
    """Confirm what the measurement left in the mailbox."""
    while True:
        page = await stub.GetMessages(
            mailbox_service_pb2.GetMessagesRequest(page_size=100), metadata=metadata, timeout=10
        )
        if not page.messages:
            return
        await stub.ConfirmMessages(
            mailbox_service_pb2.ConfirmMessagesRequest(message_ids=[m.message_id for m in page.messages]),
            metadata=metadata,
            timeout=10,
        )
