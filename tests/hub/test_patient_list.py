"""The patient list across all seven OAs: one OA failing then recovering (complete), one failing for the
whole retry window (missing), a repeated post answered with the first tAck, and a restart of the hub that
resumes a pending list."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from hub.patient_list import ListPolicy
from mycarenet_core.dates import to_proto
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import mailbox_service_pb2 as mbx
from mycarenet_core.identifiers import INSURER_CODES
from tests.hub.helpers import notify_request, rejected
from tests.hub.mesh import FAST, GENEROUS, TODAY, Mesh, bearer, running_mesh


async def list_message(
    mesh: Mesh, token: str, reference: str, within: float = 15.0
) -> dmg_pb2.PatientListMessage:
    """Wait for the PATIENT_LIST message answering ``reference``."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        answer = await mesh.mailbox.GetMessages(
            mbx.GetMessagesRequest(kinds=[dmg_pb2.MESSAGE_KIND_PATIENT_LIST]),
            metadata=bearer(token),
            timeout=5,
        )
        for message in answer.messages:
            if message.patient_list.list_reference == reference:
                return message.patient_list
        await asyncio.sleep(0.1)
    raise AssertionError(f"no list message for {reference}")


def outcomes(message: dmg_pb2.PatientListMessage) -> dict[str, int]:
    return {o.insurer_code: o.status for o in message.insurers}


async def test_list_across_seven_oas_with_one_failing_then_recovering(tmp_path: Path) -> None:
    async with running_mesh(tmp_path) as mesh:
        token = await mesh.login(mesh.people["gp_a"])
        for code in ("100", "300", "500"):
            await mesh.dmg.NotifyDmg(
                notify_request(mesh.members[f"p{code}"].niss, f"hold-{code}"),
                metadata=bearer(token),
                timeout=5,
            )
        # OA 500 goes down; the list is posted; OA 500 comes back within the retry window
        await mesh.stop_oa("500")
        post = mbx.PostPatientListRequest(requester_reference="list-1", reference_date=to_proto(TODAY))
        started = time.monotonic()
        first = await mesh.mailbox.PostPatientList(post, metadata=bearer(token), timeout=5)
        assert time.monotonic() - started < 1.0  # answered at once with a tAck
        assert first.technical_ack.result == dmg_pb2.TECHNICAL_ACK_RESULT_SUCCESS
        again = await mesh.mailbox.PostPatientList(post, metadata=bearer(token), timeout=5)
        assert again.technical_ack.reference == first.technical_ack.reference
        await asyncio.sleep(1.0)
        await mesh.start_oa("500")
        message = await list_message(mesh, token, first.technical_ack.reference)
        assert outcomes(message) == dict.fromkeys(INSURER_CODES, dmg_pb2.INSURER_OUTCOME_STATUS_COMPLETE)
        assert {(e.insurer_code, e.patient.niss) for e in message.entries} == {
            (code, mesh.members[f"p{code}"].niss) for code in ("100", "300", "500")
        }
        assert message.year == TODAY.year
        assert mesh.hub is not None
        timing = mesh.hub.core.lists.timings[first.technical_ack.reference]
        assert timing.total >= timing.per_oa["500"] >= 1.0
        # the tAck is in the mailbox too, and exactly one list message per request
        everything = await mesh.mailbox.GetMessages(
            mbx.GetMessagesRequest(), metadata=bearer(token), timeout=5
        )
        kinds = [m.kind for m in everything.messages if m.requester_reference == "list-1"]
        assert sorted(kinds) == [dmg_pb2.MESSAGE_KIND_PATIENT_LIST, dmg_pb2.MESSAGE_KIND_TECHNICAL_ACK]

        # an OA down for the whole (shortened) retry window is reported missing; the others are complete
        mesh.hub.core.lists.policy = ListPolicy(retry_window=1.0, initial_backoff=0.1, max_backoff=0.2)
        await mesh.stop_oa("900")
        post = mbx.PostPatientListRequest(requester_reference="list-2", reference_date=to_proto(TODAY))
        second = await mesh.mailbox.PostPatientList(post, metadata=bearer(token), timeout=5)
        message = await list_message(mesh, token, second.technical_ack.reference)
        status = outcomes(message)
        assert status.pop("900") == dmg_pb2.INSURER_OUTCOME_STATUS_MISSING
        assert set(status.values()) == {dmg_pb2.INSURER_OUTCOME_STATUS_COMPLETE}
        assert len(message.entries) == 3


async def test_year_bounds(tmp_path: Path) -> None:
    async with running_mesh(tmp_path, insurers=("100",)) as mesh:
        token = bearer(await mesh.login(mesh.people["gp_a"]))
        for year, code in ((TODAY.year - 3, 145), (TODAY.year + 1, 146)):
            post = mbx.PostPatientListRequest(
                requester_reference=f"y{year}", reference_date=to_proto(TODAY.replace(year=year))
            )
            error = await rejected(mesh.mailbox.PostPatientList(post, metadata=token, timeout=5))
            assert (error.code, error.violations[0].field) == (code, "reference_date")
        post = mbx.PostPatientListRequest(
            requester_reference="ok", reference_date=to_proto(TODAY.replace(year=TODAY.year - 2))
        )
        await mesh.mailbox.PostPatientList(post, metadata=token, timeout=5)


async def test_a_pending_list_survives_a_hub_restart(tmp_path: Path) -> None:
    async with running_mesh(tmp_path, insurers=("100", "200")) as mesh:
        token = await mesh.login(mesh.people["gp_a"])
        await mesh.stop_oa("200")
        post = mbx.PostPatientListRequest(requester_reference="survivor", reference_date=to_proto(TODAY))
        ack = (await mesh.mailbox.PostPatientList(post, metadata=bearer(token), timeout=5)).technical_ack
        assert mesh.hub is not None
        await mesh.hub.stop(0)  # the list is still waiting for OA 200
        mesh.hub = None
        await mesh.start_oa("200")
        await mesh.start_hub(GENEROUS, FAST)
        message = await list_message(mesh, token, ack.reference)
        assert outcomes(message) == {
            "100": dmg_pb2.INSURER_OUTCOME_STATUS_COMPLETE,
            "200": dmg_pb2.INSURER_OUTCOME_STATUS_COMPLETE,
        }
