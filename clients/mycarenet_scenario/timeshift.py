"""Playing a story of 2012 in 2028: every date of a scenario moved by the same whole number of years.

The mesh clock only moves forward and several stories run one after another on one cluster, so a story
written in its seed's dates is played from the first year the mesh clock still allows. The shift keeps
the calendar: every year the story touches (its dates, its patients' birth years, the years it names)
lands on a year with the same number of days (leap or not), so 29 February exists where the story needs
it and every span between two dates (the 7 days of a contact, the 30 days of a payment, a clock advance)
keeps its length. What a shift cannot keep is the tariff of a year: a story expects payment indicators
and kinds, and amounts only where the file gives them (then played in a year whose tariff is that one).
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Iterator

from pydantic import BaseModel

from mycarenet_scenario.loader import play_date
from mycarenet_scenario.model import ListRequest, PaymentExpect, Scenario


def shift_date(day: dt.date, years: int) -> dt.date:
    """``day`` moved by ``years``. 29 February onto a common year (never with a shift that
    :func:`choose_shift` picked, only for dates outside the story) becomes 28 February."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def _values(value: object) -> Iterator[object]:
    """Every value of a scenario (models, lists and mappings walked into)."""
    yield value
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _values(getattr(value, name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from _values(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _values(item)


def story_years(scenario: Scenario) -> set[int]:
    """Every year the story touches: its dates (birth dates included) and the years it names (list
    requests, payments)."""
    return {v.year for v in _values(scenario) if isinstance(v, dt.date | ListRequest | PaymentExpect)}


def first_play_date(scenario: Scenario) -> dt.date:
    """The mesh date of the story's first dated step."""
    current: dt.date | None = None
    for step in scenario.steps:
        current = play_date(step, current)
        if current is not None:
            return current
    raise ValueError("no step has a date")


def same_calendar(years: set[int], shift: int) -> bool:
    """True when every year keeps its length (leap or common) once moved by ``shift``."""
    return all(calendar.isleap(y) == calendar.isleap(y + shift) for y in years)


def choose_shift(scenario: Scenario, mesh_today: dt.date) -> int:
    """The smallest whole number of years (>= 0) that plays the story's first step on or after
    ``mesh_today`` and keeps the calendar of every year it touches."""
    first = first_play_date(scenario)
    shift = max(0, mesh_today.year - first.year)
    if shift_date(first, shift) < mesh_today:
        shift += 1
    years = story_years(scenario)
    while not same_calendar(years, shift):
        shift += 1
    if max(years) + shift > 2099:
        raise ValueError(
            f"the story would be played beyond 2099 (shift {shift} years from {mesh_today:%d.%m.%Y})"
        )
    return shift


__all__ = ["choose_shift", "first_play_date", "same_calendar", "shift_date", "story_years"]
