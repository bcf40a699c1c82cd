"""The SDK's in-process mesh, used exactly as a vendor's own test uses it: the real eHealth, OA nodes and hub
started in the test's event loop, a GP and a patient added as the administrator, and everything else done
by the vendor's software (here the SDK's Client) with the provider's own session: register the therapeutic
relation, log in, consult, notify, read and confirm the mailbox. Then: under mutual TLS with the mesh's
private CA, an insurer down and back, and nothing left running afterwards.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
from pathlib import Path

import grpc
import mycarenet_sdk.testing
import pytest
from mycarenet_sdk import Client, MyCareNetError
from mycarenet_sdk.testing import InProcessMesh

from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from mycarenet_core.gen.mycarenet.ehealth.v1 import therapeutic_relation_pb2 as tr

OCT_1 = dt.date(2026, 10, 1)


def day(value: object) -> dt.date:
    return dt.date(value.year, value.month, value.day)  # type: ignore[attr-defined]


async def test_a_vendor_plays_consult_notify_and_the_mailbox(tmp_path: Path) -> None:
    async with InProcessMesh(tmp_path, insurers=("100", "300"), today=OCT_1) as mesh:
        anne = await mesh.add_provider(first_name="Anne", last_name="Dupont", enrolled=True)
        bruno = await mesh.add_provider(first_name="Bruno", last_name="Peeters", enrolled=True)
        marie = await mesh.add_patient(insurer="300", first_name="Marie", last_name="Lambert")
        assert anne.key_file == tmp_path / "keys" / f"{anne.inami}.pem"
        assert (marie.insurer, marie.registration_number) == ("300", f"M{marie.niss}")

        async with mesh.client() as gp_a:
            await gp_a.login(anne.inami, anne.key)
            # No therapeutic relation yet: the hub refuses.
            with pytest.raises(MyCareNetError) as refused:
                await gp_a.consult(marie.niss, date=mesh.today)
            assert refused.value.status == grpc.StatusCode.PERMISSION_DENIED
            assert refused.value.reason == "NO_THERAPEUTIC_RELATION"
            # The eID read: the relation, then the consult reaches insurer 300 (nobody holds the DMG).
            await gp_a.register_relation(marie.niss)
            seen = await gp_a.consult(marie.niss, date=mesh.today)
            assert seen.insurer_code == "300"
            assert not seen.HasField("holding")
            opened = await gp_a.notify(marie.niss, contact_date=OCT_1, nomenclature_code="101076")
            assert (opened.holder.inami, day(opened.start_date)) == (anne.inami, OCT_1)
            assert day(opened.end_date) == dt.date(2028, 12, 31)

        # Seven weeks later, Marie goes to Bruno, who takes the DMG over.
        mesh.clock.advance(dt.timedelta(days=50))
        takeover = mesh.today
        assert takeover == dt.date(2026, 11, 20)
        async with mesh.client() as gp_b:
            await gp_b.login(bruno.inami, bruno.key)
            await gp_b.register_relation(marie.niss)
            before = await gp_b.consult(marie.niss, date=mesh.today)
            assert before.holding.holder.inami == anne.inami
            notified = await gp_b.notify(marie.niss, contact_date=takeover, nomenclature_code="101076")
            assert notified.holder.inami == bruno.inami
            assert (await gp_b.consult(marie.niss, date=mesh.today)).holding.holder.inami == bruno.inami
            # Once the mesh has settled, eHealth moved the DMG relation to Bruno.
            await mesh.settle()
            dmg = [
                r
                for r in await gp_b.list_relations(patient_niss=marie.niss)
                if r.proof == tr.RELATION_PROOF_DMG
            ]
            assert [day(r.period.start) for r in dmg] == [takeover], dmg

        # Anne (a new session: the old one expired meanwhile) finds the closure in her mailbox.
        gp_a2 = await mesh.login(anne)
        closures = await gp_a2.all_messages(kinds=[dmg_pb2.MESSAGE_KIND_CLOSURE])
        assert len(closures) == 1, closures
        closure = closures[0]
        assert (closure.insurer_code, closure.recipient_inami) == ("300", anne.inami)
        assert closure.closure.new_holder.inami == bruno.inami
        assert day(closure.closure.end_date) == takeover - dt.timedelta(days=1)
        assert (await gp_a2.confirm([closure.message_id])).confirmed_count == 1
        assert await gp_a2.all_messages(kinds=[dmg_pb2.MESSAGE_KIND_CLOSURE]) == []
        # (the mesh closes gp_a2, which the test did not close)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_under_mutual_tls_and_with_an_insurer_down_then_back(tmp_path: Path) -> None:
    async with InProcessMesh(tmp_path, insurers=("100", "200"), today="2026-03-02", tls=True) as mesh:
        assert mesh.hub_address.startswith("localhost:")
        gp = await mesh.add_provider()
        patient = await mesh.add_patient(insurer="200")
        client = await mesh.login(gp)
        await client.register_relation(patient.niss)
        assert (await client.consult(patient.niss, date=mesh.today)).insurer_code == "200"

        # Software holding the CA but no client certificate does not get in.
        files = mesh.certificate("client")
        assert files.cert.is_file()
        assert files.key.is_file()
        anonymous = Client(
            hub=mesh.hub_address,
            ehealth=mesh.ehealth_address,
            credentials=grpc.ssl_channel_credentials(root_certificates=files.ca.read_bytes()),
            timeout=3,
        )
        try:
            with pytest.raises(MyCareNetError) as no_certificate:
                await anonymous.login(gp.inami, gp.key)
            assert no_certificate.value.status == grpc.StatusCode.UNAVAILABLE
        finally:
            await anonymous.close()

        # Insurer 200 goes down: its patient cannot be consulted; it comes back on the same data.
        await mesh.stop_insurer("200")
        with pytest.raises(MyCareNetError) as down:
            await client.consult(patient.niss, date=mesh.today)
        assert down.value.status == grpc.StatusCode.UNAVAILABLE
        await mesh.start_insurer("200")
        answer = None
        for _ in range(100):  # the hub reconnects within its back-off
            try:
                answer = await client.consult(patient.niss, date=mesh.today)
            except MyCareNetError as error:
                if error.status != grpc.StatusCode.UNAVAILABLE:
                    raise
                await asyncio.sleep(0.2)
            else:
                break
        assert answer is not None, "insurer 200 is not reached again"
        assert answer.patient.niss == patient.niss
        await mesh.settle()


async def test_everything_stops_even_when_the_test_fails_inside(tmp_path: Path) -> None:
    mesh = InProcessMesh(tmp_path, insurers=("900",))
    ports: dict[str, int] = {}

    async def a_failing_test() -> None:
        async with mesh:
            ports.update(mesh.ports)
            assert all(_listening(port) for port in ports.values()), ports
            mesh.client()  # never closed by the test
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await a_failing_test()
    assert len(ports) == 3, ports  # eHealth, the hub, insurer 900
    assert mesh.hub_app is None
    assert mesh.ehealth_app is None
    assert mesh.oa_apps == {}
    assert not any(_listening(port) for port in ports.values()), ports
    await mesh.stop()  # twice is harmless
    with pytest.raises(RuntimeError):
        mesh.client()


async def test_a_port_taken_between_the_pick_and_the_bind_is_picked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    picks = iter([busy])
    pick = mycarenet_sdk.testing._free_port
    monkeypatch.setattr(mycarenet_sdk.testing, "_free_port", lambda: next(picks, None) or pick())
    try:
        async with InProcessMesh(tmp_path, insurers=("100",)) as mesh:
            assert busy not in mesh.ports.values()
            gp = await mesh.add_provider()
            client = await mesh.login(gp)
            assert client.session is not None
    finally:
        taken.close()
