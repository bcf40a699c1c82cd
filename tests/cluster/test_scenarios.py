"""The twelve SPEC §5 scenario files (scenarios/spec5) played by `mycarenet scenario run` on ONE real cluster
(issue 15; on PostgreSQL, one database per process: the seed story of test_cluster_story.py plays the same
cluster on SQLite files), then a copy of S2 with a deliberately
wrong expectation: the run exits non-zero with a readable report of expected vs actual, and a valid JUnit
XML file.

The cluster starts on 01.06.2014 (`up --today`), so the stories (2011-2015) are shifted by whole years: the
first run by 4 years (2015-2019; 2011 → 2015 keeps every year's calendar), the next ones after it, where the
mesh clock has gone (the examples of scenarios/examples, then the wrong S2).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.cluster.cluster_support import BIN, Cluster

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios" / "spec5").glob("*.yaml"))
TODAY = "2014-06-01"


def scenario_run(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MYCARENET_DATA": str(data), "COLUMNS": "220"}
    return subprocess.run(
        [str(BIN / "mycarenet"), "scenario", "run", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("cluster", ["postgres"], indirect=True)
def test_the_twelve_spec_stories_pass_on_one_cluster_and_a_wrong_one_fails(
    cluster: Cluster, tmp_path: Path
) -> None:
    assert len(SCENARIOS) == 12
    desc = cluster.up(TODAY)
    # every process on a PostgreSQL database of its own, made by the cluster from --database-template
    assert {p["database_url"].split(":", 1)[0] for p in desc["processes"]} == {"postgresql"}
    data = cluster.data

    started = time.monotonic()
    done = scenario_run(data, *map(str, SCENARIOS), "--json")
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)
    print(f"twelve scenario files played in {seconds:.1f} s: {report['totals']}")
    assert report["passed"] is True
    assert len(report["stories"]) == 12
    assert {s["shift_years"] for s in report["stories"]} == {4}
    assert report["totals"]["failed"] == report["totals"]["xpass"] == report["totals"]["errors"] == 0
    assert report["totals"]["passed"] >= 70
    gaps = [
        (s["story"], step["index"], step["known_gap"])
        for s in report["stories"]
        for step in s["steps"]
        if step["status"] == "xfail"
    ]
    print("known gaps:", gaps)
    # Each story had its own providers and patients.
    identities = [v for s in report["stories"] for v in s["identities"].values()]
    assert len(identities) == len(set(identities))

    # The examples (primary controls with their codes, an administrative prolongation at a year end), after
    # the twelve on the same cluster: shifted further, where the mesh clock has gone.
    examples = sorted((ROOT / "scenarios" / "examples").glob("*.yaml"))
    done = scenario_run(data, *map(str, examples), "--json")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["passed"] is True
    assert report["totals"]["passed"] == sum(len(s["steps"]) for s in report["stories"]) >= 15
    assert {s["shift_years"] for s in report["stories"]} == {12}  # 2011 → 2023, after 2019 (the twelve)

    # A deliberately wrong expectation: B's takeover in S2 is "with payment" (no fee yet in 2014).
    wrong = tmp_path / "s2-wrong.yaml"
    text = (ROOT / "scenarios" / "spec5" / "s2.yaml").read_text()
    assert "{holder: B, period: 04.03.2014..31.12.2016, payment: with}" in text
    wrong.write_text(
        text.replace(
            "period: 04.03.2014..31.12.2016, payment: with",
            "period: 04.03.2014..31.12.2016, payment: without",
        )
    )
    junit = tmp_path / "junit.xml"
    failed = scenario_run(data, str(wrong), "--junit", str(junit))
    out = failed.stdout
    assert failed.returncode == 1, out + failed.stderr
    assert "FAIL" in out
    assert "payment: expected without, got with" in out  # in the file's terms, at the file's step
    assert "notify by B" in out
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"
    assert root.get("failures") == "1"
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == 9
    failures = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name") for c in failures] == ["03 notify by B"]
    failure = failures[0].find("failure")
    assert failure is not None
    assert failure.get("message") == "payment: expected without, got with"
    assert failures[0].get("line") == str(
        text.splitlines().index("  - notify: {by: B, patient: P, contact: 04.03.2014}") + 1
    )
