"""Configuration from the environment (12-factor), validated at start.

Each process subclasses :class:`MeshSettings` with its own prefix. :func:`load` fails fast with a readable
message naming every bad variable, instead of a stack trace half-way through start-up.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from pathlib import Path
from typing import TypeVar

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

S = TypeVar("S", bound="MeshSettings")


class MeshSettings(BaseSettings):
    """Settings every process has. Variables are read with the subclass's prefix (e.g. ``MCN_HUB_BIND``)."""

    model_config = SettingsConfigDict(env_prefix="MCN_", extra="ignore", frozen=True)

    bind: str = Field("127.0.0.1:0", description="host:port to listen on; port 0 picks a free port")
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    grace_seconds: float = Field(5.0, ge=0, le=120, description="graceful shutdown period")
    sandbox_date: dt.date | None = Field(None, description="run the mesh as if today were this date")
    sandbox_offset_seconds: float | None = Field(
        None,
        ge=-3.2e9,
        le=3.2e9,
        description="the sandbox's test clock: mesh instant minus real instant (wins over sandbox_date)",
    )
    insecure: bool = Field(False, description="development only: plaintext gRPC inside the mesh")
    tls_ca: Path | None = Field(None, description="PEM of the mesh CA (mutual TLS)")
    tls_cert: Path | None = Field(None, description="PEM certificate of this process")
    tls_key: Path | None = Field(None, description="PEM private key of this process")
    health_bind: str | None = Field(
        None, description="host:port of a plaintext listener serving only gRPC health (Kubernetes probes)"
    )
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="serve Prometheus metrics on 127.0.0.1:<port>/metrics"
    )

    @model_validator(mode="after")
    def _tls_or_insecure(self) -> MeshSettings:
        tls = (self.tls_ca, self.tls_cert, self.tls_key)
        if any(tls) and not all(tls):
            raise ValueError("tls_ca, tls_cert and tls_key go together")
        if not all(tls) and not self.insecure:
            raise ValueError("set tls_ca/tls_cert/tls_key for mutual TLS, or insecure=true for development")
        for path in (p for p in tls if p is not None):
            if not path.is_file():
                raise ValueError(f"{path} does not exist")
        return self


def load(cls: type[S], **overrides: object) -> S:
    """Read and validate settings; print what is wrong and exit 2 when they are invalid."""
    try:
        return cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        prefix = cls.model_config.get("env_prefix", "")
        lines = [f"invalid configuration for {cls.__name__}:"]
        for item in error.errors():
            name = ".".join(str(p) for p in item["loc"])
            var = f"{prefix}{name}".upper() if name else "(settings)"
            lines.append(f"  {var}: {item['msg']}")
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
