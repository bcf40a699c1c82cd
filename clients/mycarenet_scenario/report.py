"""The report of a scenario run: per step pass / fail / xfail, for a person (rich), a script (JSON) and a
vendor's CI (JUnit XML, one test suite per story, one test case per step; a known gap is a skipped test
case of type ``xfail``, as pytest writes it)."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mycarenet_scenario.runner import StepResult, StoryResult

MARKS = {
    "passed": ("PASS", "green"),
    "failed": ("FAIL", "bold red"),
    "xfail": ("xfail", "yellow"),
    "xpass": ("XPASS", "bold red"),
}


def _date(day: dt.date | None) -> str:
    return "" if day is None else f"{day:%d.%m.%Y}"


def _detail(step: StepResult) -> Text:
    text = Text()
    if step.status == "xpass":
        text.append("passes, but is marked as a known gap: remove known_gap from the file\n", style="red")
    for line in step.differences:
        text.append(line + "\n", style="red" if step.status == "failed" else "yellow")
    if step.known_gap and step.status == "xfail":
        text.append(f"known gap: {step.known_gap}", style="dim")
    return text


def print_report(results: Sequence[StoryResult], console: Console) -> None:
    """One table per story, then the totals."""
    for r in results:
        played = (
            f"played {r.shift_years:+d} years" if not r.error or r.steps else "not played"
        ) + f", {r.seconds:.1f} s"
        table = Table(title=f"{r.story} — {r.title}", caption=f"{r.path}: {played}", title_justify="left")
        table.add_column("#", justify="right")
        table.add_column("line", justify="right")
        for col in ("on", "step", "result"):
            table.add_column(col)
        table.add_column("expected vs actual", overflow="fold")
        for s in r.steps:
            mark, style = MARKS[s.status]
            table.add_row(
                str(s.index), str(s.line), _date(s.played_on), s.title, Text(mark, style=style), _detail(s)
            )
        console.print(table)
        if r.error:
            console.print(f"[bold red]{r.story}: stopped: {r.error}[/bold red]")
    counts = totals(results)
    style = "bold red" if any(r.failed for r in results) else "bold green"
    console.print(
        f"[{style}]{len(results)} stories: {counts['passed']} steps passed, {counts['failed']} failed, "
        f"{counts['xfail']} known gaps (xfail), {counts['xpass']} known gaps that pass (XPASS), "
        f"{counts['errors']} stories stopped[/{style}]"
    )


def totals(results: Sequence[StoryResult]) -> dict[str, int]:
    out = dict.fromkeys(("passed", "failed", "xfail", "xpass"), 0)
    for r in results:
        for s in r.steps:
            out[s.status] += 1
    out["errors"] = sum(1 for r in results if r.error)
    return out


def as_json(results: Sequence[StoryResult]) -> dict[str, Any]:
    """The whole run as plain data (dates as ISO strings, in the file's dates)."""
    return {
        "passed": not any(r.failed for r in results),
        "totals": totals(results),
        "stories": [
            {
                "file": r.path,
                "story": r.story,
                "title": r.title,
                "shift_years": r.shift_years,
                "seconds": round(r.seconds, 3),
                "passed": not r.failed,
                "error": r.error,
                "identities": r.identities,
                "steps": [
                    {
                        "index": s.index,
                        "line": s.line,
                        "title": s.title,
                        "action": s.action,
                        "status": s.status,
                        "played_on": s.played_on.isoformat() if s.played_on else None,
                        "expected": s.expected,
                        "actual": s.actual,
                        "differences": s.differences,
                        "known_gap": s.known_gap,
                        "seconds": round(s.seconds, 3),
                    }
                    for s in r.steps
                ],
            }
            for r in results
        ],
    }


def junit_xml(results: Sequence[StoryResult]) -> ET.ElementTree[ET.Element]:
    """JUnit XML (the Ant/Jenkins schema that CI systems read)."""
    counts = totals(results)
    root = ET.Element(
        "testsuites",
        name="mycarenet scenarios",
        tests=str(sum(len(r.steps) + (1 if r.error else 0) for r in results)),
        failures=str(counts["failed"] + counts["xpass"]),
        errors=str(counts["errors"]),
        skipped=str(counts["xfail"]),
        time=f"{sum(r.seconds for r in results):.3f}",
    )
    for r in results:
        suite = ET.SubElement(
            root,
            "testsuite",
            name=f"{r.story} {r.title}",
            tests=str(len(r.steps) + (1 if r.error else 0)),
            failures=str(sum(1 for s in r.steps if s.failed)),
            errors=str(1 if r.error else 0),
            skipped=str(sum(1 for s in r.steps if s.status == "xfail")),
            time=f"{r.seconds:.3f}",
            file=r.path,
        )
        properties = ET.SubElement(suite, "properties")
        ET.SubElement(properties, "property", name="shift_years", value=str(r.shift_years))
        for s in r.steps:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"scenario.{r.story}",
                name=f"{s.index:02d} {s.title}",
                file=r.path,
                line=str(s.line),
                time=f"{s.seconds:.3f}",
            )
            if s.status == "failed":
                failure = ET.SubElement(case, "failure", message=s.differences[0], type="ExpectationFailed")
                failure.text = "\n".join(s.differences)
            elif s.status == "xpass":
                failure = ET.SubElement(
                    case, "failure", message="known gap passes: remove known_gap", type="XPASS"
                )
                failure.text = f"known gap: {s.known_gap}"
            elif s.status == "xfail":
                skipped = ET.SubElement(case, "skipped", type="xfail", message=s.known_gap or "")
                skipped.text = "\n".join(s.differences)
        if r.error:
            case = ET.SubElement(suite, "testcase", classname=f"scenario.{r.story}", name="setup and play")
            ET.SubElement(case, "error", message=r.error, type="StoryError").text = r.error
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(results: Sequence[StoryResult], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    junit_xml(results).write(path, encoding="utf-8", xml_declaration=True)


__all__ = ["as_json", "junit_xml", "print_report", "totals", "write_junit"]
