"""The local cluster's plan (``mycarenet-cluster up``): what each process is told by its environment."""

from __future__ import annotations

import stat
from pathlib import Path

from mycarenet_cluster.supervisor import ClusterConfig, plan

from ehealth.settings import parse_targets
from mycarenet_core.telemetry import KEY_FILE_VARIABLE, patient_key_from_environment
from tests.deploy.deploy_support import INSURERS


def _env(tmp_path: Path) -> dict[str, dict[str, str]]:
    cfg = ClusterConfig(data=tmp_path, base_port=27400, insecure=True)
    return {spec.name: spec.env for spec in plan(cfg)}


def test_ehealth_and_the_hub_call_every_insurer_directly(tmp_path: Path) -> None:
    env = _env(tmp_path)
    nodes = {code: env[f"oa-{code}"]["MCN_OA_BIND"] for code in INSURERS}
    assert parse_targets(env["ehealth"]["MCN_EHEALTH_OA_TARGETS"]) == nodes
    # No proxy between the hub and an insurer: link faults are applied by the insurer itself (chaos).
    assert parse_targets(env["hub"]["MCN_HUB_OA_TARGETS"]) == nodes


def test_each_cluster_has_its_own_pseudonymisation_key_readable_by_its_owner_only(tmp_path: Path) -> None:
    """Issue 17: the patients' pseudonyms in traces are keyed by the cluster's own random key, made like its
    certificates under the data folder (0600) and given to every process; another cluster, another key."""
    keys = []
    for name in ("one", "two"):
        env = _env(tmp_path / name)
        files = {spec_env[KEY_FILE_VARIABLE] for spec_env in env.values()}
        assert len(files) == 1, files  # every process, the same file
        path = Path(files.pop())
        assert path == (tmp_path / name / "pki" / "telemetry.key").resolve()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        key = patient_key_from_environment({KEY_FILE_VARIABLE: str(path)})
        assert key is not None
        assert len(key) >= 32
        _env(tmp_path / name)  # a second start keeps the key
        assert patient_key_from_environment({KEY_FILE_VARIABLE: str(path)}) == key
        keys.append(key)
    assert keys[0] != keys[1]
