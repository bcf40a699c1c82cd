"""The local cluster's plan (``mycarenet-cluster up``): what each process is told by its environment."""

from __future__ import annotations

from pathlib import Path

from mycarenet_cluster.supervisor import ClusterConfig, plan

from ehealth.settings import parse_targets
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
