"""The container image's Dockerfile, checked statically (no Docker engine here): multi-stage, the locked
dependencies (`uv sync --frozen`, the same uv as ./dev), every package of the wheel copied in, a non-root
user, and the actors' commands are the project's console scripts."""

from __future__ import annotations

import re
import tomllib

from tests.deploy.deploy_support import DEPLOY, ROOT

DOCKERFILE = DEPLOY / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions():
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def test_multi_stage_build_from_the_lockfile() -> None:
    stages = _stages()
    assert len(stages) >= 2
    runs = " ".join(rest for word, rest in _instructions() if word == "RUN")
    assert "uv sync --frozen --no-dev --no-editable" in runs
    uv_version = re.search(r"^UV_VERSION=(\S+)", (ROOT / "dev").read_text(), re.M)
    assert uv_version
    assert f'"uv=={uv_version.group(1)}"' in runs, "the image uses the uv that ./dev pins"


def test_every_package_of_the_wheel_is_copied_and_exists() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    copies = [rest.split() for word, rest in _instructions() if word == "COPY" and "--from" not in rest]
    sources = {source.rstrip("/") for parts in copies for source in parts[:-1]}
    assert set(packages) <= sources
    for source in sources:
        assert (ROOT / source).exists(), source
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for source in sources:
        assert f"!{source}" in ignore or f"!{source}/" in ignore, f"{source} excluded from the build context"


def test_runtime_stage_is_non_root_and_its_commands_are_the_actors() -> None:
    final = _stages()[-1]
    users = [rest for word, rest in final if word == "USER"]
    assert users
    assert users[-1].split(":")[0] not in ("0", "root")
    assert not any(word == "RUN" and "uv" in rest for word, rest in final), "no build tool in the runtime"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for command in ("mycarenet-ehealth", "mycarenet-hub", "mycarenet-oa"):
        assert command in scripts
    cmd = [rest for word, rest in final if word == "CMD"][-1]
    assert any(command in cmd for command in ("mycarenet-ehealth", "mycarenet-hub", "mycarenet-oa"))
