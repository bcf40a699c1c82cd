"""Every command of the three command-line tools prints its help (a help text is rich markup: a stray
``[/...]`` in it made ``mycarenet-bench run --help`` crash with a MarkupError)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer
from mycarenet_bench.cli import app as bench_app
from mycarenet_cluster.cli import app as cluster_app
from mycarenet_sdk.cli import app as sdk_app
from typer.testing import CliRunner

APPS = {"mycarenet": sdk_app, "mycarenet-cluster": cluster_app, "mycarenet-bench": bench_app}


def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, command in getattr(group, "commands", {}).items():
        yield from _commands(command, (*path, name))


CASES = [(tool, path) for tool, app in APPS.items() for path in _commands(typer.main.get_command(app))]


def test_every_tool_has_commands() -> None:
    assert {tool for tool, path in CASES if path} == set(APPS)
    assert ("mycarenet-bench", ("run",)) in CASES


@pytest.mark.parametrize(("tool", "path"), CASES, ids=[" ".join((t, *p)) for t, p in CASES])
def test_help_renders(tool: str, path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(APPS[tool], [*path, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "Usage" in result.output
