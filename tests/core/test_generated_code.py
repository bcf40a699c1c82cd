"""The generated code in mycarenet_core/gen is exactly what scripts/gen_protos.py produces from protos/."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GEN = ROOT / "mycarenet_core" / "gen"


def _files(folder: Path) -> set[str]:
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    fresh, committed = _files(out), _files(GEN)
    assert fresh == committed, f"missing: {sorted(fresh - committed)}, extra: {sorted(committed - fresh)}"
    differing = [name for name in sorted(fresh) if not filecmp.cmp(out / name, GEN / name, shallow=False)]
    assert not differing, f"regenerate with scripts/gen_protos.py: {differing}"


def test_every_proto_has_its_generated_module() -> None:
    for proto in (ROOT / "protos").rglob("*.proto"):
        if proto.is_relative_to(ROOT / "protos" / "google"):
            continue  # googleapis' error protos: Python has them from googleapis-common-protos
        stem = proto.relative_to(ROOT / "protos").with_suffix("")
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            assert (GEN / f"{stem}{suffix}").is_file(), f"{stem}{suffix}"
