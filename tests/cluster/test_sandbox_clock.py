"""The sandbox's test clock on a real cluster (issue 15), through the `mycarenet` CLI and the SDK:

* seed story S2 (SPEC §5) played across 2013 -> 2015 on ONE running cluster by moving the clock: A notifies
  on 22.08.2013 (paid 2013), B takes over on 04.03.2014 (A closed 03.03.2014 with a closure message, B
  04.03.2014 -> 31.12.2016 paid 2014), B's first contact of 2015 on 23.05.2015 prolongs B to 31.12.2017 (paid
  2015, prolongation message). Sessions opened before a move have expired after it; the clock never goes
  back; only the administrator's certificate moves it.
* a paper GP's administrative prolongation (seed 002) is applied once per year over two year ends, whether
  the clock gets there in small steps or in one big step, with the insurer node restarted in between (it
  comes back at the moved clock, not at the start's --today), and `up --today` in the past is refused.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
from mycarenet_sdk.admin import admin_from_cluster, connect_admin
from mycarenet_sdk.client import MyCareNetError
from mycarenet_sdk.sync import connect_admin_sync

from mycarenet_core.identifiers import Profession, make_inami, make_niss
from tests.cluster.cluster_support import BIN, Cluster, cli, cli_refused, free_base_port, run_cli, wait_for

GP_A = make_inami(Profession.PHYSICIAN, 90_101, "003")
GP_B = make_inami(Profession.PHYSICIAN, 90_102, "003")
GP_PAPER = make_inami(Profession.PHYSICIAN, 90_103, "003")
GP_NISS = {gp: make_niss(dt.date(1970, 1, 1), 11 + i) for i, gp in enumerate((GP_A, GP_B, GP_PAPER))}
PATIENT = make_niss(dt.date(1961, 4, 9), 211)
PAPER_PATIENT = make_niss(dt.date(1958, 2, 3), 315)
IBAN = ("--iban", "BE68539007547034", "--bic", "GEBABEBB", "--holder", "Dr")


def date(text: str) -> dict[str, int]:
    day = dt.date.fromisoformat(text)
    return {"year": day.year, "month": day.month, "day": day.day}


def add_provider(data: Path, admin: Path, inami: str, last: str) -> None:
    niss = GP_NISS[inami]
    cli(data, admin, "admin", "provider", "add", inami, "--first", "Dr", "--last", last, "--niss", niss)


def add_gp(data: Path, admin: Path, session: Path, inami: str, last: str) -> None:
    add_provider(data, admin, inami, last)
    cli(data, session, "login", inami)
    enrolled = cli(data, session, "enrol", *IBAN)
    assert {o["status"] for o in enrolled["outcomes"]} == {"ENROLMENT_STATUS_ENROLLED"}, enrolled


def move(data: Path, admin: Path, *args: str) -> dict[str, Any]:
    """`mycarenet clock ...`: every process observes the answer's date."""
    state: dict[str, Any] = cli(data, admin, "clock", *args)
    assert len(state["processes"]) == 9
    assert {(p["observed"], p["today"]) for p in state["processes"]} == {(True, state["today"])}, state
    return state


def year_ends(state: dict[str, Any]) -> dict[str, list[int]]:
    return {p["process"]: p["year_ends_run"] for p in state["processes"]}


def messages(data: Path, session: Path, kind: str) -> list[Any]:
    return [
        m
        for m in cli(data, session, "inbox", "--kind", kind)
        if (m.get("closure") or m.get("extension") or {}).get("patient", {}).get("niss") == PATIENT
    ]


@pytest.fixture
def sqlite_clock_cluster(tmp_path: Path) -> Any:
    c = Cluster(tmp_path / "data", free_base_port(), population=40)
    try:
        yield c
    finally:
        c.down()


