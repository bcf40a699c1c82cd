"""The real multi-process cluster, started by the README command's entry point, playing the seed story
through the `mycarenet` CLI (issue 6):

GP A holds the DMG; the patient goes to GP B; B consults (sees A, a payment made this year), notifies
(without payment); A finds the closure in its inbox; next year B's first contact is registered and B finds
the prolongation.

It runs on SQLite files, the default of ``./dev up``. The same cluster on PostgreSQL (one database per process
created from ``--database-template``) plays the twelve SPEC stories in test_scenarios.py; every database step
of the story runs on both back ends in the integration tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.cluster.cluster_support import Cluster, cli, wait_for

TODAY = "2026-11-20"
NEXT_YEAR = "2027-01-20"


def test_seed_story_through_the_cli(sqlite_cluster: Cluster, tmp_path: Path) -> None:
    cluster = sqlite_cluster
    desc = cluster.up(TODAY)
    assert {p["health"] for p in desc["processes"]} == {"SERVING"}
    assert len(desc["processes"]) == 9
    backends = {p["database_url"].split(":", 1)[0] for p in desc["processes"]}
    assert backends == {"sqlite+aiosqlite"}
    demo = desc["demo"]
    data, patient, gp_a, gp_b = cluster.data, demo["patient"], demo["gp_a"], demo["gp_b"]
    session_a, session_b = tmp_path / "a.json", tmp_path / "b.json"

    cli(data, session_b, "login", gp_b)
    seen = cli(data, session_b, "consult", patient)
    assert seen["holding"]["holder"]["inami"] == gp_a
    assert seen["payment_made_this_year"] is True

    notified = cli(data, session_b, "notify", patient, "--contact-date", TODAY)
    assert notified["holder"]["inami"] == gp_b
    assert notified["payment"] == "PAYMENT_INDICATOR_WITHOUT_PAYMENT"
    assert notified["end_date"] == {"year": 2028, "month": 12, "day": 31}

    cli(data, session_a, "login", gp_a)

    def closures() -> list[Any]:
        return [
            m
            for m in cli(data, session_a, "inbox")
            if m["kind"] == "MESSAGE_KIND_CLOSURE" and m["closure"]["patient"]["niss"] == patient
        ]

    found = wait_for(closures)
    assert found, "A never received the closure"
    assert found[0]["closure"]["end_date"] == {"year": 2026, "month": 11, "day": 19}
    assert found[0]["closure"]["new_holder"]["inami"] == gp_b

    # Next year: the cluster restarts on the same data, B's first contact of 2027 is registered.
    cluster.down()
    desc = cluster.up(NEXT_YEAR)
    assert desc["today"] == NEXT_YEAR
    effects = cli(
        data,
        session_b,
        "oa",
        "contact",
        patient,
        "--provider",
        gp_b,
        "--contact-date",
        "2027-01-12",
        "--submitted",
        NEXT_YEAR,
    )
    assert effects["effects"]["payments"], effects
    cli(data, session_b, "login", gp_b)

    def extensions() -> list[Any]:
        return [
            m
            for m in cli(data, session_b, "inbox")
            if m["kind"] == "MESSAGE_KIND_EXTENSION" and m["extension"]["patient"]["niss"] == patient
        ]

    found = wait_for(extensions)
    assert found, "B never received the prolongation"
    assert found[0]["extension"]["contact_date"] == {"year": 2027, "month": 1, "day": 12}
    assert found[0]["extension"]["new_end_date"] == {"year": 2029, "month": 12, "day": 31}
    cluster.down()
    assert not (data / "cluster.json").exists()
