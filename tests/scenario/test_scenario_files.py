"""Scenario files: the schema and its errors (with their lines), the story checks, the shift of a story's
dates, the order stories are played in together, the comparison and the reports."""

from __future__ import annotations

import datetime as dt
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mycarenet_scenario import ScenarioFileError, load_scenario, parse_scenario
from mycarenet_scenario.model import MAX_STEPS
from mycarenet_scenario.report import as_json, junit_xml
from mycarenet_scenario.runner import (
    MeshAccess,
    StepResult,
    StoryResult,
    common_shift,
    differences,
    expected_of,
    play_scenarios,
    timeline,
)
from mycarenet_scenario.timeshift import choose_shift, shift_date, story_years

from tests.oa_node.test_rules_scenarios import STORIES

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios" / "spec5"

GOOD = """\
story: T1
title: a small story
actors:
  A: {role: gp, enrolled: true}
  B: {role: gp}
patients:
  P: {born: 15.03.1975, insurer: 300}
steps:
  - notify: {by: A, patient: P, contact: 01.07.2012}
    expect: {holder: A, period: 01.07.2012..31.12.2014, payment: with}
  - consult: {by: B, patient: P}
    expect: {holder: A, paid_this_year: true}
  - clock: {advance: 10}
    expect: {today: 2012-07-11}
  - mailbox: {of: A}
    expect: {messages: []}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ScenarioFileError) as caught:
        parse_scenario(text, "story.yaml")
    return caught.value.lines()


def test_the_twelve_spec_stories_ship_as_valid_files() -> None:
    loaded = [load_scenario(p) for p in sorted(SCENARIOS.glob("*.yaml"))]
    assert sorted(one.scenario.story for one in loaded) == sorted(s.name.split(" ")[0] for s in STORIES)
    for one in loaded:  # every step knows its line, for the report
        assert all(line > 0 for line in one.step_lines)
        assert list(one.step_lines) == sorted(one.step_lines)


@pytest.mark.parametrize("path", sorted(SCENARIOS.parent.glob("*/*.yaml")), ids=lambda p: p.name)
def test_every_shipped_scenario_file_is_valid(path: Path) -> None:
    assert load_scenario(path).scenario.steps


def test_a_valid_file_parses_with_its_dates_in_either_spelling() -> None:
    loaded = parse_scenario(GOOD, "story.yaml")
    s = loaded.scenario
    assert s.patients["P"].born == dt.date(1975, 3, 15)
    assert s.patients["P"].insurer == "300"  # a number in YAML is the insurer code
    assert s.steps[0].notify is not None
    assert s.steps[0].notify.contact == dt.date(2012, 7, 1)
    assert s.steps[2].expect.today == dt.date(2012, 7, 11)
    assert loaded.step_lines == (9, 11, 13, 15)


def test_schema_errors_name_the_line_and_the_step() -> None:
    bad = GOOD.replace("payment: with", "payment: maybe").replace("role: gp}", "role: nurse}")
    found = problems(bad)
    assert any(
        line.startswith("story.yaml:10: step 1 (notify by A): expect.payment:") and "'with'" in line
        for line in found
    ), found
    assert any(line.startswith("story.yaml:5: actors.B.role:") for line in found), found


def test_a_step_with_two_actions_or_a_misplaced_expectation_is_refused() -> None:
    two = GOOD.replace(
        "  - consult: {by: B, patient: P}", "  - consult: {by: B, patient: P}\n    mailbox: {of: A}"
    )
    assert any("exactly one action" in line and "story.yaml:11" in line for line in problems(two))
    wrong = GOOD.replace("expect: {holder: A, paid_this_year: true}", "expect: {payment: with}")
    assert any("a consult step cannot expect payment" in line for line in problems(wrong))


def test_unknown_actors_and_patients_are_named_with_their_line() -> None:
    bad = GOOD.replace("consult: {by: B, patient: P}", "consult: {by: C, patient: Q}")
    found = problems(bad)
    assert "story.yaml:11: step 2 (consult by C): consult.by: no actor 'C' (actors: A, B)" in found
    assert "story.yaml:11: step 2 (consult by C): consult.patient: no patient 'Q' (patients: P)" in found


def test_a_story_that_goes_back_in_time_is_refused() -> None:
    bad = GOOD.replace("  - mailbox: {of: A}", "  - mailbox: {of: A}\n    at: 01.01.2012")
    assert any(
        "played on 01.01.2012, before the previous step (11.07.2012)" in line for line in problems(bad)
    )


def test_maxima_and_bad_yaml_are_refused() -> None:
    step = "  - mailbox: {of: A}\n"
    too_long = GOOD + step * MAX_STEPS
    assert any("at most 200 items" in line for line in problems(too_long))
    assert any(line.startswith("story.yaml:") and "not valid YAML" in line for line in problems("a: [1,"))
    assert any(
        "29.02.2013 " in line or "'29.02.2013'" in line
        for line in problems(GOOD.replace("contact: 01.07.2012", "contact: 29.02.2013"))
    )


def test_optional_fields_of_a_list_are_given_on_every_item_or_none() -> None:
    text = GOOD.replace(
        "  - mailbox: {of: A}\n    expect: {messages: []}",
        "  - contact: {by: A, patient: P, date: 11.07.2012, submitted: 11.07.2012}\n"
        "    expect:\n      holdings:\n"
        "        - {holder: A, period: 01.07.2012..31.12.2014, procedure: paper}\n"
        "        - {holder: B, period: 01.07.2012..31.12.2014}\n",
    )
    assert any("give procedure on every item or on none" in line for line in problems(text))


# --- the shift -----------------------------------------------------------------------------------------


def story(first: str, *more: str, born: str = "15.03.1975") -> str:
    steps = "".join(f"  - notify: {{by: A, patient: P, contact: {d}}}\n" for d in (first, *more))
    return (
        f"story: T\ntitle: t\nactors: {{A: {{enrolled: true}}}}\npatients: {{P: {{born: {born}}}}}\n"
        f"steps:\n{steps}"
    )


@pytest.mark.parametrize(
    ("first", "more", "today", "shift"),
    [
        ("01.07.2012", (), "2011-01-01", 0),  # played in its own year
        ("01.07.2012", (), "2012-07-01", 0),  # on the mesh's today itself
        ("01.07.2012", (), "2012-07-02", 4),  # 2013 to 2015 are common years: 2016 is the next leap one
        ("01.07.2013", (), "2026-11-28", 14),  # 2013 → 2027 (and 1975 → 1989), common years
        ("01.07.2013", ("01.03.2014",), "2026-11-28", 16),  # 2014 → 2028 would be leap: 2029-2030
        ("29.02.2012", (), "2013-01-01", 4),  # 29 February must exist: a leap year
    ],
)
def test_a_story_is_shifted_to_the_first_year_the_mesh_allows_with_its_calendar(
    first: str, more: tuple[str, ...], today: str, shift: int
) -> None:
    s = parse_scenario(story(first, *more)).scenario
    assert choose_shift(s, dt.date.fromisoformat(today)) == shift


def test_the_shift_keeps_every_span_of_the_story() -> None:
    s = parse_scenario(story("25.02.2012", "03.03.2012", born="29.02.1976")).scenario
    shift = choose_shift(s, dt.date(2026, 11, 28))
    assert shift == 16  # 2012 → 2028, 1976 → 1992: leap years both
    a, b = dt.date(2012, 2, 25), dt.date(2012, 3, 3)
    assert (shift_date(b, shift) - shift_date(a, shift)).days == (b - a).days == 7
    assert shift_date(dt.date(1976, 2, 29), shift) == dt.date(1992, 2, 29)
    assert shift_date(shift_date(dt.date(2012, 2, 29), shift), -shift) == dt.date(2012, 2, 29)
    assert story_years(s) == {1976, 2012}


def test_a_story_never_goes_past_2099() -> None:
    s = parse_scenario(story("01.07.2012")).scenario
    with pytest.raises(ValueError, match="beyond 2099"):
        choose_shift(s, dt.date(2098, 1, 1))


def test_stories_played_together_share_one_shift_and_interleave_by_date() -> None:
    one = parse_scenario(story("01.07.2012", "01.09.2012")).scenario
    two = parse_scenario(story("15.03.2011", "01.08.2012")).scenario
    assert common_shift([one, two], dt.date(2011, 1, 1)) == 0
    assert common_shift([one, two], dt.date(2012, 1, 1)) == 4  # 2011 → 2015, and 2012 → 2016 leap too
    order = [(i, j) for i, j, _ in timeline([one, two])]
    assert order == [(1, 0), (0, 0), (1, 1), (0, 1)]


@dataclass(frozen=True)
class State:
    today: dt.date


class StillClock:
    def __init__(self, today: dt.date) -> None:
        self.today, self.moves = today, 0

    async def clock(self) -> State:
        return State(self.today)

    async def set_clock(self, day: dt.date) -> State:
        self.moves += 1
        return State(day)

    async def advance_clock(self, days: int) -> State:
        self.moves += 1
        return State(self.today + dt.timedelta(days=days))


async def test_stories_that_would_land_in_years_without_a_tariff_are_not_played() -> None:
    async def tariff_years() -> set[int]:  # a table that starts after the years played (a fee stays in force
        return set(range(2031, 2041))  # until the next one: only years before the first are not covered)

    def no_client() -> Any:
        raise AssertionError("nothing is set up")

    clock = StillClock(dt.date(2026, 11, 28))
    access = MeshAccess(
        admin=None,  # type: ignore[arg-type]
        clock=clock,
        new_client=no_client,
        intake={},
        tariff_years=tariff_years,
    )
    (result,) = await play_scenarios([load_scenario(SCENARIOS / "s1.yaml")], access)
    assert result.failed
    assert result.shift_years == 16  # 2014-2015 → 2030-2031
    assert result.error is not None
    assert "+16 years, in 2030, for which the insurers have no DMG tariff" in result.error
    assert clock.moves == 0
    assert result.steps == []


# --- comparison and reports -------------------------------------------------------------------------------


def test_only_the_fields_given_are_compared_and_errors_match_status_or_code() -> None:
    s = parse_scenario(GOOD).scenario
    expect = s.steps[0].expect
    expected = expected_of(expect)
    assert expected == {"holder": "A", "period": "01.07.2012..31.12.2014", "payment": "with"}
    assert differences(expect, expected, {**expected, "extra": 1}) == []
    assert differences(expect, expected, {**expected, "payment": "without"}) == [
        "payment: expected with, got without"
    ]
    refused = {
        "error": "INVALID_ARGUMENT [166]",
        "error_message": "old",
        "error_status": "INVALID_ARGUMENT",
        "error_codes": [166],
    }
    assert differences(expect, expected, refused) == ["refused: INVALID_ARGUMENT [166]: old"]
    wants = (
        parse_scenario(
            GOOD.replace(
                "expect: {holder: A, period: 01.07.2012..31.12.2014, payment: with}",
                "expect: {error: {code: 166}}",
            )
        )
        .scenario.steps[0]
        .expect
    )
    assert differences(wants, expected_of(wants), refused) == []
    assert differences(wants, expected_of(wants), {**refused, "error_codes": [146]})
    assert differences(wants, expected_of(wants), expected) == [
        "error: expected  [166], but the call was accepted"
    ]


def results() -> list[StoryResult]:
    def step(index: int, status: str, diffs: list[str], gap: str | None = None) -> StepResult:
        return StepResult(
            index,
            10 + index,
            f"step {index}",
            "notify",
            status,
            dt.date(2012, 7, 1),
            {"payment": "with"},
            {"payment": "without"},
            diffs,
            gap,
            0.5,
        )

    return [
        StoryResult("a.yaml", "S1", "first", 16, [step(1, "passed", []), step(2, "failed", ["payment: x"])]),
        StoryResult("b.yaml", "S2", "second", 16, [step(1, "xfail", ["y"], "issue 15: no message")]),
    ]


def test_the_json_report_says_what_failed() -> None:
    data = json.loads(json.dumps(as_json(results())))
    assert data["passed"] is False
    assert data["totals"] == {"passed": 1, "failed": 1, "xfail": 1, "xpass": 0, "errors": 0}
    assert data["stories"][0]["steps"][1]["differences"] == ["payment: x"]
    assert data["stories"][1]["steps"][0]["known_gap"] == "issue 15: no message"


def test_the_junit_report_has_a_case_per_step_a_failure_and_a_skipped_known_gap() -> None:
    root = ET.fromstring(ET.tostring(junit_xml(results()).getroot()))
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("3", "1", "1")
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["S1 first", "S2 second"]
    failure = suites[0].findall("testcase")[1].find("failure")
    assert failure is not None
    assert failure.get("message") == "payment: x"
    skipped = suites[1].find("testcase/skipped")
    assert skipped is not None
    assert skipped.get("type") == "xfail"


def test_the_cli_checks_files_and_refuses_an_invalid_one_before_touching_a_cluster(tmp_path: Path) -> None:
    from mycarenet_sdk.cli import app
    from typer.testing import CliRunner

    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD)
    bad.write_text(GOOD.replace("payment: with", "payment: maybe"))
    runner = CliRunner()
    checked = runner.invoke(app, ["scenario", "check", str(good)], terminal_width=200)
    assert checked.exit_code == 0, checked.output
    assert "good.yaml: T1, 4 steps: valid" in " ".join(checked.output.split())
    # run checks every file first: no cluster is needed to refuse one
    for args in (["check"], ["run", "--data", str(tmp_path / "none")]):
        refused = runner.invoke(app, ["scenario", *args, str(good), str(bad)], terminal_width=200)
        assert refused.exit_code == 2, refused.output
        assert f"{bad}:10: step 1 (notify by A): expect.payment:" in refused.output