def test_story_s2_across_2013_to_2015_by_moving_the_clock(sqlite_cluster: Cluster, tmp_path: Path) -> None:
    cluster = sqlite_cluster  # the back end has no part in it: SQLite only
    desc = cluster.up("2013-08-22")
    data = cluster.data
    assert desc["sandbox"]["address"].endswith(f":{cluster.base_port + 2}")
    admin, a, b = tmp_path / "admin.json", tmp_path / "a.json", tmp_path / "b.json"
    shown = move(data, admin, "show")
    assert shown["today"] == "2013-08-22"
    assert year_ends(shown) == {p["process"]: [] for p in shown["processes"]}

    add_gp(data, admin, a, GP_A, "Adams")
    add_gp(data, admin, b, GP_B, "Brel")
    cli(data, admin, "admin", "patient", "add", PATIENT, "--insurer", "300", "--from", "2000-01-01")

    # 22.08.2013: A notifies (paid 2013).
    cli(data, a, "tr", "register", PATIENT)
    assert wait_for(lambda: run_cli(data, a, "consult", PATIENT).returncode == 0)
    notified = cli(data, a, "notify", PATIENT, "--contact-date", "2013-08-22")
    assert notified["holder"]["inami"] == GP_A
    assert notified["payment"] == "PAYMENT_INDICATOR_WITH_PAYMENT"
    assert notified["end_date"] == date("2015-12-31")

    # 04.03.2014: the year end of 2013 ran at every insurer before the answer; B takes over.
    moved = move(data, admin, "set", "2014-03-04")
    assert moved["today"] == "2014-03-04"
    ran = year_ends(moved)
    assert ran.pop("ehealth") == ran.pop("hub") == []
    assert ran == {f"oa-{code}": [2013] for code in ("100", "200", "300", "400", "500", "600", "900")}
    # B's session of 2013 expired with the move (tokens follow the clock): log in again.
    assert "UNAUTHENTICATED" in cli_refused(data, b, "whoami")
    cli(data, b, "login", GP_B)
    cli(data, b, "tr", "register", PATIENT)
    seen = cli(data, b, "consult", PATIENT)
    assert seen["holding"]["holder"]["inami"] == GP_A
    assert seen.get("payment_made_this_year", False) is False  # nothing paid for 2014 yet
    taken = cli(data, b, "notify", PATIENT, "--contact-date", "2014-03-04")
    assert taken["holder"]["inami"] == GP_B
    assert taken["payment"] == "PAYMENT_INDICATOR_WITH_PAYMENT"  # paid 2014
    assert taken["end_date"] == date("2016-12-31")

    cli(data, a, "login", GP_A)
    closures = wait_for(lambda: messages(data, a, "closure"))
    assert closures, "A never received the closure"
    closure = closures[0]
    assert closure["closure"]["end_date"] == date("2014-03-03")
    assert closure["closure"]["new_holder"]["inami"] == GP_B
    assert closure["created_time"].startswith("2014-03-04")  # mailbox times follow the clock

    # 23.05.2015 in two steps (the year end of 2014 on the way): B's first contact of 2015 is registered.
    assert year_ends(move(data, admin, "advance", "320"))["oa-300"] == [2014]  # 18.01.2015
    assert move(data, admin, "set", "2015-05-23")["today"] == "2015-05-23"
    effects = cli(data, b, "oa", "contact", PATIENT, "--provider", GP_B, "--contact-date", "2015-05-23")[
        "effects"
    ]
    assert [(p["year"], p["beneficiary"]["inami"]) for p in effects["payments"]] == [(2015, GP_B)], effects
    cli(data, b, "login", GP_B)
    prolongations = wait_for(lambda: messages(data, b, "extension"))
    assert prolongations, "B never received the prolongation"
    assert prolongations[0]["extension"]["contact_date"] == date("2015-05-23")
    assert prolongations[0]["extension"]["new_end_date"] == date("2017-12-31")
    seen = cli(data, b, "consult", PATIENT)
    assert seen["holding"]["holder"]["inami"] == GP_B
    assert seen["holding"]["period"]["end"] == date("2017-12-31")
    assert seen["payment_made_this_year"] is True

    # Never backwards; only the administrator moves the clock.
    refused = cli_refused(data, admin, "clock", "set", "2015-05-22")
    assert "FAILED_PRECONDITION CLOCK_BACKWARDS" in refused
    assert "the mesh date is 2015-05-23" in refused
    tls = desc["tls"]

    async def refusals() -> list[MyCareNetError]:
        errors = []
        async with admin_from_cluster(data / "cluster.json") as administrator:
            with pytest.raises(MyCareNetError) as bad:
                await administrator.advance_clock(-1)
            errors.append(bad.value)
        for caller in ("client", "backoffice"):
            async with connect_admin(
                ehealth=desc["processes"][0]["address"],
                insurers={},
                ca=Path(tls["ca"]),
                cert=Path(tls[f"{caller}_cert"]),
                key=Path(tls[f"{caller}_key"]),
                sandbox=desc["sandbox"]["address"],
            ) as outsider:
                with pytest.raises(MyCareNetError) as refused_outsider:
                    await outsider.advance_clock(1)
                errors.append(refused_outsider.value)
        return errors

    negative, *outsiders = asyncio.run(refusals())
    assert negative.status is grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in negative.violations] == ["days"]
    assert [(e.status, e.reason) for e in outsiders] == [
        (grpc.StatusCode.PERMISSION_DENIED, "CERTIFICATE_NOT_ALLOWED")
    ] * 2
    assert move(data, admin, "show")["today"] == "2015-05-23"


