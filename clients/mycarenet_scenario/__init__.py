"""Scenario files: dated DMG stories in YAML, played against a running mesh (``mycarenet scenario run``).

See ``scenarios/README.md`` for the format, :mod:`mycarenet_scenario.model` for its schema and maxima,
:mod:`mycarenet_scenario.timeshift` for how a story of 2012 is played in a later year.
"""

from mycarenet_scenario.loader import LoadedScenario, ScenarioFileError, load_scenario, parse_scenario
from mycarenet_scenario.model import Scenario
from mycarenet_scenario.runner import MeshAccess, StepResult, StoryResult, play_scenario, play_scenarios

__all__ = [
    "LoadedScenario",
    "MeshAccess",
    "Scenario",
    "ScenarioFileError",
    "StepResult",
    "StoryResult",
    "load_scenario",
    "parse_scenario",
    "play_scenario",
    "play_scenarios",
]
