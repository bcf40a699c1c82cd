"""Scenario files: the schema, the errors with their lines, and the shift of a story's dates."""

from __future__ import annotations

from pathlib import Path

from mycarenet_scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios" / "spec5"


def test_the_twelve_spec_stories_are_valid_files() -> None:
    stories = [load_scenario(p).scenario.story for p in sorted(SCENARIOS.glob("*.yaml"))]
    assert sorted(stories) == sorted(
        [
            "S1",
            "S2",
            "S3",
            "5.2.1.1",
            "5.2.1.2.1",
            "5.2.1.2.2",
            "5.2.2.1",
            "5.2.2.2.1",
            "5.2.2.2.2",
            "5.2.3.1.1",
            "5.2.3.1.2",
            "5.2.3.2",
        ]
    )