def payments(db: Path, patient: str) -> list[tuple[int, str, str, str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT year, kind, beneficiary, registered_on, due_by FROM oa_payment"
            " WHERE patient = ? AND NOT recovered ORDER BY year, kind",
            (patient,),
        ).fetchall()


def year_end_rows(db: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT year, processing_date FROM oa_year_end_run ORDER BY year").fetchall()


def test_an_administrative_prolongation_once_per_year_over_two_year_ends(
    sqlite_clock_cluster: Cluster, tmp_path: Path
) -> None:
    cluster = sqlite_clock_cluster
    desc = cluster.up("2013-03-01")
    data = cluster.data
    admin, office = tmp_path / "admin.json", tmp_path / "office.json"
    add_provider(data, admin, GP_PAPER, "Paper")
    cli(data, admin, "admin", "patient", "add", PAPER_PATIENT, "--insurer", "500", "--from", "2000-01-01")
    node = next(p for p in desc["processes"] if p["name"] == "oa-500")
    db = Path(node["database_url"].split("///", 1)[1])

    # 2013: a paper 102771 (the GP is paid 2013 on paper).
    attest = ("oa", "attest", PAPER_PATIENT, "--provider", GP_PAPER)
    cli(data, office, *attest, "--attestation-date", "2013-03-01")
    contact = ("oa", "contact", PAPER_PATIENT, "--provider", GP_PAPER)
    # Small steps over 31.12.2013 (nothing to prolong for 2013: no paper payment in 2012).
    steps = [year_ends(move(data, admin, "advance", days))["oa-500"] for days in ("150", "150", "10")]
    assert steps == [[], [], [2013]]
    assert move(data, admin, "show")["today"] == "2014-01-05"
    cli(data, office, *contact, "--contact-date", "2014-01-05")

    # The node restarts (SIGTERM; the supervisor starts it again): it comes back at the moved clock.
    os.kill(node["pid"], signal.SIGTERM)

    def restarted() -> bool:
        procs = json.loads((data / "cluster.json").read_text())["processes"]
        again = next(p for p in procs if p["name"] == "oa-500")
        return bool(again["pid"] != node["pid"] and again["health"] == "SERVING")

    assert wait_for(restarted, timeout=60)
    shown = move(data, admin, "show")
    assert shown["today"] == "2014-01-05"
    tls = desc["tls"]
    with connect_admin_sync(
        ehealth=desc["processes"][0]["address"],
        ca=Path(tls["ca"]),
        cert=Path(tls["admin_cert"]),
        key=Path(tls["admin_key"]),
        sandbox=desc["sandbox"]["address"],
    ) as blocking:  # the blocking SDK reads the same clock
        assert blocking.clock().today == dt.date(2014, 1, 5)

    # Small steps over 31.12.2014: the prolongation of 2014, once; then the contact of 2015.
    assert [year_ends(move(data, admin, "advance", "200"))["oa-500"] for _ in range(2)] == [[], [2014]]
    assert move(data, admin, "show")["today"] == "2015-02-09"
    cli(data, office, *contact, "--contact-date", "2015-02-09")
    # One big step over 31.12.2015 and 31.12.2016: the prolongation of 2015 (no contact in 2016).
    assert year_ends(move(data, admin, "set", "2017-03-01"))["oa-500"] == [2015, 2016]
    assert year_ends(move(data, admin, "advance", "0"))["oa-500"] == []

    paid = payments(db, PAPER_PATIENT)
    assert paid == [
        (2013, "PAPER_ATTESTATION", GP_PAPER, "2013-03-01", "2013-03-31"),
        # Paid at the contact of the year that meets its conditions (issue 14), once; the year ends add none.
        (2014, "ADMINISTRATIVE_PROLONGATION", GP_PAPER, "2014-01-05", "2014-02-04"),
        (2015, "ADMINISTRATIVE_PROLONGATION", GP_PAPER, "2015-02-09", "2015-03-11"),
    ]
    assert year_end_rows(db) == [
        (2013, "2014-01-01"),
        (2014, "2015-01-01"),
        (2015, "2016-01-01"),
        (2016, "2017-01-01"),
    ]

    # The clock is kept on disk: `up --today` in the past is refused (the data would need a reset).
    cluster.down()
    done = subprocess.run(
        [str(BIN / "mycarenet-cluster"), "up", "--data", str(data), "--today", "2016-01-01"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done
    assert b"the mesh clock never goes back" in done.stderr
    assert payments(db, PAPER_PATIENT) == paid
