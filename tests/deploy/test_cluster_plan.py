"""The local cluster's plan (``mycarenet-cluster up``): what each process is told by its environment."""

from __future__ import annotations

from pathlib import Path

from mycarenet_cluster.supervisor import ClusterConfig, fault_proxy_ports, plan

from ehealth.settings import parse_targets
from tests.deploy.deploy_support import INSURERS


def _env(tmp_path: Path, *, fault_proxies: bool) -> dict[str, dict[str, str]]:
    cfg = ClusterConfig(data=tmp_path, base_port=27400, insecure=True, fault_proxies=fault_proxies)
    return {spec.name: spec.env for spec in plan(cfg)}


def test_ehealth_follows_every_insurer_directly_even_behind_fault_proxies(tmp_path: Path) -> None:
    env = _env(tmp_path, fault_proxies=True)
    nodes = {code: env[f"oa-{code}"]["MCN_OA_BIND"] for code in INSURERS}
    assert parse_targets(env["ehealth"]["MCN_EHEALTH_OA_TARGETS"]) == nodes
    # The hub alone goes through the fault proxies.
    proxies = fault_proxy_ports(ClusterConfig(data=tmp_path, base_port=27400))
    assert parse_targets(env["hub"]["MCN_HUB_OA_TARGETS"]) == {
        code: f"127.0.0.1:{port}" for code, port in proxies.items()
    }


def test_without_fault_proxies_ehealth_and_the_hub_name_the_same_insurers(tmp_path: Path) -> None:
    env = _env(tmp_path, fault_proxies=False)
    assert parse_targets(env["ehealth"]["MCN_EHEALTH_OA_TARGETS"]) == parse_targets(
        env["hub"]["MCN_HUB_OA_TARGETS"]
    )
