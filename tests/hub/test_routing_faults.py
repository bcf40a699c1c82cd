"""Routing across a change of mutuality, live affiliation changes, and an OA that is down: its patients
fail fast with UNAVAILABLE OA_UNAVAILABLE, the others are unaffected, and it recovers when it is back."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from mycarenet_core.identifiers import make_niss
from tests.hub.helpers import consult_request, notify_request, rejected
from tests.hub.mesh import TODAY, MemberSpec, bearer, running_mesh


async def test_routing_follows_the_requested_date_and_live_feed_changes(tmp_path: Path) -> None:
    async with running_mesh(tmp_path, insurers=("100", "200", "300")) as mesh:
        gp = bearer(await mesh.login(mesh.people["gp_a"]))
        mover = mesh.members["mover"].niss
        before = await mesh.dmg.ConsultDmg(
            consult_request(mover, dt.date(2024, 6, 1)), metadata=gp, timeout=5
        )
        after = await mesh.dmg.ConsultDmg(consult_request(mover, TODAY), metadata=gp, timeout=5)
        assert (before.insurer_code, after.insurer_code) == ("100", "200")
        # notify is routed by the contact date
        notified = await mesh.dmg.NotifyDmg(notify_request(mover, "mv-1"), metadata=gp, timeout=5)
        assert notified.insurer_code == "200"
        # a new member at 300 becomes routable as soon as the feed brings it (watch stream, no restart)
        newcomer = MemberSpec(
            "newcomer", make_niss(dt.date(1999, 9, 9), 321), {"300": [(dt.date(2025, 2, 1), None)]}
        )
        error = await rejected(mesh.dmg.ConsultDmg(consult_request(newcomer.niss), metadata=gp, timeout=5))
        assert error.code == 120
        await mesh.upsert_members("300", [newcomer])
        await mesh.relate(mesh.people["gp_a"], newcomer)
        answer = await mesh.dmg.ConsultDmg(consult_request(newcomer.niss), metadata=gp, timeout=5)
        assert answer.insurer_code == "300"
        # before the affiliation start the patient is unknown at that date: 120 without asking an OA
        error = await rejected(
            mesh.dmg.ConsultDmg(consult_request(newcomer.niss, dt.date(2025, 1, 15)), metadata=gp, timeout=5)
        )
        assert (error.status.name, error.code) == ("NOT_FOUND", 120)


async def test_an_oa_down_fails_fast_for_its_patients_only_and_recovers(tmp_path: Path) -> None:
    async with running_mesh(tmp_path, insurers=("100", "200")) as mesh:
        gp = bearer(await mesh.login(mesh.people["gp_a"]))
        p100, p200 = mesh.members["p100"].niss, mesh.members["p200"].niss
        await mesh.dmg.ConsultDmg(consult_request(p200), metadata=gp, timeout=5)
        await mesh.stop_oa("200")
        for _ in range(5):
            started = time.monotonic()
            error = await rejected(mesh.dmg.ConsultDmg(consult_request(p200), metadata=gp, timeout=5))
            elapsed = time.monotonic() - started
            assert (error.status.name, error.reason, error.metadata.get("insurer_code")) == (
                "UNAVAILABLE",
                "OA_UNAVAILABLE",
                "200",
            )
            assert elapsed < 1.0, elapsed  # fail fast, far within the 5 s deadline
            started = time.monotonic()
            answer = await mesh.dmg.ConsultDmg(consult_request(p100), metadata=gp, timeout=5)
            assert answer.insurer_code == "100"
            assert time.monotonic() - started < 1.0
        assert mesh.hub is not None
        assert mesh.hub.core.oas["200"].breaker.is_open  # repeated failures opened the breaker
        # notify for a dead OA is not retried and fails the same way
        error = await rejected(mesh.dmg.NotifyDmg(notify_request(p200, "down-1"), metadata=gp, timeout=5))
        assert error.reason == "OA_UNAVAILABLE"
        # back on the same address: calls succeed again once the breaker lets a trial through
        await mesh.start_oa("200")
        deadline = time.monotonic() + 10
        while True:
            try:
                answer = await mesh.dmg.ConsultDmg(consult_request(p200), metadata=gp, timeout=5)
                break
            except Exception:
                assert time.monotonic() < deadline, "OA 200 did not come back"
                await _sleep(0.2)
        assert answer.insurer_code == "200"
        # the affiliation feed reconnected too: a new member at 200 is routed
        late = MemberSpec(
            "late", make_niss(dt.date(2001, 1, 1), 123), {"200": [(dt.date(2020, 1, 1), None)]}, "LATE1"
        )
        await mesh.upsert_members("200", [late])
        await mesh.relate(mesh.people["gp_a"], late)
        assert (
            await mesh.dmg.ConsultDmg(consult_request(late.niss), metadata=gp, timeout=5)
        ).insurer_code == "200"


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)
