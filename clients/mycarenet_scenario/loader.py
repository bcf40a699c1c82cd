"""Reading a scenario file: YAML to :class:`~mycarenet_scenario.model.Scenario`, every problem reported with
its line and step (``s2.yaml:14: step 3 (notify by B): expect.payment: ...``) before anything is played."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mycarenet_scenario.model import MAX_FILE_BYTES, Clock, Contact, Notify, Paper, Scenario, Step

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    line: int | None
    where: str
    message: str


class ScenarioFileError(ValueError):
    """A scenario file that cannot be played: every problem found, with its line."""

    def __init__(self, path: str, problems: Sequence[Problem]) -> None:
        self.path, self.problems = path, list(problems)
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        out = []
        for p in self.problems:
            at = f"{self.path}:{p.line}" if p.line else self.path
            out.append(f"{at}: {p.where + ': ' if p.where else ''}{p.message}")
        return out


@dataclass(frozen=True)
class LoadedScenario:
    """A valid scenario, the file it came from and the line of each step."""

    path: str
    scenario: Scenario
    step_lines: tuple[int, ...]


def _line(node: yaml.Node | None, loc: Loc) -> int | None:
    """The line of the deepest YAML node ``loc`` reaches (parts it cannot follow are skipped)."""
    if node is None:
        return None
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            found = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if found is not None:
                node = found
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
    return int(node.start_mark.line) + 1


def _step_title(data: Any, index: int) -> str:
    try:
        raw = data["steps"][index]
        action = next(k for k in raw if k not in ("name", "at", "known_gap", "expect"))
        who = raw[action].get("by") or raw[action].get("of") if isinstance(raw[action], dict) else None
        name = raw.get("name") or (f"{action} by {who}" if who else str(action))
    except (KeyError, IndexError, TypeError, StopIteration, AttributeError):
        return f"step {index + 1}"
    return f"step {index + 1} ({str(name)[:60]})"


def _where(data: Any, loc: Loc) -> str:
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
        rest = ".".join(str(p) for p in loc[2:])
        return _step_title(data, loc[1]) + (f": {rest}" if rest else "")
    return ".".join(str(p) for p in loc)


def parse_scenario(text: str, path: str = "<scenario>") -> LoadedScenario:
    """A valid scenario from YAML text, or :class:`ScenarioFileError` with every problem and its line."""
    if len(text.encode()) > MAX_FILE_BYTES:
        raise ScenarioFileError(path, [Problem(None, "", f"larger than {MAX_FILE_BYTES} bytes")])
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise ScenarioFileError(
            path, [Problem(mark.line + 1 if mark else None, "", f"not valid YAML: {error}")]
        ) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ScenarioFileError(path, [Problem(1, "", "a scenario file is a mapping (story, title, ...)")])
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as error:
        problems = [
            Problem(_line(node, tuple(e["loc"])), _where(data, tuple(e["loc"])), e["msg"])
            for e in error.errors(include_url=False)
        ]
        raise ScenarioFileError(path, problems) from None
    problems = [
        Problem(_line(node, loc), _where(data, loc), message) for loc, message in check_story(scenario)
    ]
    if problems:
        raise ScenarioFileError(path, problems)
    lines = tuple(_line(node, ("steps", i)) or 0 for i in range(len(scenario.steps)))
    return LoadedScenario(path, scenario, lines)


def load_scenario(path: Path) -> LoadedScenario:
    """Read and check one scenario file."""
    try:
        size = path.stat().st_size
    except OSError as error:
        raise ScenarioFileError(str(path), [Problem(None, "", f"cannot read: {error.strerror}")]) from None
    if size > MAX_FILE_BYTES:
        raise ScenarioFileError(str(path), [Problem(None, "", f"larger than {MAX_FILE_BYTES} bytes")])
    return parse_scenario(path.read_text(encoding="utf-8"), str(path))


# --- what pydantic cannot see: references and chronology ----------------------------------------------------


def play_date(step: Step, current: dt.date | None) -> dt.date | None:
    """The mesh date a step is played on (``at``, else the date its action implies, else ``current``)."""
    d = step.detail
    if isinstance(d, Clock):
        if d.set is not None:
            return d.set
        return None if current is None else current + dt.timedelta(days=d.advance or 0)
    if step.at is not None:
        return step.at
    if isinstance(d, Notify):
        return d.contact
    if isinstance(d, Contact | Paper):
        return d.submitted
    return current


def check_story(scenario: Scenario) -> list[tuple[Loc, str]]:
    """References to actors and patients that do not exist, a supervisor who is not a GP, and a story whose
    dates go back in time (the mesh clock only moves forward)."""
    out: list[tuple[Loc, str]] = []
    actors, patients = scenario.actors, scenario.patients

    def actor(loc: Loc, label: str | None) -> None:
        if label is not None and label not in actors:
            out.append((loc, f"no actor {label!r} (actors: {', '.join(actors)})"))

    def patient(loc: Loc, label: str) -> None:
        if label not in patients:
            out.append((loc, f"no patient {label!r} (patients: {', '.join(patients)})"))

    for name, a in actors.items():
        if a.role == "gp_in_training":
            if a.supervisor is None:
                out.append((("actors", name, "role"), "a GP in training needs a supervisor (a GP actor)"))
            elif a.supervisor not in actors or actors[a.supervisor].role != "gp":
                out.append((("actors", name, "supervisor"), f"{a.supervisor!r} is not a GP actor"))
        elif a.supervisor is not None:
            out.append((("actors", name, "supervisor"), "only a GP in training has a supervisor"))
    current: dt.date | None = None
    for i, step in enumerate(scenario.steps):
        here: Loc = ("steps", i)
        d = step.detail
        for key in ("by", "of"):
            if hasattr(d, key):
                actor((*here, step.action, key), getattr(d, key))
        if hasattr(d, "patient"):
            patient((*here, step.action, "patient"), d.patient)
        e = step.expect
        if e.holder is not None and e.holder != "nobody":
            actor((*here, "expect", "holder"), e.holder)
        for field in ("payments", "recoveries"):
            for j, p in enumerate(getattr(e, field) or ()):
                actor((*here, "expect", field, j, "to"), p.to)
                if p.to is None:
                    out.append(((*here, "expect", field, j), "a payment names whom it goes to"))
        for j, h in enumerate(e.holdings or ()):
            actor((*here, "expect", "holdings", j, "holder"), h.holder)
        for j, m in enumerate(e.messages or ()):
            body = m.closure or m.extension
            assert body is not None
            patient((*here, "expect", "messages", j), body.patient)
            if m.closure is not None:
                actor((*here, "expect", "messages", j, "closure", "new_holder"), m.closure.new_holder)
        for j, entry in enumerate(e.patients or ()):
            patient((*here, "expect", "patients", j, "patient"), entry.patient)
        if isinstance(d, Clock) and d.advance is not None and current is None:
            out.append((here, "the clock advances from a date: set it, or play a dated step, first"))
        when = play_date(step, current)
        if when is not None and current is not None and when < current:
            out.append(
                (
                    (*here, "at") if step.at else here,
                    f"played on {when:%d.%m.%Y}, before the previous step ({current:%d.%m.%Y}): "
                    "the mesh clock only moves forward",
                )
            )
        current = when if when is not None else current
    if all(play_date(s, None) is None for s in scenario.steps):
        out.append((("steps",), "no step has a date: a story is dated"))
    return out


__all__ = ["LoadedScenario", "Problem", "ScenarioFileError", "check_story", "load_scenario", "parse_scenario"]
