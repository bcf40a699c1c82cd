"""Issue 17: the patients' pseudonyms in traces (``mycarenet.patient``) are keyed by each cluster's own
random key; no default key exists anywhere in the source; a process that exports traces without a key
refuses to start, one that exports none (or only calls) does not need one."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mycarenet_core import telemetry
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_service_pb2

ROOT = Path(__file__).resolve().parents[2]
NISS = "85073003328"
SOURCES = ("mycarenet_core", "ehealth", "hub", "oa_node", "clients", "deploy", "scripts", "benchmarks")


def test_no_default_key_in_the_source() -> None:
    assert inspect.signature(telemetry.pseudonymise).parameters["key"].default is inspect.Parameter.empty
    assert not hasattr(telemetry, "_DEFAULT_KEY")
    # No key literal anywhere in the project's Python: neither the old default's text nor a string or
    # bytes given to a name that says it is the telemetry / patient / pseudonymisation key.
    literal = re.compile(
        r"pseudonymi[sz]ation-key|\b\w*(TELEMETRY|PATIENT|PSEUDONYM)\w*KEY\w*\s*(:[^=\n]+)?=\s*b?[\"']", re.I
    )
    found = []
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*.py"):
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if literal.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, found
    # Nor in the deployment files: the key comes from a Secret or the cluster's data folder.
    for path in [*(ROOT / "deploy").rglob("*.yaml"), *(ROOT / "deploy").rglob("*.env")]:
        assert not re.search(r"MCN_TELEMETRY_KEY\s*[:=]", path.read_text()), path


def test_a_key_is_needed_to_export_traces_and_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(telemetry.KEY_VARIABLE, raising=False)
    monkeypatch.delenv(telemetry.KEY_FILE_VARIABLE, raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    with pytest.raises(telemetry.MissingPatientKey, match="no pseudonymisation key"):
        telemetry.setup("hub", span_exporters=[InMemorySpanExporter()])
    with pytest.raises(telemetry.MissingPatientKey, match="fewer than 32 bytes"):
        telemetry.setup("hub", span_exporters=[InMemorySpanExporter()], patient_key=b"short")
    # Metrics only, or a client (its spans never name a patient): no key needed, and no pseudonym made.
    for tel in (
        telemetry.setup("hub"),
        telemetry.setup("cli", span_exporters=[InMemorySpanExporter()], server=False),
    ):
        assert tel.patient_key is None
        tel.shutdown()
    request = dmg_service_pb2.ConsultDmgRequest(requester_reference="r")
    request.patient.niss = NISS
    assert "mycarenet.patient" not in telemetry.request_attributes(request, None)
    key = bytes.fromhex(telemetry.new_patient_key())
    assert telemetry.request_attributes(request, key)["mycarenet.patient"] == telemetry.pseudonymise(
        NISS, key
    )
    # A huge requester reference (refused by the call's limits, after its span began) is cut in the span.
    huge = dmg_service_pb2.ConsultDmgRequest(requester_reference="x" * 1_000_000)
    assert telemetry.request_attributes(huge, None)["mycarenet.requester_reference"] == "x" * 200


def test_the_key_comes_from_its_file_or_variable(tmp_path: Path) -> None:
    key = telemetry.new_patient_key()
    path = tmp_path / "telemetry.key"
    path.write_text(key + "\n")
    assert telemetry.patient_key_from_environment({telemetry.KEY_FILE_VARIABLE: str(path)}) == bytes.fromhex(
        key
    )
    assert telemetry.patient_key_from_environment({telemetry.KEY_VARIABLE: key}) == bytes.fromhex(key)
    assert telemetry.patient_key_from_environment({}) is None
    assert telemetry.new_patient_key() != key
    with pytest.raises(telemetry.MissingPatientKey, match="hexadecimal"):
        telemetry.patient_key_from_environment({telemetry.KEY_VARIABLE: "not a key"})
    with pytest.raises(telemetry.MissingPatientKey, match="No such file"):
        telemetry.patient_key_from_environment({telemetry.KEY_FILE_VARIABLE: str(tmp_path / "missing")})


def test_a_server_exporting_traces_without_a_key_refuses_to_start(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        "MCN_HUB_INSECURE": "true",
        "MCN_HUB_EHEALTH_TARGET": "127.0.0.1:9",
        "MCN_HUB_OA_TARGETS": "100=127.0.0.1:9",
        "MCN_HUB_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/hub.db",
    }
    done = subprocess.run(
        [sys.executable, "-m", "hub"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "hub cannot start" in done.stderr, done.stderr[-2000:]
    assert "no pseudonymisation key" in done.stderr
