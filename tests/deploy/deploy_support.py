"""Checks shared by the manifest tests: what a process of the mesh is told by its environment must be what
its settings class reads, complete, and valid."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic_settings import BaseSettings

from ehealth.settings import EhealthSettings
from hub.__main__ import HubSettings
from mycarenet_core.config import MeshSettings
from mycarenet_core.telemetry import KEY_FILE_VARIABLE
from oa_node.settings import OaSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
INSURERS = ("100", "200", "300", "400", "500", "600", "900")

# The command of each actor (pyproject [project.scripts]) and the settings it loads.
SETTINGS: dict[str, type[MeshSettings]] = {
    "mycarenet-ehealth": EhealthSettings,
    "mycarenet-hub": HubSettings,
    "mycarenet-oa": OaSettings,
}


def prefix(cls: type[BaseSettings]) -> str:
    return str(cls.model_config.get("env_prefix", ""))


def check_settings(command: str, env: dict[str, str], scratch: Path) -> MeshSettings:
    """Every MCN_* variable is a field of the actor's settings, every required field is set, mutual TLS is
    configured (never ``insecure``), and the values validate (certificate paths stand in for mounted
    files)."""
    cls = SETTINGS[command]
    pre = prefix(cls)
    # The pseudonymisation key's file is read by the telemetry of every process (mycarenet_core.telemetry),
    # not by the actor's settings.
    mcn = {k: v for k, v in env.items() if k.startswith("MCN_") and k != KEY_FILE_VARIABLE}
    unknown = sorted(k for k in mcn if not k.startswith(pre) or k[len(pre) :].lower() not in cls.model_fields)
    assert not unknown, f"{command}: not settings of {cls.__name__}: {unknown}"
    values = {k[len(pre) :].lower(): v for k, v in mcn.items()}
    required = {name for name, field in cls.model_fields.items() if field.is_required()}
    assert required <= set(values), f"{command}: required settings missing: {sorted(required - set(values))}"
    for name in ("tls_ca", "tls_cert", "tls_key", "database_url", "bind", "health_bind"):
        assert name in values, f"{command}: {pre}{name.upper()} is not set"
    assert values.get("insecure", "false").lower() in ("false", "0"), f"{command}: insecure"
    scratch.mkdir(parents=True, exist_ok=True)
    for name in ("tls_ca", "tls_cert", "tls_key"):
        stand_in = scratch / Path(values[name]).name
        stand_in.write_text("PEM")
        values[name] = str(stand_in)
    settings = cls(**values)  # type: ignore[arg-type]
    assert settings.database_url.startswith("postgresql://"), settings.database_url
    return settings


def interpolate(text: str) -> str:
    """Compose's ``${NAME:-default}`` / ``${NAME}`` with nothing set in the environment."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m.group(1) or "set", text)


def port_of(bind: str) -> int:
    return int(bind.rsplit(":", 1)[1])
